"""The block kinds left out of the property tests (`support.strategies.KNOWN_BUGS`) still fail.

Strict xfail: when a fix lands (analysis branch, issue 6 section 2) the case turns red, and the kind must
be removed from KNOWN_BUGS so the property tests draw it again.
"""

from __future__ import annotations

import pytest
from support.lossless import check_plan_lossless, random_plan
from support.strategies import KNOWN_BUGS, Arch

import graphprune as gp


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=r)) for k, r in KNOWN_BUGS.items()]
)
def test_known_bug_kind_is_still_broken(kind: str) -> None:
    arch = Arch(stem=6, blocks=((kind, 0), ("res", 0)), inputs=2, outputs=2)
    pg = gp.trace(arch.build(), arch.example())
    for seed in range(2):
        check_plan_lossless(pg, random_plan(pg, seed, 0.4, blocks=0.5))

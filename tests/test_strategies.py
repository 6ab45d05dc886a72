"""The architecture strategies shrink: a failure is reported as the smallest model that shows it."""

from __future__ import annotations

from hypothesis import find, settings
from support.strategies import BLOCKS, Arch, architectures
from torch import nn


def test_a_failure_shrinks_to_one_block_of_the_culprit_kind() -> None:
    """A stand-in bug (any GroupNorm fails) shrinks to the one-block model holding it."""
    found = find(
        architectures(),
        lambda a: any(isinstance(m, nn.GroupNorm) for m in a.build().modules()),
        settings=settings(max_examples=2000, database=None),
    )
    assert found == Arch(stem=4, blocks=(("gn", 0),), head="pool", inputs=1, outputs=1)


def test_every_kind_builds_and_runs() -> None:
    for kind in BLOCKS:
        arch = Arch(stem=5, blocks=((kind, 3), (kind, 0)), head="flatten", inputs=2, outputs=2)
        out = arch.build()(*arch.example())
        assert [tuple(t.shape) for t in out] == [(2, 5), (2, 2)], kind

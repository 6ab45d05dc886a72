from __future__ import annotations

import pytest
import torch
from torch.fx.passes.infra.pass_base import PassResult

import graphprune as gp
from graphprune.analysis.sites import SiteKind, SiteRemoval
from graphprune.models import get_model
from graphprune.passes import GraphPass, PassManager, PruneChannels, Verify

X = torch.randn(1, 3, 32, 32)


def test_verify_accepts_matching_and_rejects_differing_outputs() -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), X)
    with torch.no_grad():
        ref = pg.gm(X)
    Verify([X], ref)(pg.gm)
    with pytest.raises(gp.VerificationError, match="relative error"):
        Verify([X], ref + 1.0)(pg.gm)


def test_an_inconsistent_rewrite_is_caught_after_the_pass() -> None:
    pg = gp.trace(get_model("cifar_resnet20"), X)
    out_site = next(
        s for s in pg.depgraph.sites if s.kind == SiteKind.CONV_OUT and s.target == "layer1.0.conv1"
    )
    broken = PruneChannels([SiteRemoval(out_site, (0, 1))])  # conv out only: bn1 and conv2 still expect 16
    pm = PassManager([broken], checks=[lambda gm: Verify([X])(gm)])
    with pytest.raises(gp.VerificationError, match="after pass PruneChannels.*layer1.0.bn1"):
        pm(pg.gm)


class Corrupt(GraphPass):
    def call(self, gm: torch.fx.GraphModule) -> PassResult:
        with torch.no_grad():
            gm.linear.weight.mul_(2)
        return PassResult(gm, True)


def test_apply_verification_rejects_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import graphprune.rewrite as apply_mod

    pg = gp.trace(get_model("cifar_resnet20"), X)
    monkeypatch.setattr(apply_mod, "EliminateDeadCode", Corrupt)
    with pytest.raises(gp.VerificationError):
        gp.apply(pg, gp.PruningPlan().remove_channels("layer1.0.conv1", [0]))

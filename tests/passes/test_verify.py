from __future__ import annotations

import pytest
import torch
from torch.fx.passes.infra.pass_base import PassResult

import graphprune as gp
from graphprune.analysis.sites import SiteKind, SiteRemoval
from graphprune.models import get_model
from graphprune.passes import GraphPass, PassManager, PruneChannels, Verify
from graphprune.passes import verify as verify_module
from graphprune.passes.param_surgery import replace_tensor
from graphprune.passes.verify import mismatch
from graphprune.rewrite import masked_reference

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
        replace_tensor(gm.linear, "weight", gm.linear.weight.detach() * 2)
        return PassResult(gm, True)


class WritesInPlace(GraphPass):
    def call(self, gm: torch.fx.GraphModule) -> PassResult:
        with torch.no_grad():
            gm.linear.weight.mul_(2)
        return PassResult(gm, True)


def test_a_pass_that_writes_into_its_input_tensors_is_named() -> None:
    pg = gp.trace(get_model("cifar_resnet20"), X)
    with pytest.raises(gp.VerificationError, match="pass WritesInPlace wrote into a tensor"):
        PassManager([WritesInPlace()])(pg.gm)


def test_apply_verification_rejects_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import graphprune.rewrite as apply_mod

    pg = gp.trace(get_model("cifar_resnet20"), X)
    monkeypatch.setattr(apply_mod, "EliminateDeadCode", Corrupt)
    with pytest.raises(gp.VerificationError):
        gp.apply(pg, gp.PruningPlan().remove_channels("layer1.0.conv1", [0]))


class Fn(torch.nn.Module):
    def __init__(self, fn: object, **tensors: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.w = torch.nn.Parameter(torch.randn(4, 4))
        for k, v in tensors.items():
            self.register_buffer(k, v)

    def forward(self, x: torch.Tensor) -> object:
        return self.fn(self, x)  # type: ignore[operator]


def graph(fn: object, x: torch.Tensor = torch.randn(1, 4), **tensors: torch.Tensor) -> torch.fx.GraphModule:
    return gp.trace(Fn(fn, **tensors).eval(), x).gm


def test_a_wrong_small_part_cannot_hide_beside_a_large_one() -> None:
    x = torch.randn(2, 4)
    ref = torch.cat([1000 * x, 1e-3 * x], 1)
    wrong = torch.cat([1000 * x, 2e-3 * x], 1)  # the small half is twice what it should be
    assert mismatch(wrong, ref, 1e-5) is not None
    assert mismatch(ref + 1e-12, ref, 1e-5) is None
    gm = graph(lambda s, h: torch.cat([1000 * h, 2e-3 * h], 1), x)
    with pytest.raises(gp.VerificationError, match="relative error"):
        Verify([x], ref)(gm)


def test_a_result_right_on_the_example_only_is_caught_on_fresh_inputs() -> None:
    x = torch.randn(1, 4)
    ref = graph(lambda s, h: 2 * h @ s.w, x)
    right_here = graph(lambda s, h: 2 * h @ s.w + 0.16 * (h - s.e), x, e=x.clone())
    right_here.w, ref.w = ref.w, ref.w
    Verify([x], ref(x))(right_here)  # the old check: identical on the example
    with pytest.raises(gp.VerificationError, match="fresh"):
        Verify([x], ref)(right_here)
    Verify([x], ref)(ref)


def test_another_batch_size_is_checked_when_the_reference_takes_it() -> None:
    x = torch.randn(1, 4)
    with pytest.raises(gp.VerificationError, match="does not run on the example inputs with 1 fresh one:"):
        Verify([x], graph(lambda s, h: h.flatten(1), x))(graph(lambda s, h: h.view(1, 4), x))
    fixed = graph(lambda s, h: h.view(1, 4) * 2, x)  # the reference takes batch 1 only: fresh inputs of 1
    Verify([x], fixed)(fixed)
    with pytest.raises(gp.VerificationError, match="fresh inputs of the example batch size"):
        Verify([x], fixed)(graph(lambda s, h: h.view(1, 4) * 2 + (h - s.e), x, e=x.clone()))


@pytest.mark.parametrize(
    ("got", "want"),
    [
        ((torch.ones(2), 5), (torch.ones(2), 8)),
        ({"a": [torch.ones(2), "x"]}, {"a": [torch.ones(2), "y"]}),
        ({"a": [torch.ones(2), torch.ones(3)]}, {"a": [torch.ones(2), torch.ones(3) * 2]}),
        ((torch.ones(2),), [torch.ones(2)]),
        (torch.ones(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)),
    ],
)
def test_non_tensor_and_nested_outputs_are_compared_leaf_by_leaf(got: object, want: object) -> None:
    assert mismatch(got, want, 1e-5) is not None
    assert mismatch(want, want, 1e-5) is None


def test_a_model_returning_a_channel_count_is_checked() -> None:
    x = torch.randn(1, 4)
    with pytest.raises(gp.VerificationError, match="5 vs 8"):
        Verify([x], graph(lambda s, h: (h, 8), x))(graph(lambda s, h: (h, 5), x))


def test_float64_checking_leaves_both_models_as_they_were() -> None:
    model = get_model("cifar_resnet20").eval()
    pg = gp.trace(model, X)
    plan = gp.PruningPlan().remove_channels("layer1.0.conv1", [0, 3])
    slim = gp.apply(pg, plan)
    params = {k: (v, v.dtype, v.clone()) for k, v in slim.state_dict(keep_vars=True).items()}
    ref = masked_reference(pg, plan)
    Verify([X], ref)(slim)
    for k, v in slim.state_dict(keep_vars=True).items():
        assert v is params[k][0] and v.dtype == params[k][1] and torch.equal(v, params[k][2])
    assert all(p.dtype == torch.float32 for p in ref.parameters())


def test_a_model_that_cannot_run_in_float64_is_checked_in_its_own_dtype() -> None:
    x = torch.randn(1, 4)
    ref = graph(lambda s, h: h.float() @ s.w.float(), x)
    Verify([x], ref)(ref)
    with pytest.raises(gp.VerificationError):
        Verify([x], ref)(graph(lambda s, h: h.float() @ s.w.float() + (h - s.e), x, e=x.clone()))


def test_a_non_finite_output_fails_against_a_reference_model() -> None:
    """Against a model, shapes are propagated on the meta device; the float64 comparison rejects inf/nan."""
    x = torch.randn(1, 4)
    ref = graph(lambda s, h: h @ s.w, x)
    inf_here = graph(lambda s, h: h @ s.w + 1 / (h - s.e), x, e=x.clone())  # inf on the example only
    with pytest.raises(gp.VerificationError, match="relative error (inf|nan)"):
        Verify([x], ref)(inf_here)
    with pytest.raises(gp.VerificationError, match="relative error (inf|nan)"):  # even where both are inf
        Verify([x], inf_here)(inf_here)


@pytest.mark.parametrize("verify", [False, True])
def test_the_result_carries_no_shapes_of_the_original(verify: bool) -> None:
    pg = gp.trace(get_model("cifar_resnet20"), X)
    plan = gp.PruningPlan().remove_channels("layer1.0.conv1", [0, 3])
    slim = gp.apply(pg, plan, verify=verify)
    assert not any("gp_value" in n.meta or "gp_macs" in n.meta for n in slim.graph.nodes)
    node = next(n for n in gp.trace(slim, X).gm.graph.nodes if n.target == "layer1.0.conv1")
    assert node.meta["gp_value"].shape == (1, 14, 32, 32)  # a trace of the result records its own


def test_a_quick_match_in_float32_skips_the_float64_run(monkeypatch: pytest.MonkeyPatch) -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), X)
    plan = gp.PruningPlan().remove_channels("layer1.0.conv1", [0, 3])
    slim, ref = gp.apply(pg, plan, verify=False), masked_reference(pg, plan)

    def no_float64(gm: torch.nn.Module) -> object:
        raise AssertionError("float64 run")

    monkeypatch.setattr(verify_module, "float64", no_float64)
    Verify([X], ref)(slim)
    with pytest.raises(AssertionError, match="float64 run"):
        Verify([X], ref, quick_rtol=None)(slim)


def test_a_miss_above_the_quick_tolerance_is_decided_in_float64() -> None:
    x = torch.randn(1, 4)
    ref = graph(lambda s, h: h @ s.w, x)
    off = 3e-4  # inside float32's quick tolerance, far outside float64's
    near = graph(lambda s, h: (h @ s.w) * (1 + off), x)
    near.w = ref.w
    Verify([x], ref)(near)  # the documented quick tolerance accepts it ...
    with pytest.raises(gp.VerificationError, match="relative error"):
        Verify([x], ref, quick_rtol=None)(near)  # ... the float64 check does not
    far = graph(lambda s, h: (h @ s.w) * (1 + 10 * off), x)
    far.w = ref.w
    with pytest.raises(gp.VerificationError, match="relative error"):
        Verify([x], ref)(far)  # beyond it, float64 decides (and rejects)


def test_the_pass_manager_result_owns_its_tensors_and_the_input_is_unchanged() -> None:
    pg = gp.trace(get_model("cifar_resnet20").eval(), X)
    before = {k: v.clone() for k, v in pg.gm.state_dict().items()}
    slim = PassManager([PruneChannels([])])(pg.gm)
    theirs = {id(t) for t in list(pg.gm.parameters()) + list(pg.gm.buffers())}
    assert not any(id(t) in theirs for t in list(slim.parameters()) + list(slim.buffers()))
    with torch.no_grad():
        for p in slim.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, before[k]) for k, v in pg.gm.state_dict().items())

from __future__ import annotations

import operator

import pytest
import torch

import graphprune as gp
from graphprune.errors import PlanError
from graphprune.models import get_model
from graphprune.passes.block_gates import (
    BlockGate,
    InsertBlockGates,
    RemoveBlockGates,
    forget_marks,
    gates_of,
)


@pytest.fixture(scope="module")
def resnet20() -> gp.PrunableGraph:
    torch.manual_seed(0)
    model = get_model("cifar_resnet20").eval()
    with torch.no_grad():  # non-trivial BN statistics, so folding a mark into bn2 is really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return gp.trace(model, torch.randn(2, 3, 32, 32))


def _set_marks(gated: torch.nn.Module, value: float) -> None:
    """Make every gate output `value` whatever its input."""
    with torch.no_grad():
        for g in gates_of(gated).values():
            g.fc2.weight.zero_()
            g.fc2.bias.fill_(float(torch.logit(torch.tensor(value))) if 0 < value < 1 else 30.0)


def test_gate_outputs_one_mark_per_sample_in_unit_interval_with_gradient() -> None:
    torch.manual_seed(0)
    gate = BlockGate(8, hidden=4)
    torch.nn.init.normal_(gate.fc2.weight)
    # per-sample channel offsets, as after a ReLU: the pooled inputs differ between samples
    x = (torch.randn(5, 8, 6, 6) + 2 * torch.randn(5, 8, 1, 1)).requires_grad_()
    m = gate(x)
    assert m.shape == (5, 1, 1, 1) and gate.mark is not None and gate.mark.shape == (5,)
    assert bool(((m > 0) & (m < 1)).all())
    assert not torch.allclose(m[0], m[1])  # per sample, not per batch
    m.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())


def test_a_normalised_gate_spreads_marks_that_pooled_features_barely_separate() -> None:
    """Post-ReLU features pool to a large common mean with a small per-sample part: without the hidden
    BatchNorm every sample gets nearly the same mark, with it the per-sample part decides."""
    torch.manual_seed(0)
    plain, normed = BlockGate(8, hidden=4), BlockGate(8, hidden=4, norm=True)
    normed.load_state_dict(plain.state_dict(), strict=False)  # the same fc1 and fc2
    with torch.no_grad():
        for gate in (plain, normed):
            gate.fc2.weight.copy_(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    x = 5.0 + 0.01 * torch.randn(64, 8, 1, 1) + 0.1 * torch.randn(64, 8, 4, 4)
    std = {}
    for name, gate in (("plain", plain), ("norm", normed)):
        gate.train()
        gate(x)
        assert gate.mark is not None
        std[name] = float(gate.mark.std())
    assert isinstance(normed.norm, torch.nn.BatchNorm1d) and isinstance(plain.norm, torch.nn.Identity)
    assert std["norm"] > 10 * std["plain"] and std["norm"] > 0.05
    normed.eval()  # running statistics: one sample alone still gets its own mark
    assert normed(x[:1]).shape == (1, 1, 1, 1)


def test_normalised_gates_insert_and_remove_losslessly(resnet20: gp.PrunableGraph) -> None:
    x = torch.randn(4, 3, 32, 32)
    gated = InsertBlockGates(resnet20.blocks, norm=True)(resnet20.gm).graph_module.eval()
    assert all(isinstance(g.norm, torch.nn.BatchNorm1d) for g in gates_of(gated).values())
    _set_marks(gated, 1.0)
    restored = RemoveBlockGates()(gated).graph_module
    assert restored.state_dict().keys() == resnet20.gm.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), resnet20.gm(x), rtol=1e-6, atol=1e-6)


def test_pruned_gate_outputs_zero() -> None:
    gate = BlockGate(4)
    gate.pruned.fill_(True)
    assert gate(torch.randn(3, 4, 2, 2)).abs().sum() == 0


def test_insert_gates_on_every_block_and_original_untouched(resnet20: gp.PrunableGraph) -> None:
    gated = InsertBlockGates(resnet20.blocks).__call__(resnet20.gm).graph_module
    assert len(gates_of(gated)) == len(resnet20.blocks) == 9
    assert not hasattr(resnet20.gm, "abp_gates")
    calls = [n for n in gated.graph.nodes if n.op == "call_module" and "abp_gates" in str(n.target)]
    assert len(calls) == 9 and all(list(n.users)[0].target is operator.mul for n in calls)


def test_insertion_and_removal_are_lossless_at_mark_one(resnet20: gp.PrunableGraph) -> None:
    x = torch.randn(4, 3, 32, 32)
    gated = InsertBlockGates(resnet20.blocks)(resnet20.gm).graph_module.eval()
    _set_marks(gated, 1.0)
    restored = RemoveBlockGates()(gated).graph_module
    with torch.no_grad():
        want = resnet20.gm(x)
        torch.testing.assert_close(gated(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(restored(x), want, rtol=1e-6, atol=1e-6)
    assert restored.code == resnet20.gm.code and not hasattr(restored, "abp_gates")
    assert restored.state_dict().keys() == resnet20.gm.state_dict().keys()


def test_removal_folds_a_fixed_mark_into_the_branch_exactly(resnet20: gp.PrunableGraph) -> None:
    x = torch.randn(4, 3, 32, 32)
    gated = InsertBlockGates(resnet20.blocks)(resnet20.gm).graph_module.eval()
    _set_marks(gated, 0.3)
    marks = {b.name: 0.3 for b in resnet20.blocks}
    fixed = RemoveBlockGates(marks)(gated).graph_module
    assert not any(n.target is operator.mul for n in fixed.graph.nodes)  # folded, not multiplied
    assert fixed.code == resnet20.gm.code
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), gated(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fixed(x), resnet20.gm(x), atol=1e-3)


def test_removal_names_an_unknown_block(resnet20: gp.PrunableGraph) -> None:
    gated = InsertBlockGates(resnet20.blocks)(resnet20.gm).graph_module
    with pytest.raises(PlanError, match="layer9.9"):
        RemoveBlockGates({"layer9.9": 0.5})(gated)


def test_forget_marks_lets_a_gated_model_be_copied_after_a_training_forward(
    resnet20: gp.PrunableGraph,
) -> None:
    import copy

    gated = InsertBlockGates(resnet20.blocks)(resnet20.gm).graph_module.train()
    gated(torch.randn(2, 3, 32, 32))
    with pytest.raises(RuntimeError):
        copy.deepcopy(gated)  # the marks still hold their autograd graph
    forget_marks(gated)
    assert all(g.mark is None for g in gates_of(copy.deepcopy(gated)).values())

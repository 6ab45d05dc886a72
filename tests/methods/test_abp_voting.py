from __future__ import annotations

import torch
from support.archs import Residual, ToyNet

import graphprune as gp
from graphprune.methods.abp.budget import BlockBudget, block_shares, keep_target
from graphprune.methods.abp.regulariser import GateRegulariser
from graphprune.methods.abp.voting import calibrate, vote
from graphprune.passes.block_gates import InsertBlockGates, gates_of


def test_vote_counts_lowest_marks_and_breaks_ties_by_mean_mark() -> None:
    names = ["a", "b", "c", "d"]
    marks = torch.tensor([[0.1, 0.2, 0.9, 0.8], [0.3, 0.1, 0.9, 0.7], [0.2, 0.3, 0.9, 0.1]])
    v = vote(names, marks, k=1)
    assert v.votes == (1, 1, 0, 1)
    assert v.ranking == ("a", "b", "d", "c")  # a, b, d tie on votes; mean marks 0.2 < 0.2 (b, later) < 0.53
    assert vote(names, marks, k=2, exclude=["a"]).ranking[:2] == ("b", "d")
    assert "a" not in vote(names, marks, k=2, exclude=["a"]).ranking


def test_regulariser_pushes_marks_to_zero_or_one_and_under_budget() -> None:
    reg = GateRegulariser({"a": 0.5, "b": 0.5}, keep_target=0.5, weight=1.0, polar=1.0)
    model = torch.nn.Module()
    gates = torch.nn.Module()
    model.abp_gates = gates
    from graphprune.passes.block_gates import BlockGate

    for name in ("a", "b"):
        g = BlockGate(2, block=name)
        gates.add_module(name, g)
    gates.a.mark = torch.tensor([0.5, 0.5], requires_grad=True)
    gates.b.mark = torch.tensor([1.0, 1.0], requires_grad=True)
    t = reg.terms(model)
    assert torch.isclose(t["polar"], torch.tensor(0.125))  # (0.25 + 0) / 2
    assert torch.isclose(t["budget"], torch.tensor(0.25))  # kept 0.75 vs target 0.5
    reg(model, torch.zeros(1), torch.zeros(1)).backward()
    assert gates.a.mark.grad is not None and bool((gates.a.mark.grad > 0).all())  # lower is cheaper
    gates.a.mark = torch.tensor([0.0, 0.0])
    assert reg.terms(model)["budget"] == 0  # at budget: no push


def test_a_planted_useless_block_is_voted_first() -> None:
    """Gates trained to reproduce the ungated network under the regulariser: the block whose branch
    outputs zeros costs nothing to switch off, so its mark sinks and every sample votes for it."""
    torch.manual_seed(0)
    model = ToyNet(8, [Residual(8) for _ in range(5)], 8).eval()
    with torch.no_grad():
        model.blocks[2].body[2].weight.zero_()
        model.blocks[2].body[2].bias.zero_()
    x = torch.randn(16, 3, 8, 8)
    pg = gp.trace(model, x[:2])
    gated = InsertBlockGates(pg.blocks)(pg.gm).graph_module.eval()
    for n, p in gated.named_parameters():
        p.requires_grad_(n.startswith("abp_gates"))
    budget = BlockBudget(num_blocks=2)
    reg = GateRegulariser(block_shares(pg), keep_target(pg, budget), weight=1.0)
    opt = torch.optim.Adam([p for p in gated.parameters() if p.requires_grad], lr=0.05)
    with torch.no_grad():
        want = pg.gm(x)
    for _ in range(60):
        out = gated(x)
        loss = torch.nn.functional.mse_loss(out, want) / want.var() + reg(gated, x, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    names, marks = calibrate(gated, [x[:8], x[8:]])
    v = vote(names, marks, k=2)
    assert names == [b.name for b in pg.blocks] and marks.shape == (16, 5)
    assert v.ranking[0] == "blocks.2" and v.votes[names.index("blocks.2")] == 16
    assert len(gates_of(gated)) == 5

from __future__ import annotations

import torch

import graphprune as gp
from graphprune.methods.wgates.gates import binary_step, build_gates
from graphprune.models import get_model
from graphprune.passes.channel_gates import InsertChannelGates


def test_the_step_passes_the_gradient_straight_through_inside_the_window() -> None:
    score = torch.tensor([-2.0, -0.5, 0.0, 0.3, 0.9, 1.5], requires_grad=True)
    gate = binary_step(score, 1.0)
    assert gate.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    gate.backward(upstream)
    assert score.grad is not None
    assert score.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_weight_gates_start_open_and_learn_from_the_task_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    pg = gp.trace(get_model("cifar_resnet20").eval(), x[:1])
    gates = build_gates(pg.gm, pg.prunable_groups)
    assert set(gates) == {g.id for g in pg.prunable_groups}
    gm = InsertChannelGates(pg.prunable_groups, gates)(pg.gm).graph_module.eval()
    out = gm(x)
    with torch.no_grad():
        torch.testing.assert_close(out, pg.gm(x))  # every gate open: the model is unchanged
    out.square().mean().backward()
    grads = [p.grad for name, p in gm.named_parameters() if name.startswith("gp_gates.")]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    residual = pg.group_of("layer1.0.bn2").id
    assert len(gates[residual].encoders) >= 4  # one encoder per producer of the shared residual group


def test_the_best_scored_share_of_a_group_stays_open_when_every_score_is_negative() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    pg = gp.trace(get_model("cifar_resnet20").eval(), x)
    group = pg.group_of("layer2.0.bn1")  # 32 channels
    gate = build_gates(pg.gm, [group], min_open=0.1, init_score=-5.0)[group.id]
    weights = [pg.gm.get_submodule(t).weight for t in gate.weight_modules]
    scores = gate.scores(*weights).detach()
    assert bool((scores < 0).all())  # the step alone would close the whole group
    opened = gate(*weights)
    assert int(opened.sum()) == 4  # ceil(0.1 * 32)
    assert set(opened.nonzero().flatten().tolist()) == set(scores.topk(4).indices.tolist())
    shut = build_gates(pg.gm, [group], min_open=0.0, init_score=-5.0)[group.id]
    assert int(shut(*weights).sum()) == 0

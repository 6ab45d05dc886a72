"""The lossless oracle: make the plan's channels exactly zero at their producers, check with hooks that every
consumer really reads zeros there, then the pruned model must compute the same output."""

from __future__ import annotations

import copy
import random

import torch
from torch import nn

import graphprune as gp
from graphprune.analysis.sites import SiteKind
from graphprune.rewrite import channel_removals

PRODUCERS = (SiteKind.CONV_OUT, SiteKind.LINEAR_OUT, SiteKind.NORM, SiteKind.PARAM)


def random_plan(pg: gp.PrunableGraph, seed: int, ratio: float = 0.3, blocks: float = 0.0) -> gp.PruningPlan:
    rng = random.Random(seed)
    plan = gp.PruningPlan.for_graph(pg)
    for g in pg.prunable_groups:
        k = min(g.size - 1, max(0, round(ratio * g.size * rng.uniform(0.5, 1.5))))
        if k:
            plan.remove_channels(g.id, rng.sample(range(g.size), k))
    for b in pg.blocks:
        if rng.random() < blocks:
            plan.remove_block(b.name)
    return plan


def zero_producers(pg: gp.PrunableGraph, plan: gp.PruningPlan) -> nn.Module:
    """A copy of the traced model whose planned channels are produced as exact zeros."""
    gm = copy.deepcopy(pg.gm)
    with torch.no_grad():
        for r in channel_removals(pg, plan):
            s, idx = r.site, list(r.removed)
            if s.kind in (SiteKind.CONV_OUT, SiteKind.LINEAR_OUT):
                m = gm.get_submodule(s.target)
                if getattr(m, "transposed", False):
                    m.weight[:, idx] = 0
                else:
                    m.weight[idx] = 0
                if m.bias is not None:
                    m.bias[idx] = 0
            elif s.kind == SiteKind.NORM:
                m = gm.get_submodule(s.target)
                for name in ("weight", "bias"):
                    t = getattr(m, name, None)
                    if t is not None:
                        t[idx] = 0
                mean = getattr(m, "running_mean", None)
                if getattr(m, "weight", None) is None and mean is not None:  # no affine: stats produce it
                    mean[idx] = 0
            elif s.kind == SiteKind.PARAM:
                path, _, name = s.target.rpartition(".")
                t = getattr(gm.get_submodule(path) if path else gm, name)
                t.index_fill_(s.dim, torch.tensor(idx), 0.0)
    return gm


def consumer_leaks(
    model: nn.Module,
    pg: gp.PrunableGraph,
    plan: gp.PruningPlan,
    inputs: tuple[torch.Tensor, ...] | None = None,
) -> list[str]:
    """Consumers (conv / linear inputs) that read a non-zero value at a channel the plan removes."""
    removed = {
        r.site.target: r
        for r in channel_removals(pg, plan)
        if r.site.kind in (SiteKind.CONV_IN, SiteKind.LINEAR_IN)
    }
    leaks: list[str] = []
    hooks = []
    for name, r in removed.items():
        m = model.get_submodule(name)
        dim = -1 if isinstance(m, nn.Linear) else 1

        def hook(
            mod: nn.Module,
            inp: tuple[torch.Tensor, ...],
            name: str = name,
            idx: tuple = r.removed,
            dim: int = dim,
        ) -> None:
            vals = inp[0].index_select(dim, torch.tensor(list(idx)))
            if vals.abs().max() > 0:
                leaks.append(name)

        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(*(pg.example_inputs if inputs is None else inputs))
    finally:
        for h in hooks:
            h.remove()
    return leaks


def fresh_inputs(example: tuple[torch.Tensor, ...], seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """The example, new random values of its shape, and another batch size."""
    g = torch.Generator().manual_seed(seed)
    same = tuple(torch.randn(t.shape, generator=g) for t in example)
    other = tuple(torch.randn((t.shape[0] + 1, *t.shape[1:]), generator=g) for t in example)
    return [example, same, other]


def _leaves(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _leaves(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _leaves(o)]
    return []


def check_plan_lossless(
    pg: gp.PrunableGraph, plan: gp.PruningPlan, inputs: list[tuple[torch.Tensor, ...]] | None = None
) -> None:
    """Assert the lossless property of `plan`: producers zeroed, consumers read zeros, and the pruned model
    computes what the zeroed one does, on each input tuple of `inputs` (default: `fresh_inputs`)."""
    example = pg.example_inputs
    inputs = fresh_inputs(example) if inputs is None else inputs
    zeroed = zero_producers(pg, plan)
    for xs in inputs:
        leaks = consumer_leaks(zeroed, pg, plan, xs)
        assert leaks == [], f"analysis missed a producer: removed channels are non-zero at {leaks}"
    if plan.blocks:  # removed blocks: zero their branch output
        zeroed = gp.passes.MaskBlocks([pg.block(b) for b in plan.blocks])(zeroed).graph_module
    pg_zero = gp.trace(zeroed, example)
    plan_zero = gp.PruningPlan.from_dict({**plan.to_dict(), "arch_hash": None})
    slim = gp.apply(pg_zero, plan_zero, verify=False)
    called = {str(n.target) for n in slim.graph.nodes if n.op == "call_module"}
    for name in plan.blocks:  # a block left in place would compute the same zeros: check it is gone
        nodes = pg.block(name).nodes
        modules = [(n.name in nodes, str(n.target)) for n in pg.gm.graph.nodes if n.op == "call_module"]
        only_in_branch = {t for inside, t in modules if inside} - {t for inside, t in modules if not inside}
        assert not only_in_branch & called, f"block {name} was not removed"
    for xs in inputs:
        with torch.no_grad():
            ref = _leaves(zeroed.eval()(*xs))
            out = _leaves(slim.eval()(*xs))
        assert len(ref) == len(out), f"pruned model returns {len(out)} tensors, the zeroed one {len(ref)}"
        for i, (r, o) in enumerate(zip(ref, out, strict=True)):
            assert r.shape == o.shape, f"output {i}: shape {tuple(o.shape)}, expected {tuple(r.shape)}"
            err = float((o - r).abs().max() / r.abs().max().clamp_min(1e-12)) if r.numel() else 0.0
            assert err <= 1e-5, f"output {i} differs from the zeroed model: relative error {err:.3g}"


def check_lossless(
    model: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    seed: int,
    ratio: float = 0.3,
    blocks: float = 0.0,
) -> tuple[gp.PrunableGraph, gp.PruningPlan]:
    """Assert the lossless property for one random plan on `model`; returns the graph and the plan."""
    pg = gp.trace(model, example)
    plan = random_plan(pg, seed, ratio, blocks)
    check_plan_lossless(pg, plan)
    return pg, plan

"""Stage 2, data-free: score channels by weight L1 norm or BN scale; pick a plan meeting a FLOPs target."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from graphprune.analysis.groups import ChannelGroup
from graphprune.analysis.sites import SiteKind
from graphprune.efficiency import FlopsModel
from graphprune.errors import PlanError
from graphprune.graph import PrunableGraph
from graphprune.plan import PruningPlan

Criterion = Literal["l1", "bn"]
Scope = Literal["global", "layer"]


def _mean_over_positions(values: np.ndarray, positions: Sequence[Sequence[int]]) -> np.ndarray:
    """For each group index, the mean of `values` at its tensor positions (one numpy pass, no loop)."""
    lengths = np.fromiter(map(len, positions), dtype=np.int64, count=len(positions))
    flat = np.fromiter(itertools.chain.from_iterable(positions), dtype=np.int64, count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    return np.add.reduceat(values[flat], starts) / lengths


def _l1(pg: PrunableGraph, g: ChannelGroup) -> np.ndarray | None:
    scores = np.zeros(g.size)
    found = False
    for m in g.members:
        if m.kind not in (SiteKind.CONV_OUT, SiteKind.LINEAR_OUT):
            continue
        mod = pg.gm.get_submodule(m.site.target)
        assert isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd))
        w = mod.weight.detach()
        if isinstance(mod, nn.modules.conv._ConvNd) and mod.transposed:
            w = w.transpose(0, 1)
        rows = w.abs().reshape(w.shape[0], -1).mean(dim=1).double().numpy()
        scores += _mean_over_positions(rows, m.positions)
        found = True
    return scores if found else None


def _bn(pg: PrunableGraph, g: ChannelGroup) -> np.ndarray | None:
    scores = np.zeros(g.size)
    found = False
    for m in g.members:
        if m.kind != SiteKind.NORM:
            continue
        w = getattr(pg.gm.get_submodule(m.site.target), "weight", None)
        if not isinstance(w, torch.Tensor):
            continue
        gamma = w.detach().abs().double().numpy()
        scores += _mean_over_positions(gamma, m.positions)
        found = True
    return scores if found else None


def _global_ranking(scores: Sequence[np.ndarray], removable: Sequence[Sequence[int]]) -> np.ndarray:
    """Group k of every removable (group k, rank) candidate, in the order candidates are taken: by
    score normalised by the group's mean, then group, then rank (rank r is removable[k][r])."""
    empty = np.zeros(0, dtype=np.int64)
    norm = [
        s[np.asarray(idx, dtype=np.int64)] / (s.mean() or 1.0)
        for s, idx in zip(scores, removable, strict=True)
    ]
    group = [np.full(len(idx), k, dtype=np.int64) for k, idx in enumerate(removable)]
    rank = [np.arange(len(idx)) for idx in removable]
    key_group = np.concatenate(group or [empty])
    by_key = np.lexsort(
        (np.concatenate(rank or [empty]), key_group, np.concatenate(norm or [empty.astype(float)]))
    )
    return key_group[by_key]


def rounded_kept(size: int, kept: int, round_to: int) -> int:
    """`kept` raised to the next multiple of `round_to`, at most `size` (the whole group is always a valid
    count); unchanged when `round_to` is 1 or the group has at most `round_to` channels."""
    if round_to == 1 or size <= round_to:
        return kept
    return min(size, -(-kept // round_to) * round_to)


def give_back(
    model: FlopsModel,
    budget: float,
    scores: Mapping[str, np.ndarray],
    removed: Mapping[str, Sequence[int]],
    round_to: int = 1,
) -> dict[str, list[int]]:
    """Return whole rounding units while the plan still fits `budget`, most score per MAC first.

    The smallest removal that meets a budget can undershoot it by far: one coarse unit (half of a
    rounded group that spans every stage) closes the gap and much more. `removed[gid]` lists indices
    lowest score first; a unit given back is the highest-scoring removed indices that take the group to
    its next valid count. Stops when no unit fits."""
    out = {gid: list(idx) for gid, idx in removed.items() if len(idx)}
    flops = float(model.flops(out))
    while True:
        best: tuple[float, str, list[int], float] | None = None
        for gid, idx in out.items():
            size = len(scores[gid])
            kept = size - len(idx)
            back = rounded_kept(size, kept + 1, round_to) - kept
            trial = idx[: len(idx) - back]
            cost = model.flops({**out, gid: trial})
            if cost > budget:
                continue
            value = float(np.asarray(scores[gid])[idx[len(idx) - back :]].sum())
            key = value / max(cost - flops, 1e-9)
            if best is None or key > best[0]:
                best = (key, gid, trial, cost)
        if best is None:
            return out
        _, gid, trial, flops = best
        if trial:
            out[gid] = trial
        else:
            del out[gid]


def channel_scores(pg: PrunableGraph, criterion: Criterion = "l1") -> dict[str, np.ndarray]:
    """Importance of every index of every prunable group (higher = keep). `bn` falls back to `l1`
    for groups without a BatchNorm; groups with neither have no score and are left alone."""
    if criterion not in ("l1", "bn"):
        raise PlanError(f"unknown criterion '{criterion}' (choose l1 or bn)")
    out: dict[str, np.ndarray] = {}
    for g in pg.prunable_groups:
        s = _bn(pg, g) if criterion == "bn" else None
        if s is None:
            s = _l1(pg, g)
        if s is not None:
            out[g.id] = s
    return out


def plan_by_criterion(
    pg: PrunableGraph,
    criterion: Criterion = "l1",
    target_flops: float = 0.5,
    scope: Scope = "global",
    max_ratio: float = 0.9,
    round_to: int = 1,
    keep_whole: Collection[str] = (),
) -> PruningPlan:
    """Remove the least important channels until the model has at most `target_flops` of its MACs.

    `global` ranks all channels together (scores normalised by their group's mean); `layer` removes the
    same fraction from every group. No group loses more than `max_ratio` of its channels. With
    `round_to` > 1, every group keeps a multiple of that many channels (where it has that many), which
    suits vectorised kernels. Groups named in `keep_whole` (e.g. those whose `is_residual_stream`) keep
    every channel; the others take the whole cut.
    """
    if not 0.0 < target_flops <= 1.0:
        raise PlanError(f"target FLOPs must be a fraction in (0, 1], got {target_flops}")
    if round_to < 1:
        raise PlanError(f"round_to must be a positive integer, got {round_to}")
    if scope not in ("global", "layer"):
        raise PlanError(f"unknown scope '{scope}' (choose global or layer)")
    whole = set(keep_whole)
    unknown = sorted(whole - {g.id for g in pg.groups})
    if unknown:
        raise PlanError(f"keep_whole: no channel group '{unknown[0]}'")
    scores = {gid: s for gid, s in channel_scores(pg, criterion).items() if gid not in whole}
    model = FlopsModel(pg)
    budget = target_flops * pg.flops
    caps = {gid: min(len(s) - 1, int(math.floor(len(s) * max_ratio))) for gid, s in scores.items()}
    order = {gid: np.argsort(s, kind="stable").tolist() for gid, s in scores.items()}

    def rounded(gid: str, k: int) -> int:
        """How many to remove so that the kept count is a multiple of round_to."""
        size = len(scores[gid])
        return size - rounded_kept(size, size - k, round_to)

    def smallest(removal: Callable[[int], dict[str, list[int]]], hi: int) -> int | None:
        """The smallest n whose removal meets the budget (bisection), None if even `hi` does not."""
        if model.flops(removal(hi)) > budget:
            return None
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            if model.flops(removal(mid)) <= budget:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def out_of_reach(removal: Callable[[int], dict[str, list[int]]], hi: int) -> PlanError:
        reachable = model.flops(removal(hi)) / pg.flops
        return PlanError(
            f"target FLOPs {target_flops:.2f} is out of reach: at most {max_ratio:.0%} of each group "
            f"can go, which leaves {reachable:.2f} of the FLOPs"
        )

    if scope == "layer":
        steps = 1000

        def by_fraction(n: int) -> dict[str, list[int]]:
            r = n / steps * max_ratio
            counts = {gid: rounded(gid, min(caps[gid], int(r * len(s)))) for gid, s in scores.items()}
            return {gid: order[gid][:k] for gid, k in counts.items() if k}

        n = smallest(by_fraction, steps)
        if n is None:
            raise out_of_reach(by_fraction, steps)
        chosen = by_fraction(n)
    else:
        gids = sorted(scores)
        norm = {gid: s / (s.mean() or 1.0) for gid, s in scores.items()}

        def global_plan(
            limits: Mapping[str, int], required: bool
        ) -> tuple[dict[str, list[int]] | None, str | None]:
            """The bisected prefix of the global ranking with units given back, and the group whose
            candidate closed the gap; when the limits cannot meet the budget, an error if `required`,
            else (None, None)."""
            ranked_group = _global_ranking([scores[g] for g in gids], [order[g][: limits[g]] for g in gids])
            groups_seen, first_seen = np.unique(ranked_group, return_index=True)
            by_first = np.argsort(first_seen)  # groups in the order the ranking first reaches them
            first_order = list(
                zip(first_seen[by_first].tolist(), groups_seen[by_first].tolist(), strict=True)
            )

            def removal(n: int) -> dict[str, list[int]]:
                taken = np.bincount(ranked_group[:n], minlength=len(gids)).tolist()
                return {
                    gids[k]: order[gids[k]][: rounded(gids[k], taken[k])]
                    for first, k in first_order
                    if first < n
                }

            n = smallest(removal, len(ranked_group))
            if n is None:
                if required:
                    raise out_of_reach(removal, len(ranked_group))
                return None, None
            closing = gids[int(ranked_group[n - 1])] if n else None
            return give_back(model, budget, norm, removal(n), round_to), closing

        def kept_value(removed: Mapping[str, list[int]]) -> float:
            return sum(float(v.sum() - v[removed.get(gid, [])].sum()) for gid, v in norm.items())

        found, closing = global_plan(caps, required=True)
        assert found is not None
        chosen = found
        if round_to > 1 and closing is not None:
            # a coarse unit closed the gap: also plan without that group's cuts, keep the better plan
            other, _ = global_plan({**caps, closing: 0}, required=False)
            if other is not None and kept_value(other) > kept_value(chosen):
                chosen = other
    plan = PruningPlan.for_graph(pg)
    for gid, idx in chosen.items():
        plan.remove_channels(gid, idx)
    plan.meta.update(
        round_to=round_to,
        criterion=criterion,
        scope=scope,
        target_flops=target_flops,
        predicted_flops=model.flops(plan.channels),
        original_flops=pg.flops,
    )
    return plan

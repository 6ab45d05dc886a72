"""ABP block budget: how many (and which) ranked blocks to remove, predicted without rewriting.

Blocks move costs in steps, so a FLOPs or latency target is met by the shortest prefix of the ranking
whose predicted cost is at or below it; a target no block removal can reach is an error, not a silent
miss. FLOPs come from `FlopsModel`; latency from a fitted predictor (the Efficiency Module's
`LatencyPredictor`, anything with `predict_counts(kept, blocks) -> ms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from graphprune.efficiency import FlopsModel
from graphprune.errors import PlanError
from graphprune.graph import PrunableGraph


class LatencyOracle(Protocol):
    def predict_counts(self, kept: Mapping[str, int], blocks: Sequence[str] = ()) -> float: ...


@dataclass(frozen=True)
class BlockBudget:
    """Exactly one of: `target_flops` (ratio of the original MACs to keep), `num_blocks` (blocks to
    remove), `block_fraction` (share of the blocks to remove), `target_latency_ms` or
    `target_latency_ratio` (predicted by `latency`)."""

    target_flops: float | None = None
    num_blocks: int | None = None
    block_fraction: float | None = None
    target_latency_ms: float | None = None
    target_latency_ratio: float | None = None
    latency: LatencyOracle | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        targets = (
            self.target_flops,
            self.num_blocks,
            self.block_fraction,
            self.target_latency_ms,
            self.target_latency_ratio,
        )
        if sum(v is not None for v in targets) != 1:
            raise PlanError("ABP needs exactly one budget: FLOPs, latency, a number or a fraction of blocks")
        if self.target_flops is not None and not 0 < self.target_flops <= 1:
            raise PlanError(f"target FLOPs must be a ratio in (0, 1], got {self.target_flops}")
        if self.block_fraction is not None and not 0 <= self.block_fraction < 1:
            raise PlanError(f"block fraction must be in [0, 1), got {self.block_fraction}")
        if self.num_blocks is not None and self.num_blocks < 0:
            raise PlanError(f"number of blocks to remove must be >= 0, got {self.num_blocks}")
        if self.target_latency_ratio is not None and not 0 < self.target_latency_ratio <= 1:
            raise PlanError(f"target latency ratio must be in (0, 1], got {self.target_latency_ratio}")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise PlanError(f"target latency must be > 0 ms, got {self.target_latency_ms}")
        if self.is_latency and self.latency is None:
            raise PlanError("a latency budget needs a latency predictor")

    @property
    def is_latency(self) -> bool:
        return self.target_latency_ms is not None or self.target_latency_ratio is not None

    @property
    def is_count(self) -> bool:
        return self.num_blocks is not None or self.block_fraction is not None

    def block_count(self, n_blocks: int) -> int:
        """Blocks to remove out of `n_blocks` for a count or fraction budget."""
        if self.num_blocks is not None:
            return self.num_blocks
        return round((self.block_fraction or 0.0) * n_blocks)


@dataclass(frozen=True)
class BlockRemoval:
    """The blocks to remove, the MACs per sample predicted for the result (and its latency, if budgeted)."""

    blocks: tuple[str, ...]
    predicted_flops: int
    original_flops: int
    predicted_latency_ms: float | None = None

    @property
    def predicted_ratio(self) -> float:
        return self.predicted_flops / self.original_flops


@dataclass(frozen=True)
class _Meter:
    cost: Callable[[Sequence[str]], float]
    limit: float
    what: str


def _meter(pg: PrunableGraph, budget: BlockBudget) -> _Meter:
    """The cost of a removal and the most the budget allows (FLOPs or latency budgets)."""
    if budget.target_flops is not None:
        fm = FlopsModel(pg)
        return _Meter(lambda b: float(fm.flops({}, b)), budget.target_flops * fm.total, "FLOPs")
    oracle = budget.latency
    assert oracle is not None
    full = {g.id: g.size for g in pg.prunable_groups}
    base = oracle.predict_counts(full, [])
    limit = budget.target_latency_ms if budget.target_latency_ms is not None else 0.0
    if budget.target_latency_ratio is not None:
        limit = budget.target_latency_ratio * base
    return _Meter(lambda b: float(oracle.predict_counts(full, list(b))), limit, "predicted latency")


def removal_for_budget(pg: PrunableGraph, ranking: Sequence[str], budget: BlockBudget) -> BlockRemoval:
    """The shortest prefix of `ranking` (best candidates first) that meets `budget`."""
    fm = FlopsModel(pg)
    if budget.is_count:
        k = budget.block_count(len(pg.blocks))
        if k > len(ranking):
            raise PlanError(f"budget removes {k} blocks but only {len(ranking)} can be removed")
        chosen = tuple(ranking[:k])
        return BlockRemoval(chosen, fm.flops({}, chosen), fm.total)
    meter = _meter(pg, budget)
    for k in range(len(ranking) + 1):
        cost = meter.cost(ranking[:k])
        if cost <= meter.limit * (1 + 1e-12):
            chosen = tuple(ranking[:k])
            ms = cost if budget.is_latency else None
            return BlockRemoval(chosen, fm.flops({}, chosen), fm.total, ms)
    floor, base = meter.cost(ranking), meter.cost([])
    raise PlanError(
        f"the {meter.what} target is out of reach by removing blocks: removing all "
        f"{len(ranking)} candidates keeps {floor / base:.3f} of the {meter.what}"
    )


def meets_budget(pg: PrunableGraph, removed: Sequence[str], budget: BlockBudget) -> bool:
    """Whether removing `removed` is enough for `budget`."""
    if budget.is_count:
        return len(removed) >= budget.block_count(len(pg.blocks))
    meter = _meter(pg, budget)
    return meter.cost(removed) <= meter.limit * (1 + 1e-12)


def block_shares(pg: PrunableGraph) -> dict[str, float]:
    """Each block's share of the summed block MACs (the regulariser's weights)."""
    total = sum(b.flops for b in pg.blocks) or 1
    return {b.name: b.flops / total for b in pg.blocks}


def keep_target(pg: PrunableGraph, budget: BlockBudget) -> float:
    """The share of block MACs the budget keeps, for the regulariser (0..1).

    For a latency budget: the FLOPs share kept by the removal the budget needs when blocks go in
    graph order (a proxy; the vote decides which blocks really go).
    """
    block_total = sum(b.flops for b in pg.blocks)
    if not block_total:
        return 1.0
    if budget.target_flops is not None:
        other = pg.flops - block_total
        return min(1.0, max(0.0, (budget.target_flops * pg.flops - other) / block_total))
    n = len(pg.blocks)
    if budget.is_latency:
        removed = set(removal_for_budget(pg, [b.name for b in pg.blocks], budget).blocks)
        return sum(b.flops for b in pg.blocks if b.name not in removed) / block_total
    return 1.0 - min(budget.block_count(n), n) / n if n else 1.0


def blocks_this_step(already: int, needed: int, steps_left: int) -> int:
    """How many more blocks one progressive pruning step removes (spread evenly over the steps left)."""
    more = max(0, needed - already)
    return more if steps_left <= 1 else math.ceil(more / steps_left)

"""ABP block budget: how many (and which) ranked blocks to remove, predicted with the FLOPs model.

Blocks move FLOPs in steps, so a FLOPs target is met by the shortest prefix of the ranking whose
predicted MACs are at or below it; a target no block removal can reach is an error, not a silent miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from graphprune.efficiency import FlopsModel
from graphprune.errors import PlanError
from graphprune.graph import PrunableGraph


@dataclass(frozen=True)
class BlockBudget:
    """One of: `target_flops` (ratio of the original MACs to keep), `num_blocks` (blocks to remove) or
    `block_fraction` (share of the blocks to remove)."""

    target_flops: float | None = None
    num_blocks: int | None = None
    block_fraction: float | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.target_flops, self.num_blocks, self.block_fraction) if v is not None]
        if len(given) != 1:
            raise PlanError("ABP needs exactly one budget: target FLOPs, a number or a fraction of blocks")
        if self.target_flops is not None and not 0 < self.target_flops <= 1:
            raise PlanError(f"target FLOPs must be a ratio in (0, 1], got {self.target_flops}")
        if self.block_fraction is not None and not 0 <= self.block_fraction < 1:
            raise PlanError(f"block fraction must be in [0, 1), got {self.block_fraction}")
        if self.num_blocks is not None and self.num_blocks < 0:
            raise PlanError(f"number of blocks to remove must be >= 0, got {self.num_blocks}")

    def block_count(self, n_blocks: int) -> int:
        """Blocks to remove out of `n_blocks` for a count or fraction budget."""
        if self.num_blocks is not None:
            return self.num_blocks
        return round((self.block_fraction or 0.0) * n_blocks)


@dataclass(frozen=True)
class BlockRemoval:
    """The blocks to remove and the MACs per sample predicted for the result."""

    blocks: tuple[str, ...]
    predicted_flops: int
    original_flops: int

    @property
    def predicted_ratio(self) -> float:
        return self.predicted_flops / self.original_flops


def removal_for_budget(pg: PrunableGraph, ranking: Sequence[str], budget: BlockBudget) -> BlockRemoval:
    """The shortest prefix of `ranking` (best candidates first) that meets `budget`."""
    fm = FlopsModel(pg)
    n = len(pg.blocks)
    if budget.target_flops is None:
        k = budget.block_count(n)
        if k > len(ranking):
            raise PlanError(f"budget removes {k} blocks but only {len(ranking)} can be removed")
        chosen = tuple(ranking[:k])
        return BlockRemoval(chosen, fm.flops({}, chosen), fm.total)
    limit = budget.target_flops * fm.total
    for k in range(len(ranking) + 1):
        flops = fm.flops({}, ranking[:k])
        if flops <= limit + 1e-9:
            return BlockRemoval(tuple(ranking[:k]), flops, fm.total)
    floor = fm.flops({}, ranking)
    raise PlanError(
        f"target FLOPs {budget.target_flops:g} is out of reach by removing blocks: removing all "
        f"{len(ranking)} candidates keeps {floor / fm.total:.3f} of the FLOPs"
    )


def meets_budget(pg: PrunableGraph, removed: Sequence[str], budget: BlockBudget) -> bool:
    """Whether removing `removed` is enough for `budget`."""
    if budget.target_flops is not None:
        return FlopsModel(pg).flops({}, removed) <= budget.target_flops * pg.flops + 1e-9
    return len(removed) >= budget.block_count(len(pg.blocks))


def block_shares(pg: PrunableGraph) -> dict[str, float]:
    """Each block's share of the summed block MACs (the regulariser's weights)."""
    total = sum(b.flops for b in pg.blocks) or 1
    return {b.name: b.flops / total for b in pg.blocks}


def keep_target(pg: PrunableGraph, budget: BlockBudget) -> float:
    """The share of block MACs the budget keeps, for the regulariser (0..1)."""
    block_total = sum(b.flops for b in pg.blocks)
    if not block_total:
        return 1.0
    if budget.target_flops is not None:
        other = pg.flops - block_total
        return min(1.0, max(0.0, (budget.target_flops * pg.flops - other) / block_total))
    n = len(pg.blocks)
    k = budget.block_count(n)
    return 1.0 - min(k, n) / n if n else 1.0


def blocks_this_step(already: int, needed: int, steps_left: int) -> int:
    """How many more blocks one progressive pruning step removes (spread evenly over the steps left)."""
    more = max(0, needed - already)
    return more if steps_left <= 1 else math.ceil(more / steps_left)

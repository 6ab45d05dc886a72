"""Meet a cost budget by importance per unit of cost: a greedy knapsack over channel units.

A unit is the step of one group from its kept count to the next valid count (`counts`): going down, its
lowest-scoring kept channels; going up, its highest-scoring removed ones. A unit's value is the sum of its
channels' scores, shifted so that the network's lowest score is (almost) zero; its weight is the cost it
adds or saves, taken from `estimate` at the current plan (exact for FLOPs, whose per-channel cost changes
as the neighbouring groups change, so a unit's weight is refreshed before it is taken: lazy greedy).

Over budget, the units of least value per saved cost go until the plan fits. Then every unit that still
fits comes back, most value per cost first; one that does not fit is skipped, not the end of the pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import numpy as np

from graphprune.methods.wgates.counts import step_down, step_up

Removal = dict[str, set[int]]


class Estimator(Protocol):
    """A cost the greedy can ask about one group's move at a time (`site_flops.SiteFlops` is one)."""

    def commit(self, removed: Mapping[str, Iterable[int]]) -> float: ...
    def trial(self, gid: str, idx: Iterable[int]) -> float: ...
    def move(self, gid: str, idx: Iterable[int]) -> float: ...


class WholeEstimate:
    """An Estimator from any cost of a whole removal (group -> indices): every question costs one call."""

    def __init__(self, cost: Callable[[Mapping[str, set[int]]], float]) -> None:
        self.cost = cost
        self.removed: Removal = {}

    def commit(self, removed: Mapping[str, Iterable[int]]) -> float:
        self.removed = {gid: set(idx) for gid, idx in removed.items()}
        return self.cost(self.removed)

    def trial(self, gid: str, idx: Iterable[int]) -> float:
        return self.cost({**self.removed, gid: set(idx)})

    def move(self, gid: str, idx: Iterable[int]) -> float:
        self.removed[gid] = set(idx)
        return self.cost(self.removed)


class _Groups:
    """Per group: its channels ranked by score (highest first) and which of them are kept."""

    def __init__(
        self, removed: Mapping[str, set[int]], scores: Mapping[str, np.ndarray], floors: Mapping[str, int]
    ) -> None:
        low = min((float(s.min()) for s in scores.values() if len(s)), default=0.0)
        high = max((float(s.max()) for s in scores.values() if len(s)), default=0.0)
        tie = 1e-3 * (high - low) or 1.0  # the lowest channel is worth a little: ties go by cost
        self.value = {gid: np.asarray(s, dtype=np.float64) - low + tie for gid, s in scores.items()}
        self.rank = {gid: np.argsort(-np.asarray(s), kind="stable") for gid, s in scores.items()}
        self.removed = {gid: set(removed.get(gid, ())) for gid in scores}
        self.floors = dict(floors)

    def kept(self, gid: str) -> int:
        return len(self.rank[gid]) - len(self.removed[gid])

    def unit_down(self, gid: str, round_to: int) -> list[int]:
        """The lowest-scoring kept channels whose removal takes the group to its next count below."""
        size, k = len(self.rank[gid]), self.kept(gid)
        lower = step_down(size, k, self.floors[gid], round_to)
        if lower is None:
            return []
        kept = [int(i) for i in self.rank[gid] if int(i) not in self.removed[gid]]
        return kept[lower - k :]

    def unit_up(self, gid: str, round_to: int) -> list[int]:
        """The highest-scoring removed channels whose return takes the group to its next count above."""
        size, k = len(self.rank[gid]), self.kept(gid)
        upper = step_up(size, k, round_to)
        if upper is None:
            return []
        gone = [int(i) for i in self.rank[gid] if int(i) in self.removed[gid]]
        return gone[: upper - k]

    def worth(self, gid: str, unit: list[int]) -> float:
        return float(self.value[gid][unit].sum())


def fill(
    removed: Mapping[str, set[int]],
    scores: Mapping[str, np.ndarray],
    estimate: Estimator,
    budget: float,
    *,
    floors: Mapping[str, int],
    round_to: int = 1,
) -> Removal | None:
    """The removal nearest to `removed` whose `estimate` is <= `budget`, chosen greedily by value per
    cost (module docstring); groups not in `scores` are left as they are. `floors`: the fewest channels
    each scored group may keep (a valid count). None when even every group at its floor is over."""
    state = _Groups(removed, scores, floors)
    extra = {gid: set(idx) for gid, idx in removed.items() if gid not in scores}
    whole: Removal = {gid: set() for gid in scores}
    if estimate.commit({**extra, **whole}) <= budget:  # everything fits: no greedy needed
        return {**extra, **whole}
    now = estimate.commit({**extra, **state.removed})
    if now > budget:
        now = _shed(state, estimate, now, budget, round_to)
        if now > budget:
            return None
    _restore(state, estimate, now, budget, round_to)
    return {**extra, **{gid: set(idx) for gid, idx in state.removed.items()}}


def _shed(
    state: _Groups,
    estimate: Estimator,
    now: float,
    budget: float,
    round_to: int,
) -> float:
    """Remove units of least value per saved cost until the cost is within `budget`; the cost after."""

    def key(gid: str) -> tuple[float, list[int], float] | None:
        unit = state.unit_down(gid, round_to)
        if not unit:
            return None
        after = estimate.trial(gid, state.removed[gid] | set(unit))
        saved = now - after
        ratio = state.worth(gid, unit) / saved if saved > 0 else float("inf")
        return ratio, unit, after

    heap = [(k[0], gid) for gid in sorted(state.rank) if (k := key(gid)) is not None]
    heapq.heapify(heap)
    while now > budget and heap:
        _, gid = heapq.heappop(heap)
        fresh = key(gid)
        if fresh is None:
            continue
        ratio, unit, after = fresh
        if heap and ratio > heap[0][0]:  # savings only shrink as others go: a stale key is a lower bound
            heapq.heappush(heap, (ratio, gid))
            continue
        if ratio == float("inf"):
            break  # nothing left saves anything
        state.removed[gid] |= set(unit)
        now = estimate.move(gid, state.removed[gid])
        if (nxt := key(gid)) is not None:
            heapq.heappush(heap, (nxt[0], gid))
    return now


def _restore(
    state: _Groups,
    estimate: Estimator,
    now: float,
    budget: float,
    round_to: int,
) -> float:
    """Bring back every unit that fits, most value per added cost first, skipping those that do not."""

    def key(gid: str) -> tuple[float, list[int], float] | None:
        unit = state.unit_up(gid, round_to)
        if not unit:
            return None
        after = estimate.trial(gid, state.removed[gid] - set(unit))
        added = after - now
        ratio = state.worth(gid, unit) / added if added > 0 else float("inf")
        return ratio, unit, after

    heap = [(-k[0], gid) for gid in sorted(state.rank) if (k := key(gid)) is not None]
    heapq.heapify(heap)
    while heap:
        _, gid = heapq.heappop(heap)
        fresh = key(gid)
        if fresh is None:
            continue
        ratio, unit, after = fresh
        if heap and -ratio > heap[0][0]:  # costs only grow as others return: a stale key is an upper bound
            heapq.heappush(heap, (-ratio, gid))
            continue
        if after > budget:
            continue  # does not fit now, and costs only grow: skip the group, go on with the others
        state.removed[gid] -= set(unit)
        now = estimate.move(gid, state.removed[gid])
        if (nxt := key(gid)) is not None:
            heapq.heappush(heap, (-nxt[0], gid))
    return now

"""Meet a cost budget by importance per unit of cost: a greedy knapsack over channel units.

A unit is the step of one group from its kept count to the next valid count (`counts`): going down, its
lowest-scoring kept channels; going up, its highest-scoring removed ones. A unit's value is the sum of its
channels' scores, shifted so that the network's lowest score is (almost) zero; its weight is the cost it
adds or saves, taken from `estimate` at the current plan (exact for FLOPs, whose per-channel cost changes
as the neighbouring groups change, so a unit's weight is refreshed before it is taken: lazy greedy).

Over budget, the units of least value per saved cost go until the plan fits. Then every unit that still
fits comes back, most value per cost first; one that does not fit is skipped, not the end of the pass.

With coarse units (a rounded stream group) the unit that closes the gap can overshoot by far more than
anything left can fill. So at that step the search also goes on without that unit's group (`_FORKS`
levels deep) and keeps whichever plan keeps more value.
"""

from __future__ import annotations

import copy
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
        self.extra = {gid: set(idx) for gid, idx in removed.items() if gid not in scores}
        self.floors = dict(floors)

    def everything(self) -> Removal:
        """The removal of every group: scored ones as they stand, the others as given."""
        return {**self.extra, **{gid: set(idx) for gid, idx in self.removed.items()}}

    def kept_value(self) -> float:
        return sum(float(v.sum() - v[list(self.removed[gid])].sum()) for gid, v in self.value.items())

    def copy(self) -> _Groups:
        out = copy.copy(self)
        out.removed = {gid: set(idx) for gid, idx in self.removed.items()}
        return out

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


_FORKS = 2  # how many times the search tries going on without the group whose unit closed the gap


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
    whole = {**state.extra, **{gid: set[int]() for gid in scores}}
    if estimate.commit(whole) <= budget:  # everything fits: no greedy needed
        return whole
    found = _search(state, estimate, budget, round_to, _FORKS, frozenset())
    return found.everything() if found is not None else None


def _search(
    state: _Groups, estimate: Estimator, budget: float, round_to: int, forks: int, barred: frozenset[str]
) -> _Groups | None:
    """Shed (never from `barred` groups), then restore; where a unit closes the gap, also the search
    without its group (while `forks` last). The state of most kept value, or None if none fits."""
    now = estimate.commit(state.everything())
    fork = None
    if now > budget:
        now, fork = _shed(state, estimate, now, budget, round_to, barred, forks > 0)
        if now > budget:
            return None
    _restore(state, estimate, now, budget, round_to)
    if fork is None:
        return state
    before, gid = fork
    other = _search(before, estimate, budget, round_to, forks - 1, barred | {gid})
    return other if other is not None and other.kept_value() > state.kept_value() else state


def _shed(
    state: _Groups,
    estimate: Estimator,
    now: float,
    budget: float,
    round_to: int,
    barred: frozenset[str] = frozenset(),
    fork: bool = False,
) -> tuple[float, tuple[_Groups, str] | None]:
    """Remove units of least value per saved cost until the cost is within `budget`. The cost after,
    and (with `fork`) a copy of the state before the unit that closed the gap, with that unit's group."""

    def key(gid: str) -> tuple[float, list[int], float] | None:
        unit = state.unit_down(gid, round_to)
        if not unit:
            return None
        after = estimate.trial(gid, state.removed[gid] | set(unit))
        saved = now - after
        ratio = state.worth(gid, unit) / saved if saved > 0 else float("inf")
        return ratio, unit, after

    heap = [(k[0], gid) for gid in sorted(state.rank) if gid not in barred and (k := key(gid)) is not None]
    heapq.heapify(heap)
    before = None
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
        if fork and after <= budget:
            before = (state.copy(), gid)
        state.removed[gid] |= set(unit)
        now = estimate.move(gid, state.removed[gid])
        if (nxt := key(gid)) is not None:
            heapq.heappush(heap, (nxt[0], gid))
    return now, before


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

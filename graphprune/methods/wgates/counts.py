"""The kept-channel counts a group may take: a multiple of `round_to` (or the whole group), and no fewer
than the `max_ratio` cap allows. Rounding is L1's (`graphprune.criteria.rounded_kept`); read-off and
repair only ever move a group between these counts."""

from __future__ import annotations

import math

from graphprune.criteria import rounded_kept


def min_kept(size: int, max_ratio: float, round_to: int = 1) -> int:
    """The fewest channels a group of `size` may keep: at most `max_ratio` of it goes, at least one stays,
    rounded up to a valid count."""
    cap = min(size - 1, int(math.floor(size * max_ratio)))
    return rounded_kept(size, size - cap, round_to)


def step_up(size: int, kept: int, round_to: int = 1) -> int | None:
    """The next valid count above `kept`, or None when the group is whole."""
    return None if kept >= size else rounded_kept(size, kept + 1, round_to)


def step_down(size: int, kept: int, floor: int, round_to: int = 1) -> int | None:
    """The next valid count below `kept` and not below `floor`, or None."""
    if round_to == 1 or size <= round_to:
        lower = kept - 1
    else:
        lower = (kept - 1) // round_to * round_to
    return lower if lower >= max(floor, 1) else None


def nearest_kept(size: int, kept: int, floor: int, round_to: int = 1) -> int:
    """The valid count nearest to `kept` (the larger on a tie), not below `floor`."""
    up = rounded_kept(size, max(kept, floor), round_to)
    if up == kept:
        return up
    down = step_down(size, up, floor, round_to)
    return down if down is not None and kept - down < up - kept else up

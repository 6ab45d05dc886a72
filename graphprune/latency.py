"""Measured ONNX Runtime latency: medians, and interleaved pairs so that two models share the machine's noise.

Nothing here is asserted anywhere: the numbers go into reports as measured, with their ratio.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphprune.export import ort_session


def ort_latency(
    path: str | os.PathLike[str],
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    warmup: int = 10,
    runs: int = 50,
    threads: int = 1,
) -> dict[str, float | int]:
    """Time onnxruntime CPU inference on random input of `input_shape` (one shape per input).

    Returns median_ms, p10_ms, p90_ms over `runs` timed runs (after `warmup` untimed ones),
    with `threads` intra-op threads.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0, threads >= 1 (got {runs}, {warmup}, {threads})")
    session, feed = _prepared(path, input_shape, threads)
    times = _time_runs(session, feed, warmup, runs)
    p10, median, p90 = np.percentile(np.asarray(times), [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90), "runs": runs}


def _prepared(
    path: str | os.PathLike[str], input_shape: Sequence[int] | Sequence[Sequence[int]], threads: int
) -> tuple[Any, dict[str, np.ndarray]]:
    """An onnxruntime session for `path` and a seeded random feed of `input_shape`."""
    session = ort_session(path, threads=threads)
    shapes = _as_shapes(input_shape)
    meta = session.get_inputs()
    if len(shapes) != len(meta):
        raise ValueError(f"{path} has {len(meta)} inputs, got {len(shapes)} shapes")
    rng = np.random.default_rng(0)
    feed = {
        m.name: rng.standard_normal(shape).astype(_numpy_dtype(m.type))
        for shape, m in zip(shapes, meta, strict=True)
    }
    return session, feed


def _time_runs(session: Any, feed: dict[str, np.ndarray], warmup: int, runs: int) -> list[float]:
    """Milliseconds of each of `runs` timed runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def _as_shapes(input_shape: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """One shape, or one shape per input, as a list of tuples."""
    items: list[Any] = list(input_shape)
    if items and all(isinstance(d, (int, np.integer)) for d in items):
        return [tuple(int(d) for d in items)]
    return [tuple(int(d) for d in shape) for shape in items]


def _numpy_dtype(ort_type: str) -> np.dtype[Any]:
    """numpy dtype for an onnxruntime type string such as 'tensor(float)'."""
    names = {"float": "float32", "double": "float64", "float16": "float16"}
    inner = ort_type.removeprefix("tensor(").removesuffix(")")
    return np.dtype(names.get(inner, inner))


def paired_latency(
    baseline: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    rounds: int = 7,
    runs: int = 10,
    threads: int = 1,
) -> dict[str, float | int]:
    """Time two ONNX files in alternating rounds; medians of per-round medians and candidate / baseline,
    and `p10_ratio`: the ratio of the two files' 10th percentiles over every timed call."""
    prepared = [_prepared(path, input_shape, threads) for path in (baseline, candidate)]
    per_round: list[list[float]] = [[], []]
    every: list[list[float]] = [[], []]
    for r in range(rounds):
        for k, (session, feed) in enumerate(prepared):
            ms = _time_runs(session, feed, 5 if r == 0 else 1, runs)
            per_round[k].append(float(np.median(ms)))
            every[k] += ms
    base, cand = (float(np.median(ms)) for ms in per_round)
    base10, cand10 = (float(np.percentile(ms, 10)) for ms in every)
    return {
        "baseline_ms": base,
        "candidate_ms": cand,
        "ratio": cand / base if base else float("nan"),
        "p10_ratio": cand10 / base10 if base10 else float("nan"),
        "rounds": rounds,
        "runs": runs,
        "threads": threads,
    }


def interleaved_latency(
    paths: Mapping[str, str | os.PathLike[str]],
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    rounds: int = 7,
    runs: int = 10,
    threads: int = 1,
    warmup: int = 5,
) -> dict[str, dict[str, float | int]]:
    """Time several ONNX files in rounds, one session running at a time, the order reversed every round.

    Each round runs `runs` timed calls per file (after `warmup` untimed ones in the first round, one
    later). Returns, per name, p10_ms, p50_ms and p90_ms over all timed calls and the median of the
    per-round medians, so that every file sees the same stretches of machine noise.
    """
    if rounds < 1 or runs < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need rounds, runs, threads >= 1 and warmup >= 0 (got {rounds}, {runs}, {threads})")
    names = list(paths)
    prepared = {name: _prepared(paths[name], input_shape, threads) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    medians: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            session, feed = prepared[name]
            ms = _time_runs(session, feed, warmup if r == 0 else 1, runs)
            times[name] += ms
            medians[name].append(float(np.median(ms)))
    out: dict[str, dict[str, float | int]] = {}
    for name in names:
        p10, p50, p90 = np.percentile(np.asarray(times[name]), [10, 50, 90])
        out[name] = {
            "p10_ms": float(p10),
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "round_median_ms": float(np.median(medians[name])),
            "rounds": rounds,
            "runs": runs,
            "threads": threads,
        }
    return out

"""A latency budget for W-Gates: the fitted LatencyPredictor for training, measured latency for repair."""

from __future__ import annotations

import os
from pathlib import Path

from graphprune.efficiency.latency import LatencyPredictor, PairedTimer, build_latency_model
from graphprune.graph import PrunableGraph
from graphprune.methods.base import MethodContext
from graphprune.methods.wgates.cost import CostModel
from graphprune.plan import PruningPlan


def default_cache_dir() -> Path:
    """Where measured latency samples are kept between runs: $XDG_CACHE_HOME/graphprune/latency."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "graphprune" / "latency"


def latency_cost(ctx: MethodContext, pg: PrunableGraph, groups: list[str], scale: float = 1.0) -> CostModel:
    """Options: latency_model (a file from `graphprune latency-model`; otherwise one is fitted, reusing the
    sample cache), latency_samples (60), latency_threads (1), latency_cache (directory)."""
    opts = ctx.options
    threads = int(opts.get("latency_threads", 1))
    if opts.get("latency_model"):
        predictor = LatencyPredictor.load(pg, opts["latency_model"], threads)
    else:
        predictor = build_latency_model(
            pg,
            samples=int(opts.get("latency_samples", 60)),
            threads=threads,
            cache_dir=opts.get("latency_cache") or default_cache_dir(),
        )

    predictor.round_to = int(opts.get("round_to") or 1)  # cost the counts the read-off will keep
    # each measured cost is the original's time times a ratio timed beside it: a ratio target holds
    # however far the one absolute measurement of the original is off
    measure = PairedTimer(pg, ctx.run_dir, threads=threads, runs=60, rounds=6)  # keeps the original's ONNX
    original = measure.reference_ms
    b = ctx.budget
    target = (
        b.target_latency_ms if b.target_latency_ms is not None else (b.target_latency_ratio or 1.0) * original
    )
    sizes = {gid: pg.group(gid).size for gid in groups}

    def estimate(plan: PruningPlan) -> float:  # the predictor on the plan's kept counts, in ms
        kept = {gid: n - len(plan.channels.get(gid, ())) for gid, n in sizes.items()}
        return predictor.predict_counts(kept, list(plan.blocks))

    return CostModel("ms", target * scale, lambda keep: predictor(keep), measure, original, estimate)

"""Zoo harness: the whole pipeline (trace, 30% channel plan, apply, lossless check, ONNX export) on a model.

Used by the zoo test (`tests/test_zoo.py`) and by `benchmarks/zoo_coverage.py`, which writes docs/coverage.md.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from graphprune.costs import count_flops, count_params
from graphprune.errors import GraphpruneError, first_line
from graphprune.graph import PrunableGraph, trace
from graphprune.plan import PruningPlan
from graphprune.rewrite import apply


@dataclass(frozen=True)
class CoverageResult:
    """What happened to one model. `stage` is where it stopped ('done' on success) and `error` why."""

    model: str
    stage: str
    error: str = ""
    groups: int = 0
    prunable_groups: int = 0
    blocks: int = 0
    flops: int = 0
    pruned_flops: int = 0
    params: int = 0
    pruned_params: int = 0
    onnx_nodes: int = 0
    onnx_max_rel_error: float = 0.0
    unprunable_reasons: tuple[str, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def random_channel_plan(pg: PrunableGraph, ratio: float, seed: int = 0) -> PruningPlan:
    """Remove `ratio` of every prunable group's channels, chosen at random."""
    rng = random.Random(seed)
    plan = PruningPlan.for_graph(pg)
    for g in pg.prunable_groups:
        k = min(g.size - 1, int(ratio * g.size))
        if k:
            plan.remove_channels(g.id, rng.sample(range(g.size), k))
    return plan


def check_model(
    name: str, model: nn.Module, example: torch.Tensor, *, ratio: float = 0.3, export: bool = True
) -> CoverageResult:
    """Run the pipeline on `model`; never raises for a model-specific failure, reports it instead."""
    start = time.perf_counter()
    stage = "trace"
    partial: dict[str, object] = {}
    try:
        pg = trace(model, example)
        reasons = sorted({(g.reason or "").split(" (at ")[0] for g in pg.groups if not g.prunable})
        partial = dict(
            groups=len(pg.groups),
            prunable_groups=len(pg.prunable_groups),
            blocks=len(pg.blocks),
            flops=pg.flops,
            params=pg.params,
            unprunable_reasons=tuple(reasons),
        )
        stage = "apply"
        slim = apply(pg, random_channel_plan(pg, ratio))  # verifies against the masked original
        partial.update(pruned_flops=count_flops(slim, example), pruned_params=count_params(slim))
        if export:
            stage = "export"
            from graphprune.export import export_onnx

            with tempfile.TemporaryDirectory() as tmp:
                report = export_onnx(slim, example, Path(tmp) / f"{name}.onnx")
            partial.update(onnx_nodes=report.nodes, onnx_max_rel_error=report.max_rel_error)
        stage = "done"
        error = ""
    except GraphpruneError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a coverage table lists every failure, whatever its kind
        error = first_line(exc, with_type=True)
    return CoverageResult(name, stage, error, seconds=time.perf_counter() - start, **partial)  # type: ignore[arg-type]

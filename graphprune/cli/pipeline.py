"""The steps the commands share: check the output, load a plan, build and trace MODEL, then
apply, save, export, time and report."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from graphprune.cli.console import (
    error_text,
    mmacs,
    note,
    ratio_text,
    shape_text,
    stdout,
    step,
    table,
)
from graphprune.cli.group import version
from graphprune.cli.options import leaf_modules
from graphprune.errors import OutputError, PlanError

if TYPE_CHECKING:
    from graphprune.modelspec import ResolvedModel


def writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove a file can be written in it (before any expensive work)."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".graphprune-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return path


def writable_file(path: Path) -> Path:
    if path.is_dir():
        raise OutputError(f"output file {path} is a directory")
    writable_dir(path.parent if str(path.parent) else Path("."))
    return path


def load_plan(path: Path) -> Any:
    import graphprune as gp

    if not path.is_file():
        raise PlanError(f"plan file {path} {'is a directory' if path.is_dir() else 'not found'}")
    return gp.PruningPlan.load(str(path))


def resolve(model: str, weights: Path | None, input_shape: str | None, plan: Any = None) -> ResolvedModel:
    """Build MODEL; without --input-shape, a plan's single recorded input shape is the default."""
    from graphprune.modelspec import parse_input_shape, resolve_model

    shape = parse_input_shape(input_shape) if input_shape is not None else None
    recorded = getattr(plan, "input_shapes", None)
    if shape is None and isinstance(recorded, list) and len(recorded) == 1:
        shape = parse_input_shape(recorded[0])
    with step(f"Building {model}"):
        return resolve_model(model, weights=str(weights) if weights is not None else None, input_shape=shape)


def trace(rm: ResolvedModel) -> Any:
    import graphprune as gp

    with step(f"Tracing {rm.name} on input {shape_text(rm.input_shape)}"):
        return gp.trace(rm.model, rm.example_inputs, leaf_modules=leaf_modules())


def opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def export_dict(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(report.to_dict())
    if "path" in data:
        data["path"] = str(data["path"]) if data["path"] is not None else None
    return data


def run_pipeline(
    rm: ResolvedModel,
    pg: Any,
    plan: Any,
    out_dir: Path,
    *,
    export: bool,
    plan_source: dict[str, Any],
) -> dict[str, Any]:
    """Apply `plan`, write model.pt, plan.json, model.onnx, report.json into `out_dir`; return the report."""
    import graphprune as gp
    from graphprune.fileio import write_text

    with step("Applying the plan"):
        slim = gp.apply(pg, plan)
    with step(f"Saving {out_dir / 'model.pt'} and plan.json"):
        gp.checkpoint.save_pruned(out_dir, slim, plan, pg)
    with step("Counting pruned FLOPs and parameters"):
        pruned_flops = int(gp.count_flops(slim, rm.example_inputs))
        pruned_params = int(gp.count_params(slim))

    original_export: dict[str, Any] | None = None
    pruned_export: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    if export:
        from graphprune.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="graphprune-") as tmp:
            original_onnx = Path(tmp) / "original.onnx"
            with step("Exporting the original model to ONNX (for comparison)"):
                original_export = export_dict(export_onnx(rm.model, rm.example_inputs, str(original_onnx)))
                original_export["path"] = None
            with step(f"Exporting the pruned model to {out_dir / 'model.onnx'}"):
                pruned_export = export_dict(export_onnx(slim, rm.example_inputs, str(out_dir / "model.onnx")))
            from graphprune.latency import paired_latency

            with step("Timing both ONNX files with onnxruntime (1 thread, interleaved rounds)"):
                timing = paired_latency(original_onnx, out_dir / "model.onnx", rm.input_shape)
    elif (out_dir / "model.onnx").is_file():
        (out_dir / "model.onnx").unlink()
        note(f"removed {out_dir / 'model.onnx'} from an earlier run: it would not match model.pt")

    original_nodes = original_export.get("nodes") if original_export else None
    pruned_nodes = pruned_export.get("nodes") if pruned_export else None
    report: dict[str, Any] = {
        "graphprune_version": version(),
        "model": rm.name,
        "input_shape": list(rm.input_shape),
        "plan": plan_source,
        "original": {"flops": int(pg.flops), "params": int(pg.params), "onnx_nodes": original_nodes},
        "pruned": {"flops": pruned_flops, "params": pruned_params, "onnx_nodes": pruned_nodes},
        "ratios": {
            "flops": pruned_flops / pg.flops if pg.flops else None,
            "params": pruned_params / pg.params if pg.params else None,
            "onnx_nodes": pruned_nodes / original_nodes
            if pruned_nodes is not None and original_nodes
            else None,
        },
        "files": {
            "state_dict": "model.pt",
            "plan": "plan.json",
            "onnx": "model.onnx" if export else None,
            "report": "report.json",
        },
        "export": pruned_export,
        "original_export": original_export,
        "onnxruntime_latency": timing,
    }
    write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def print_before_after(report: dict[str, Any], out_dir: Path) -> None:
    before, after = report["original"], report["pruned"]
    exp_before = report["original_export"] or {}
    exp_after = report["export"] or {}
    summary = table(f"{escape(report['model'])}: original vs pruned")
    summary.add_column("metric")
    summary.add_column("original", justify="right")
    summary.add_column("pruned", justify="right")
    summary.add_column("pruned / original", justify="right")
    metrics: list[tuple[str, str, Callable[[Any], str]]] = [
        ("FLOPs (MMACs)", "flops", mmacs),
        ("params", "params", lambda v: f"{v:,}"),
    ]
    if report["export"] is not None:
        metrics.append(("ONNX nodes", "onnx_nodes", str))
    for label, key, fmt in metrics:
        summary.add_row(label, fmt(before[key]), fmt(after[key]), ratio_text(after[key], before[key]))
    if report["export"] is not None:
        summary.add_row(
            "ONNX vs PyTorch max abs error",
            error_text(exp_before.get("max_abs_error")),
            error_text(exp_after.get("max_abs_error")),
            "-",
        )
    timing = report.get("onnxruntime_latency")
    if timing:
        summary.add_row(
            "ONNX Runtime latency (ms, median, 1 thread)",
            f"{timing['baseline_ms']:.3f}",
            f"{timing['candidate_ms']:.3f}",
            f"{timing['ratio']:.3f}",
        )
    out = stdout()
    out.print(summary)
    files = [name for name in report["files"].values() if name is not None]
    out.print(f"wrote {escape(str(out_dir))}/{{{', '.join(files)}}}")

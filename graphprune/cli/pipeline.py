"""The steps the commands share: check the output, load a plan, build and trace MODEL, then
apply, save, export, time and report."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
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
from graphprune.cli.options import leaf_modules, prune_layernorm
from graphprune.errors import PlanError, WeightsError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from graphprune.modelspec import ResolvedModel

ONNX_FILE = "model.onnx"
REPORT_FILE = "report.json"


def output_files() -> tuple[str, ...]:
    """The output set of `prune`/`apply`/`demo` in publishing order (the report, written last, marks it done).

    A name of the set that a run does not write (model.onnx with --no-export) is removed from DIR.
    """
    from graphprune.checkpoint import MODEL_FILE, PLAN_FILE

    return (MODEL_FILE, PLAN_FILE, ONNX_FILE, ONNX_FILE + ".data", REPORT_FILE)


def load_plan(path: Path) -> Any:
    import graphprune as gp

    if not path.is_file():
        raise PlanError(f"plan file {path} {'is a directory' if path.is_dir() else 'not found'}")
    return gp.PruningPlan.load(str(path))


def resolve(model: str, weights: Path | None, input_shape: str | None, plan: Any = None) -> ResolvedModel:
    """Build MODEL and load --weights into it; without --input-shape, a plan's single recorded input shape
    is the default."""
    from graphprune.modelspec import parse_input_shape, resolve_model

    shape = parse_input_shape(input_shape) if input_shape is not None else None
    recorded = getattr(plan, "input_shapes", None)
    if shape is None and isinstance(recorded, list) and len(recorded) == 1:
        shape = parse_input_shape(recorded[0])
    with step(f"Building {model}"):
        return resolve_model(model, weights=str(weights) if weights is not None else None, input_shape=shape)


@dataclass(frozen=True)
class PrunedWeights:
    """A --weights file that does not fit MODEL: to be loaded into MODEL pruned by the plan."""

    path: Path
    state: dict[str, Tensor]
    unfit_original: str
    """Why it does not fit MODEL itself (shown if it does not fit the pruned model either)."""


def resolve_for_plan(
    model: str, weights: Path | None, input_shape: str | None, plan: Any
) -> tuple[ResolvedModel, PrunedWeights | None]:
    """Build MODEL for `plan`. --weights may hold MODEL's weights (loaded now) or the pruned model's, as
    `prune` writes them: those are returned, for `load_pruned_weights` once the plan is applied."""
    from graphprune.weights import load_state_dict_file, load_weights

    if weights is None:
        return resolve(model, None, input_shape, plan), None
    state = load_state_dict_file(weights)
    rm = resolve(model, None, input_shape, plan)
    try:
        load_weights(rm.model, state)
    except WeightsError as exc:
        return rm, PrunedWeights(weights, state, _detail(exc))
    return rm, None


def load_pruned_weights(slim: nn.Module, pruned: PrunedWeights, rm: ResolvedModel) -> None:
    """Load `pruned` into `slim` (MODEL after the plan); a one-line error if it fits neither model."""
    from graphprune.weights import load_weights

    try:
        load_weights(slim, pruned.state)
    except WeightsError as exc:
        raise WeightsError(
            f"weights file {pruned.path} fits neither {rm.name} ({pruned.unfit_original}) nor {rm.name} "
            f"pruned by the plan ({_detail(exc)})"
        ) from None


def _detail(exc: WeightsError) -> str:
    """What does not fit, without the "weights file X does not fit Net: " lead."""
    return str(exc).split(": ", 1)[-1]


def trace(rm: ResolvedModel) -> Any:
    import graphprune as gp

    with step(f"Tracing {rm.name} on input {shape_text(rm.input_shape)}"):
        return gp.trace(
            rm.model, rm.example_inputs, leaf_modules=leaf_modules(), prune_layernorm=prune_layernorm()
        )


def opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def export_dict(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(report.to_dict())
    if "path" in data:
        data["path"] = str(data["path"]) if data["path"] is not None else None
    return data


def export_onnx_file(
    module: nn.Module, rm: ResolvedModel, path: Path, *, label: str, static_batch: bool
) -> dict[str, Any]:
    """export_onnx with the command's leaf modules; a skipped or failed onnxsim pass is shown as a note."""
    from graphprune.export import export_onnx

    report = export_onnx(
        module,
        rm.example_inputs,
        path,
        dynamic_batch=not static_batch,
        label=label,
        leaf_modules=leaf_modules(),
    )
    if report.simplify_error is not None:
        note(f"{label} is not simplified (onnxsim result not used): {report.simplify_error}")
    return export_dict(report)


def run_pipeline(
    rm: ResolvedModel,
    pg: Any,
    plan: Any,
    out_dir: Path,
    *,
    export: bool,
    plan_source: dict[str, Any],
    static_batch: bool = False,
    pruned_weights: PrunedWeights | None = None,
) -> dict[str, Any]:
    """Apply `plan`; write the output set (`output_files`) into `out_dir`; return the report.

    The files are written into a staging directory and moved into `out_dir` together at the end: a
    failure leaves an earlier output set there as it was. `pruned_weights` are loaded into the pruned
    model once the plan is applied.
    """
    import graphprune as gp
    from graphprune.checkpoint import MODEL_FILE
    from graphprune.fileio import staged_output, write_text

    with step("Applying the plan"):
        slim = gp.apply(pg, plan)
    if pruned_weights is not None:
        load_pruned_weights(slim, pruned_weights, rm)
    with step("Counting pruned FLOPs and parameters"):
        pruned_flops = int(gp.count_flops(slim, rm.example_inputs, leaf_modules=leaf_modules()))
        pruned_params = int(gp.count_params(slim))

    with staged_output(out_dir, output_files()) as stage:
        with step(f"Saving {out_dir / MODEL_FILE} and plan.json"):
            gp.checkpoint.save_pruned(stage, slim, plan, pg)
        original_export: dict[str, Any] | None = None
        pruned_export: dict[str, Any] | None = None
        timing: dict[str, Any] | None = None
        if export:
            with tempfile.TemporaryDirectory(prefix="graphprune-") as tmp:
                original_onnx = Path(tmp) / "original.onnx"
                with step("Exporting the original model to ONNX (for comparison)"):
                    original_export = export_onnx_file(
                        rm.model,
                        rm,
                        original_onnx,
                        label=f"the ONNX export of the original {rm.name}",
                        static_batch=static_batch,
                    )
                    original_export["path"] = None
                with step(f"Exporting the pruned model to {out_dir / ONNX_FILE}"):
                    pruned_export = export_onnx_file(
                        slim, rm, stage / ONNX_FILE, label=str(out_dir / ONNX_FILE), static_batch=static_batch
                    )
                    pruned_export["path"] = str(out_dir / ONNX_FILE)
                from graphprune.latency import paired_latency

                with step("Timing both ONNX files with onnxruntime (1 thread, interleaved rounds)"):
                    timing = paired_latency(original_onnx, stage / ONNX_FILE, rm.input_shape)
        elif (out_dir / ONNX_FILE).is_file():
            note(f"removing {out_dir / ONNX_FILE} from an earlier run: it would not match {MODEL_FILE}")
        report = _report(
            rm, pg, plan, plan_source, pruned_flops, pruned_params, original_export, pruned_export, timing
        )
        write_text(stage / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report


def _report(
    rm: ResolvedModel,
    pg: Any,
    plan: Any,
    plan_source: dict[str, Any],
    pruned_flops: int,
    pruned_params: int,
    original_export: dict[str, Any] | None,
    pruned_export: dict[str, Any] | None,
    timing: dict[str, Any] | None,
) -> dict[str, Any]:
    """The report.json of one run."""
    from graphprune.checkpoint import MODEL_FILE
    from graphprune.graph import not_lossless_note

    original_nodes = original_export.get("nodes") if original_export else None
    pruned_nodes = pruned_export.get("nodes") if pruned_export else None
    lossy = pg.not_lossless_groups(plan)
    report: dict[str, Any] = {
        "graphprune_version": version(),
        "model": rm.name,
        "input_shape": list(rm.input_shape),
        "plan": plan_source,
        "lossless": not lossy,
        "not_lossless_groups": lossy,
        "lossless_note": not_lossless_note(lossy),
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
            "state_dict": MODEL_FILE,
            "plan": "plan.json",
            "onnx": ONNX_FILE if pruned_export else None,
            "onnx_data": pruned_export.get("external_data") if pruned_export else None,
            "report": REPORT_FILE,
        },
        "export": pruned_export,
        "original_export": original_export,
        "onnxruntime_latency": timing,
    }
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
    print_lossless_note(report)
    files = [name for name in report["files"].values() if name is not None]
    out.print(f"wrote {escape(str(out_dir))}/{{{', '.join(files)}}}")


def print_lossless_note(report: dict[str, Any]) -> None:
    """Say under the summary when the pruning is not lossless (LayerNorms pruned with --prune-layernorm)."""
    if report.get("lossless_note"):
        stdout().print(f"[bold yellow]{escape(report['lossless_note'])}[/]")

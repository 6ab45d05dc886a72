"""`graphprune eval`: top-1, top-5 and loss of MODEL or a run directory on --data, and ORT latency."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from graphprune.cli.console import stdout, step, table
from graphprune.cli.options import MODEL_HELP, model_options
from graphprune.cli.pipeline import load_plan, resolve, trace
from graphprune.cli.training import data_loading, data_options

ONNX_TOLERANCE_PT = 0.1


@click.command(
    name="eval",
    short_help="Evaluate MODEL or a run directory on a dataset (accuracy, loss, latency).",
    epilog="""\b
Examples:
  graphprune eval runs/r20 --data cifar10:../shared/data/cifar10-jpeg.zip
  graphprune eval graphprune:cifar_resnet20 --weights r20.th --data cifar10: --onnx r20.onnx
""",
    help="Print top-1, top-5 and loss of MODEL (pruned by --plan) or of a run directory written by "
    "prune/finetune (its model.json, plan.json and model.safetensors), and onnxruntime latency p50/p90. "
    "With --onnx the accuracy is also computed by onnxruntime and must agree with PyTorch within "
    f"{ONNX_TOLERANCE_PT} points. --data defaults to the run's dataset.\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--plan", "plan_path", type=click.Path(path_type=Path), metavar="PLAN.json", help="Prune first."
)
@click.option(
    "--onnx", "onnx_path", type=click.Path(path_type=Path), metavar="FILE.onnx", help="Also run this."
)
@data_options
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
def eval_command(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    plan_path: Path | None,
    onnx_path: Path | None,
    data_spec: str | None,
    image_size: int | None,
    batch_size: int,
    split: str,
) -> None:
    import graphprune as gp
    from graphprune.checkpoint import is_run_dir, load_run
    from graphprune.errors import VerificationError
    from graphprune.export import export_onnx
    from graphprune.latency import ort_latency
    from graphprune.methods.pipeline import num_outputs
    from graphprune.train import evaluate, load_data
    from graphprune.train.data import DataError
    from graphprune.train.evaluate import evaluate_onnx

    run_onnx: Path | None = None
    if is_run_dir(model):
        with step(f"Loading the run {model}"):
            loaded = load_run(model)
        net: Any = loaded.model
        name, example, shape = loaded.info.model, loaded.example_inputs, loaded.info.input_shape
        data_spec = data_spec or loaded.info.data
        run_onnx = Path(model) / "model.onnx" if (Path(model) / "model.onnx").is_file() else None
    else:
        plan = load_plan(plan_path) if plan_path is not None else None
        rm = resolve(model, weights, input_shape, plan)
        net = gp.apply(trace(rm), plan) if plan is not None else rm.model
        name, example, shape = rm.name, rm.example_inputs, rm.input_shape
    if data_spec is None:
        raise DataError("eval needs --data SPEC")
    with step(f"Loading {data_spec}"):
        loading = data_loading()
        workers = loading.pop("workers", 0)
        data = load_data(
            data_spec, image_size=image_size, channels=shape[1] if len(shape) == 4 else None, **loading
        )
    data.check_num_classes(num_outputs(net, example), name)
    with step(f"Evaluating {name} on the {split} split ({len(data.split(split))} images)"):
        result = evaluate(net.eval(), data, split, batch_size=batch_size, workers=workers)
    rows: list[tuple[str, str]] = [
        ("top-1 (%)", f"{result.top1:.2f}"),
        ("top-5 (%)", f"{result.top5:.2f}"),
        ("loss", f"{result.loss:.4f}"),
        ("images", f"{result.n:,}"),
    ]
    with tempfile.TemporaryDirectory(prefix="graphprune-") as tmp:
        timed = onnx_path or run_onnx
        if timed is None:
            timed = Path(tmp) / "model.onnx"
            with step("Exporting to ONNX for timing"):
                export_onnx(net, example, timed)
        if onnx_path is not None:
            with step(f"Evaluating {onnx_path} with onnxruntime"):
                onnx_result = evaluate_onnx(onnx_path, data, split, batch_size=batch_size)
            rows.append(("onnxruntime top-1 (%)", f"{onnx_result.top1:.2f}"))
            if abs(onnx_result.top1 - result.top1) > ONNX_TOLERANCE_PT:
                raise VerificationError(
                    f"{onnx_path}: onnxruntime top-1 {onnx_result.top1:.2f}% differs from PyTorch's "
                    f"{result.top1:.2f}% by more than {ONNX_TOLERANCE_PT} points"
                )
        with step(f"Timing {timed.name} with onnxruntime (1 thread)"):
            for batch in (1, 32):
                t = ort_latency(timed, (batch, *shape[1:]), warmup=3, runs=30 if batch == 1 else 10)
                rows.append(
                    (f"latency batch {batch} p50 / p90 (ms)", f"{t['median_ms']:.3f} / {t['p90_ms']:.3f}")
                )
    summary = table(f"{name} on {data.name} ({split})", show_header=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    for label, value in rows:
        summary.add_row(label, value)
    stdout().print(summary)

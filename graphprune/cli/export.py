"""`graphprune export`: MODEL (pruned first by --plan) to ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from graphprune.cli.console import stdout, step, table
from graphprune.cli.options import MODEL_HELP, model_options
from graphprune.cli.pipeline import export_dict, load_plan, resolve, trace, writable_file

if TYPE_CHECKING:
    from torch import nn


@click.command(
    short_help="Export MODEL (optionally pruned by a plan) to ONNX.",
    epilog="""\b
Examples:
  graphprune export torchvision:resnet18 --out resnet18.onnx
  graphprune export graphprune:cifar_resnet56 --plan out/r56/plan.json --out r56-pruned.onnx
""",
    help="Export MODEL (pruned first if --plan is given) to ONNX and check it against PyTorch.\n"
    + MODEL_HELP,
)
@model_options
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="FILE.onnx",
    help="Where to write the ONNX file.",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    metavar="PLAN.json",
    help="Prune with this plan before exporting.",
)
def export(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    out_path: Path,
    plan_path: Path | None,
) -> None:
    import graphprune as gp
    from graphprune.export import export_onnx
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    writable_file(out_path)
    plan = load_plan(plan_path) if plan_path is not None else None
    rm = resolve(model, weights, input_shape, plan)
    module: nn.Module = rm.model
    if plan is not None:
        pg = trace(rm)
        with step("Applying the plan"):
            module = gp.apply(pg, plan)
    with step(f"Exporting to {out_path}"):
        report = export_dict(export_onnx(module, rm.example_inputs, str(out_path)))
    summary = table(f"ONNX export of {escape(rm.name)}", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", overflow="fold")
    for key, value in report.items():
        summary.add_row(escape(str(key)), escape(_value_text(key, value)))
    stdout().print(summary)


def _value_text(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if "error" in key else f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)

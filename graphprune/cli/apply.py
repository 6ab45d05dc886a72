"""`graphprune apply`: apply a saved plan.json to MODEL, then save and export."""

from __future__ import annotations

from pathlib import Path

import click

from graphprune.cli.options import MODEL_HELP, model_options, out_dir_option
from graphprune.cli.pipeline import (
    load_plan,
    opt_str,
    print_before_after,
    resolve,
    run_pipeline,
    trace,
    writable_dir,
)


@click.command(
    short_help="Apply a saved plan.json to MODEL.",
    epilog="""\b
Examples:
  graphprune apply graphprune:cifar_resnet56 --plan out/r56/plan.json --out out/r56-again
  graphprune apply torchvision:resnet50 --weights r50.pt --plan plan.json --out out/r50 --no-export
""",
    help="Apply a saved pruning plan to MODEL; write model.pt, plan.json, model.onnx and "
    "report.json into DIR.\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="PLAN.json",
    help="A plan written by `graphprune prune` or PruningPlan.save.",
)
@out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def apply(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    plan_path: Path,
    out_dir: Path,
    no_export: bool,
) -> None:
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    writable_dir(out_dir)
    plan = load_plan(plan_path)
    rm = resolve(model, weights, input_shape, plan)
    pg = trace(rm)
    source = {"plan_file": str(plan_path), "weights": opt_str(weights)}
    report = run_pipeline(rm, pg, plan, out_dir, export=not no_export, plan_source=source)
    print_before_after(report, out_dir)

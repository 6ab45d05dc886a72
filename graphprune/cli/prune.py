"""`graphprune prune`: plan by a ranking criterion to a FLOPs target, then apply, save and export."""

from __future__ import annotations

from pathlib import Path

import click

from graphprune.cli.console import step
from graphprune.cli.options import MODEL_HELP, model_options, out_dir_option
from graphprune.cli.pipeline import opt_str, print_before_after, resolve, run_pipeline, trace, writable_dir


def prune_by_criterion(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    *,
    criterion: str,
    target_flops: float,
    scope: str,
    round_to: int,
    out_dir: Path,
    export: bool,
) -> None:
    """Plan by criterion, then apply, save, export and report (shared by `prune` and `demo`)."""
    import graphprune as gp
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    writable_dir(out_dir)
    rm = resolve(model, weights, input_shape)
    pg = trace(rm)
    with step(f"Planning: {criterion} criterion, {scope} scope, target {target_flops:g} of FLOPs"):
        plan = gp.criteria.plan_by_criterion(
            pg, criterion=criterion, target_flops=target_flops, scope=scope, round_to=round_to
        )
    source = {
        "criterion": criterion,
        "target_flops": target_flops,
        "scope": scope,
        "round_to": round_to,
        "weights": opt_str(weights),
    }
    report = run_pipeline(rm, pg, plan, out_dir, export=export, plan_source=source)
    print_before_after(report, out_dir)


@click.command(
    short_help="Prune MODEL to a FLOPs target by a criterion (l1, bn).",
    epilog="""\b
Examples:
  graphprune prune graphprune:cifar_resnet56 --criterion l1 --target-flops 0.5 --out out/r56
  graphprune prune torchvision:resnet50 --criterion bn --target-flops 0.7 --scope layer --out out/r50
  graphprune prune my_net.py:build --weights net.pt --input-shape 1,3,64,64 --out out/net
""",
    help="Prune MODEL to a FLOPs target with a ranking criterion; write model.pt, plan.json, "
    "model.onnx and report.json into DIR.\n\n"
    "--target-flops is the fraction of the original FLOPs to keep (0.5 halves them).\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--criterion",
    type=click.Choice(["l1", "bn"]),
    required=True,
    help="l1: filter weight L1 norm; bn: |BatchNorm gamma|.",
)
@click.option(
    "--target-flops",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    required=True,
    metavar="FRACTION",
    help="Fraction of the original FLOPs to keep, e.g. 0.5.",
)
@click.option(
    "--scope",
    type=click.Choice(["global", "layer"]),
    default="global",
    show_default=True,
    help="Rank channels across the whole model or within each layer.",
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Keep a multiple of this many channels per group: odd channel counts defeat vectorised "
    "kernels, so unrounded pruning can cut FLOPs without cutting latency. 1 = exact FLOPs target.",
)
@out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def prune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    criterion: str,
    target_flops: float,
    scope: str,
    round_to: int,
    out_dir: Path,
    no_export: bool,
) -> None:
    prune_by_criterion(
        model,
        weights,
        input_shape,
        criterion=criterion,
        target_flops=target_flops,
        scope=scope,
        round_to=round_to,
        out_dir=out_dir,
        export=not no_export,
    )

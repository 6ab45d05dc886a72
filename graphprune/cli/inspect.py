"""`graphprune inspect`: the channel groups, blocks and layer costs of MODEL."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from graphprune.cli.console import mmacs, shape_text, stdout, table
from graphprune.cli.options import MODEL_HELP, model_options
from graphprune.cli.pipeline import resolve, trace

DEFAULT_GROUP_ROWS = 25


@click.command(
    short_help="Show channel groups, blocks and layer costs of MODEL.",
    epilog="""\b
Examples:
  graphprune inspect graphprune:cifar_resnet56
  graphprune inspect torchvision:resnet50 --all-groups
  graphprune inspect my_net.py:build --input-shape 1,3,64,64 --weights net.pt
""",
    help="Show the channel groups, blocks and costs graphprune finds in MODEL.\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--all-groups", is_flag=True, help=f"List every channel group (default: the first {DEFAULT_GROUP_ROWS})."
)
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Number of costliest layers to list.",
)
def inspect(model: str, weights: Path | None, input_shape: str | None, all_groups: bool, top: int) -> None:
    rm = resolve(model, weights, input_shape)
    pg = trace(rm)
    out = stdout()

    prunable = sum(1 for g in pg.groups if g.prunable)
    summary = table("model", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("model", escape(rm.name))
    summary.add_row("input shape", shape_text(rm.input_shape))
    summary.add_row("FLOPs", f"{mmacs(pg.flops)} MMACs")
    summary.add_row("params", f"{pg.params:,} ({pg.params / 1e6:.2f} M)")
    summary.add_row("channel groups", f"{len(pg.groups)} ({prunable} prunable)")
    summary.add_row("blocks", str(len(pg.blocks)))
    out.print(summary)

    shown = pg.groups if all_groups else pg.groups[:DEFAULT_GROUP_ROWS]
    groups = table("channel groups")
    groups.add_column("id", overflow="fold")
    groups.add_column("size", justify="right")
    groups.add_column("prunable")
    groups.add_column("members", justify="right")
    groups.add_column("reason", overflow="fold")
    for g in shown:
        groups.add_row(
            escape(str(g.id)),
            str(g.size),
            ("yes" if g.lossless else "[yellow]yes, not lossless[/]") if g.prunable else "[red]no[/]",
            str(len(g.members)),
            escape(g.reason or ""),
        )
    out.print(groups)
    if len(shown) < len(pg.groups):
        out.print(f"... {len(pg.groups) - len(shown)} more groups (--all-groups lists them)")

    blocks = table("removable blocks")
    blocks.add_column("name", overflow="fold")
    blocks.add_column("MFLOPs (MMACs)", justify="right")
    blocks.add_column("params", justify="right")
    blocks.add_column("share of FLOPs", justify="right")
    for b in pg.blocks:
        share = b.flops / pg.flops if pg.flops else 0.0
        blocks.add_row(escape(b.name), mmacs(b.flops), f"{b.params:,}", f"{share:.1%}")
    if pg.blocks:
        out.print(blocks)
    else:
        out.print("no removable blocks")

    if top:
        costs = table(f"top {top} layers by FLOPs")
        costs.add_column("layer", overflow="fold")
        costs.add_column("kind")
        costs.add_column("MMACs", justify="right")
        costs.add_column("params", justify="right")
        costs.add_column("share of FLOPs", justify="right")
        for lc in sorted(pg.layer_costs, key=lambda c: c.flops, reverse=True)[:top]:
            share = lc.flops / pg.flops if pg.flops else 0.0
            costs.add_row(escape(lc.name), escape(lc.kind), mmacs(lc.flops), f"{lc.params:,}", f"{share:.1%}")
        out.print(costs)

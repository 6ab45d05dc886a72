"""`graphprune latency-model`: measure sub-networks of MODEL and fit the latency predictor."""

from __future__ import annotations

from pathlib import Path

import click

from graphprune.cli.console import stdout, table
from graphprune.cli.options import MODEL_HELP, model_options
from graphprune.cli.pipeline import resolve, trace
from graphprune.efficiency.latency import MIN_SAMPLE_SECONDS
from graphprune.errors import OutputError


@click.command(
    "latency-model",
    short_help="Fit MODEL's latency predictor from measured sub-networks.",
    epilog="""\b
Examples:
  graphprune latency-model graphprune:cifar_resnet56 --out r56-latency.json
  graphprune latency-model torchvision:resnet50 --samples 80 --threads 1 --out r50-latency.json
""",
    help="Measure the onnxruntime latency of random sub-networks of MODEL (random kept channels and blocks) "
    "and fit the Efficiency Module's latency predictor to them; print its held-out error (MAPE) and "
    "rank correlation. Each sub-network is timed beside the unpruned model, in alternating rounds. "
    "Measurements are cached (keyed by model, input shape, threads and onnxruntime version), so running "
    "again only measures what is missing. Use the file with "
    "`prune --method wgates --target-latency ...`.\n" + MODEL_HELP,
)
@model_options
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, metavar="FILE.json")
@click.option(
    "--samples", default=60, show_default=True, type=click.IntRange(4), help="Sub-networks to measure."
)
@click.option(
    "--threads", default=1, show_default=True, type=click.IntRange(1), help="onnxruntime intra-op threads."
)
@click.option(
    "--runs",
    default=30,
    show_default=True,
    type=click.IntRange(1),
    help=f"Timed runs per sub-network, at least (and at least {MIN_SAMPLE_SECONDS:g} s of the unpruned "
    "model's runs).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where measured samples are kept (default: $XDG_CACHE_HOME/graphprune/latency).",
)
def latency_model(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    out: Path,
    samples: int,
    threads: int,
    runs: int,
    cache_dir: Path | None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from graphprune.cli.console import stderr
    from graphprune.efficiency.latency import build_latency_model
    from graphprune.methods.wgates.latency_budget import default_cache_dir

    blocked = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocked is not None and blocked != out:
        raise OutputError(f"cannot write {out}: {blocked} is not a directory")
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is a directory")
    rm = resolve(model, weights, input_shape)
    pg = trace(rm)
    columns = (
        TextColumn("measuring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr()) as progress:
        task = progress.add_task("samples", total=samples)
        predictor = build_latency_model(
            pg,
            samples=samples,
            threads=threads,
            runs=runs,
            cache_dir=cache_dir or default_cache_dir(),
            on_sample=lambda done, total: progress.update(task, completed=done),
        )
        progress.update(task, completed=samples)
    predictor.save(out)
    r = predictor.report
    t = table(f"Latency model of {rm.name} ({threads} thread{'s' if threads > 1 else ''})", show_header=False)
    t.add_row("samples", str(r["samples"]))
    t.add_row("held-out samples", str(r["held_out"]))
    t.add_row("held-out MAPE", f"{100 * r['mape']:.2f}%" if "mape" in r else "-")
    t.add_row("held-out Spearman", f"{r['spearman']:.3f}" if "spearman" in r else "-")
    t.add_row("fit MAPE", f"{100 * r['train_mape']:.2f}%")
    layout = predictor.layout
    if layout is not None:
        t.add_row(
            "onnxruntime NCHWc layout",
            f"blocks of {layout.block}, input counts a multiple of {layout.multiple}"
            if layout.block
            else "none",
        )
    t.add_row("written", str(out))
    stdout().print(t)

"""Options shared by the commands that train (`finetune`, `prune --data`): data, optimiser, budget, resume."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from graphprune.cli.console import stdout, step, table
from graphprune.cli.pipeline import print_lossless_note
from graphprune.train.config import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])

DATA_HELP = (
    "Dataset: cifar10:PATH (the JPEG zip, its extracted tree or the python batches; empty PATH = the "
    "shared zip), fashion-mnist:PATH (IDX files), imagefolder:PATH (train/ plus val/ or test/)."
)


def val_split_option(fn: F) -> F:
    """--val-split FRACTION, for the commands that train."""
    return click.option(
        "--val-split",
        type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
        metavar="FRACTION",
        help="Hold out this fraction of the training images (class-stratified, fixed) as a validation "
        "split: evaluation during training, and --keep best, use it instead of the test split.",
    )(fn)


DATA_LOADING_KEY = "graphprune.data_loading"


def _keep(name: str) -> Callable[[click.Context, Any, Any], None]:
    """A click callback storing the option's value under `name` in the command's data loading options."""

    def store(ctx: click.Context, _param: Any, value: Any) -> None:
        ctx.meta.setdefault(DATA_LOADING_KEY, {})[name] = value

    return store


def data_loading() -> dict[str, Any]:
    """The running command's --stream/--memory-budget/--cache-dir/--workers, as load_data and the loops
    take them: {"stream", "memory_budget" (bytes), "cache_dir"} and "workers"."""
    found: dict[str, Any] = dict(click.get_current_context().meta.get(DATA_LOADING_KEY, {}))
    if found.get("memory_budget") is not None:
        found["memory_budget"] = found["memory_budget"] * 2**30
    return found


def data_options(fn: F) -> F:
    """--data, --image-size and how the data is loaded: --stream/--in-memory, --memory-budget,
    --cache-dir, --workers (read with `data_loading()`)."""
    loading = [
        click.option(
            "--stream/--in-memory",
            "stream",
            default=None,
            expose_value=False,
            callback=_keep("stream"),
            help="Force the data path: stream image files through DataLoader workers, or decode them once "
            "into memory (default: stream an imagefolder tree whose decoded images exceed --memory-budget).",
        ),
        click.option(
            "--memory-budget",
            type=click.FloatRange(min=0),
            default=4.0,
            show_default=True,
            metavar="GIB",
            expose_value=False,
            callback=_keep("memory_budget"),
            help="Decoded size (GiB) up to which an image folder is decoded once into memory.",
        ),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path, file_okay=False),
            expose_value=False,
            callback=_keep("cache_dir"),
            help="Keep decoded datasets here, by content hash (default: $GRAPHPRUNE_DATA_CACHE).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            expose_value=False,
            callback=_keep("workers"),
            help="DataLoader worker processes decoding streamed images (0: in the training process).",
        ),
    ]
    for option in reversed(loading):
        fn = option(fn)
    fn = click.option(
        "--image-size",
        type=click.IntRange(min=1),
        help="Image side: imagefolder images are resized to it (streamed: cropped to it).",
    )(fn)
    return click.option("--data", "data_spec", metavar="SPEC", help=DATA_HELP)(fn)


def train_options(fn: F) -> F:
    """--lr, --batch-size, --max-steps, --resume, ... (the epochs option is the command's own)."""
    options = [
        click.option(
            "--lr", type=float, default=0.02, show_default=True, help="Peak learning rate (SGD, nesterov)."
        ),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option(
            "--weight-decay", type=float, default=1e-4, show_default=True, help="Not on BN and biases."
        ),
        click.option(
            "--schedule", type=click.Choice(["onecycle", "cosine"]), default="onecycle", show_default=True
        ),
        click.option("--warmup-epochs", type=float, default=0.0, show_default=True),
        click.option("--label-smoothing", type=float, default=0.0, show_default=True),
        click.option("--kd-temperature", type=float, default=4.0, show_default=True),
        click.option("--kd-alpha", type=float, default=0.9, show_default=True, help="Weight of the KD term."),
        click.option(
            "--max-steps",
            type=click.IntRange(min=1),
            help="Cap the run at this many steps (the LR schedule spans them).",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            help="CPU threads of training (default: every core). Runs repeat exactly at the same seed "
            "and thread count.",
        ),
        click.option("--channels-last", is_flag=True, help="channels_last memory format."),
        click.option(
            "--compile",
            "compile_",
            is_flag=True,
            help="torch.compile (inductor) the training step: the first step compiles (seconds to "
            "minutes), later steps run faster (measured: docs/results/train_throughput.md).",
        ),
        click.option("--bf16", is_flag=True, help="bf16 autocast (on a GPU)."),
        click.option(
            "--sync-bn",
            is_flag=True,
            help="Under torchrun on GPUs, BatchNorm statistics over the global batch (SyncBatchNorm); "
            "plain BatchNorm keeps per-process statistics.",
        ),
        click.option(
            "--keep",
            type=click.Choice(["last", "best"]),
            default="last",
            show_default=True,
            help="Weights the run ends with: the last step's, or the epoch's with the best validation "
            "top-1 (best.safetensors is kept beside the last checkpoint either way).",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="Continue the run in --out where it stopped; more --epochs or --max-steps than were done "
            "trains the difference.",
        ),
        click.option(
            "--override",
            is_flag=True,
            help="With --resume, accept a changed batch size, learning rate, seed, data ... (else an error).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def train_config(epochs: int, kw: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from the options of `train_options` (popped from `kw`)."""
    names = (
        "lr", "batch_size", "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "kd_temperature",
        "kd_alpha", "max_steps", "seed", "threads", "channels_last", "bf16", "keep", "override", "sync_bn",
        "compile_",
    )  # fmt: skip
    values = {n: kw.pop(n) for n in names}
    values["resume_override"] = values.pop("override")
    values["compile"] = values.pop("compile_")
    return TrainConfig(epochs=epochs, workers=data_loading().get("workers", 0), **values)


def run_step() -> Any:
    """The console's step spinner, or a silent one on the other ranks of a torchrun job."""
    import contextlib

    from graphprune.train.distributed import is_main_process

    return step if is_main_process() else (lambda message: contextlib.nullcontext())


def print_run_summary(report: dict[str, Any], out_dir: Any) -> None:
    """Original vs pruned: accuracy, FLOPs, params, latency, as report.md has them (rank 0 alone)."""
    from graphprune.train.distributed import is_main_process

    if not is_main_process():
        return
    orig, pruned = report["original"], report["pruned"]
    summary = table(f"{report['model']}: original vs pruned")
    for col, justify in (("metric", "left"), ("original", "right"), ("pruned", "right")):
        summary.add_column(col, justify=justify)  # type: ignore[arg-type]
    rows = [
        ("test top-1 (%)", "top1", "{:.2f}"),
        ("FLOPs (MMACs)", "flops", "{:,.2f}"),
        ("params", "params", "{:,}"),
    ]
    rows += [
        ("latency b1 p50 (ms)", "latency_b1_p50_ms", "{:.3f}"),
        ("latency b32 p50 (ms)", "latency_b32_p50_ms", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        cells = [row.get(key) for row in (orig, pruned)]
        shown = ["-" if v is None else fmt.format(v / 1e6 if key == "flops" else v) for v in cells]
        summary.add_row(label, *shown)
    stdout().print(summary)
    print_lossless_note(report)
    stdout().print(f"wrote {out_dir}/report.md")

"""Training throughput: graphprune's loop vs a minimal hand-written PyTorch loop, and the data pipeline.

    python benchmarks/train_throughput.py                 # ResNet-20 and ResNet-56; writes docs/results/
    python benchmarks/train_throughput.py --smoke --out /tmp/tp   # seconds, for CI

For each model: images/s of training steps (batch 128, SGD nesterov, random data of CIFAR shape) of
(a) a minimal loop (`loss = CE(model(x), y); backward; step` on one fixed batch) and
(b) `graphprune.train.fit` (its own loader: shuffle, random crop + flip, normalise; its lr schedule
and running metrics), timed in interleaved rounds, medians. Goal: fit / minimal >= 0.95. And the data
pipeline alone (loader with augmentation, no model): its images/s must be >= 3x the training step's.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from graphprune.fileio import write_text
from graphprune.models import get_model
from graphprune.train import Augment, DataBundle, ImageTensors, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


def random_cifar(n: int) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    split = ImageTensors(
        torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8), torch.arange(n) % 10
    )
    return DataBundle(
        "random-cifar", split, split, 10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), Augment()
    )


def minimal_loop(name: str, data: DataBundle, batch: int, warmup: int, steps: int) -> float:
    """images/s of the plainest PyTorch loop on one fixed, already normalised batch."""
    model = get_model(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x, y = next(iter(data.loader("train", batch, augment=False)))
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def graphprune_loop(
    name: str, data: DataBundle, batch: int, warmup: int, steps: int, channels_last: bool
) -> float:
    """images/s of `fit`'s steps after `warmup`, as fit itself measures them (metrics.jsonl window)."""
    model = get_model(name)
    cfg = TrainConfig(
        epochs=1, max_steps=warmup + steps, batch_size=batch, lr=0.01, log_every=warmup,
        eval_every_epoch=False, verbose=False, channels_last=channels_last,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        test = ImageTensors(data.test.images[:batch], data.test.labels[:batch])
        small_test = DataBundle(data.name, data.train, test, 10, data.mean, data.std, data.augment)
        fit(model, small_test, cfg, run_dir=tmp)
        records = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["kind"] == "step" and r["step"] == warmup + steps]
    return float(last[0]["images_per_s"])


def pipeline(data: DataBundle, batch: int, batches: int) -> float:
    """images/s of the training loader alone (shuffle, crop + flip, normalise)."""
    loader = data.loader("train", batch, seed=0)
    start = time.perf_counter()
    seen = 0
    for i, (x, _) in enumerate(loader):
        seen += len(x)
        if i + 1 >= batches:
            break
    return seen / (time.perf_counter() - start)


@click.command()
@click.option("--models", default="cifar_resnet20,cifar_resnet56", show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--steps", default=20, show_default=True, help="Timed steps per round.")
@click.option("--warmup", default=3, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--channels-last", is_flag=True, help="Time fit with channels_last as well.")
@click.option("--smoke", is_flag=True, help="ResNet-20, 2 steps, 1 round (CI).")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results", show_default=True)
def main(
    models: str,
    batch_size: int,
    steps: int,
    warmup: int,
    rounds: int,
    channels_last: bool,
    smoke: bool,
    out: Path,
) -> None:
    if smoke:
        models, steps, warmup, rounds, batch_size = "cifar_resnet20", 2, 1, 1, 16
    data = random_cifar(batch_size * (warmup + steps + 1))
    rows = []
    for name in models.split(","):
        samples: dict[str, list[float]] = {"minimal": [], "fit": [], "fit_channels_last": []}
        for _ in range(rounds):
            samples["minimal"].append(minimal_loop(name, data, batch_size, warmup, steps))
            samples["fit"].append(graphprune_loop(name, data, batch_size, warmup, steps, False))
            if channels_last:
                samples["fit_channels_last"].append(
                    graphprune_loop(name, data, batch_size, warmup, steps, True)
                )
        med = {k: statistics.median(v) for k, v in samples.items() if v}
        data_rate = statistics.median(pipeline(data, batch_size, warmup + steps) for _ in range(rounds))
        row = {
            "model": name, "batch_size": batch_size, "steps": steps, "rounds": rounds,
            "minimal_img_s": med["minimal"], "fit_img_s": med["fit"], "ratio": med["fit"] / med["minimal"],
            "fit_channels_last_img_s": med.get("fit_channels_last"), "pipeline_img_s": data_rate,
            "pipeline_over_step": data_rate / med["fit"], "epoch_seconds_50k": 50000 / med["fit"],
            "samples": samples,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
    result = {"command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
              "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "train_throughput.json", json.dumps(result, indent=2) + "\n")
    lines = [
        "# Training throughput",
        "",
        f"Generated by `{result['command']}` ({result['threads']} threads).",
        "Random uint8 data of CIFAR shape; fit includes its loader (shuffle, crop + flip, normalise);",
        "medians of interleaved rounds.",
        "",
        "| model | batch | minimal loop img/s | fit img/s | fit / minimal | channels_last img/s "
        "| data pipeline img/s | pipeline / step | CIFAR epoch (50k images) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        cl = f"{r['fit_channels_last_img_s']:.0f}" if r["fit_channels_last_img_s"] else "-"
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['minimal_img_s']:.0f} | {r['fit_img_s']:.0f} | "
            f"{r['ratio']:.3f} | {cl} | {r['pipeline_img_s']:.0f} | {r['pipeline_over_step']:.1f}x | "
            f"{r['epoch_seconds_50k']:.0f} s |"
        )
    write_text(out / "train_throughput.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

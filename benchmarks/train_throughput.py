"""Training throughput on this machine: `fit` against a minimal loop over the same steps, a real epoch,
both data paths, channels_last and torch.compile.

    python benchmarks/train_throughput.py --epoch --compile --threads 1   # ResNet-20 and ResNet-56
    python benchmarks/train_throughput.py --smoke --out /tmp/tp   # seconds, for CI

Per model, in interleaved rounds (medians), each loop runs `warmup + steps` steps at batch 128 and the
same `steps` after the same `warmup` are timed:
- the minimal loop (`CE(model(x), y); backward; step` on one fixed batch, SGD nesterov) and `fit` (its
  own loader: shuffle, crop + flip, normalise; its schedule and running metrics), timed from the
  windows `fit` logs in metrics.jsonl (its `log_every` divides both `warmup` and `steps`);
- the minimal loop with channels_last, and (`--compile`) with `torch.compile` (inductor), whose first
  step, the compilation, is timed apart: an epoch with compilation is the first round's (cold: the run
  uses an empty inductor cache of its own) plus an epoch of steps;
- evaluation (forward only, `torch.inference_mode`), eager and (`--compile`) compiled;
- `--epoch`: one real epoch of `fit` on the CIFAR-10 JPEG training split (50,000 images), wall clock;
- the data paths alone: the decode-once loader, and the streamed ImageFolder loader with 0, 1 and 2
  workers over JPEGs written for the run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from graphprune.fileio import write_text
from graphprune.models import get_model
from graphprune.train import Augment, DataBundle, ImageTensors, TrainConfig, fit, load_data

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TRAIN = 50_000


def random_cifar(n: int) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    split = ImageTensors(
        torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8), torch.arange(n) % 10
    )
    return DataBundle(
        "random-cifar", split, split, 10, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), Augment()
    )


def minimal_loop(
    name: str,
    data: DataBundle,
    batch: int,
    warmup: int,
    steps: int,
    *,
    channels_last: bool = False,
    compiled: bool = False,
) -> dict[str, float]:
    """images/s of the plainest loop on one fixed batch over the `steps` after `warmup`; with
    `compiled`, also the seconds of the first step (torch.compile's compilation)."""
    torch.manual_seed(0)
    model = get_model(name).train()
    x, y = next(iter(data.loader("train", batch, augment=False)))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    out: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(warmup + steps):
        if i == 1:
            out["first_step_s"] = time.perf_counter() - start
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    out["img_s"] = steps * batch / (time.perf_counter() - start)
    return out


def eval_loop(name: str, data: DataBundle, batch: int, warmup: int, steps: int, *, compiled: bool) -> float:
    """images/s of evaluation (eval mode, inference_mode) over the `steps` forward passes after `warmup`."""
    torch.manual_seed(0)
    model = get_model(name).eval()
    x, _ = next(iter(data.loader("train", batch, augment=False)))
    net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if compiled else model
    with torch.inference_mode():
        for i in range(warmup + steps):
            if i == warmup:
                start = time.perf_counter()
            net(x)
    return steps * batch / (time.perf_counter() - start)


def fit_loop(name: str, data: DataBundle, batch: int, warmup: int, steps: int) -> float:
    """images/s of `fit`'s steps `warmup + 1 .. warmup + steps`, summed over the windows it logs."""
    every = math.gcd(warmup, steps)
    cfg = TrainConfig(
        epochs=1, max_steps=warmup + steps, batch_size=batch, lr=0.01, log_every=every,
        eval_every_epoch=False, verbose=False, seed=0, threads=torch.get_num_threads(),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        assert isinstance(data.test, ImageTensors)  # random_cifar's, decoded
        test = ImageTensors(data.test.images[:batch], data.test.labels[:batch])
        small_test = DataBundle(data.name, data.train, test, 10, data.mean, data.std, data.augment)
        torch.manual_seed(0)
        fit(get_model(name), small_test, cfg, run_dir=tmp)
        records = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "step" and r["step"] > warmup]
    seconds = sum(every * batch / r["images_per_s"] for r in windows)
    return steps * batch / seconds


def real_epoch(name: str, batch: int) -> float:
    """Wall seconds of one `fit` epoch on the CIFAR-10 JPEG training split (no evaluation)."""
    data = load_data("cifar10:")
    cfg = TrainConfig(
        epochs=1, batch_size=batch, lr=0.01, eval_every_epoch=False, verbose=False,
        threads=torch.get_num_threads(),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fit(get_model(name), data, cfg, run_dir=tmp)
        seconds = time.perf_counter() - start
    return seconds


def memory_path(data: DataBundle, batch: int, batches: int) -> float:
    """images/s of the decode-once training loader alone (shuffle, crop + flip, normalise)."""
    return _drain(data.loader("train", batch, seed=0), batches)


def _drain(loader: Any, batches: int) -> float:
    start, seen = time.perf_counter(), 0
    for i, (x, _) in enumerate(loader):
        seen += len(x)
        if i + 1 >= batches:
            break
    return seen / (time.perf_counter() - start)


def write_folder(root: Path, images: int, size: int = 32) -> Path:
    """An ImageFolder of random JPEGs (10 classes, train/ and test/) for the streamed path."""
    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("test", 10)):
        for i in range(n):
            folder = root / split / f"class{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def stream_path(folder: Path, batch: int, workers: int) -> float:
    """images/s of the streamed training loader (decode, random-resized-crop + flip) with `workers`."""
    data = load_data(f"imagefolder:{folder}", stream=True)
    loader = data.loader("train", batch, seed=0, workers=workers)
    return _drain(loader, len(loader))


@click.command()
@click.option("--models", default="cifar_resnet20,cifar_resnet56", show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--steps", default=20, show_default=True, help="Timed steps per round.")
@click.option("--warmup", default=4, show_default=True)
@click.option("--rounds", default=3, show_default=True)
@click.option("--compile", "with_compile", is_flag=True, help="Also time torch.compile (inductor).")
@click.option("--epoch", is_flag=True, help="Also time one real CIFAR-10 epoch of fit per model.")
@click.option("--stream-images", default=2048, show_default=True, help="JPEGs of the streamed path.")
@click.option("--smoke", is_flag=True, help="ResNet-20, 2 steps, 1 round (CI).")
@click.option("--threads", type=click.IntRange(min=1), default=max(1, (os.cpu_count() or 2) - 1),
              show_default=True, help="CPU threads of every loop.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results", show_default=True)
def main(
    models: str, batch_size: int, steps: int, warmup: int, rounds: int, with_compile: bool, epoch: bool,
    stream_images: int, smoke: bool, threads: int, out: Path,
) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    load_start = os.getloadavg()[0]
    cache = tempfile.TemporaryDirectory()  # inductor compiles cold: no cache from an earlier run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name
    if smoke:
        models, steps, warmup, rounds, batch_size, stream_images = "cifar_resnet20", 2, 2, 1, 16, 64
    data = random_cifar(batch_size * (warmup + steps + 1))
    rows = []
    for name in models.split(","):
        samples: dict[str, list[float]] = {
            "minimal": [], "fit": [], "channels_last": [], "compiled": [], "eval": [], "eval_compiled": []
        }  # fmt: skip
        compile_s: list[float] = []
        for _ in range(rounds):  # interleaved: every variant once per round
            samples["minimal"].append(minimal_loop(name, data, batch_size, warmup, steps)["img_s"])
            samples["fit"].append(fit_loop(name, data, batch_size, warmup, steps))
            samples["channels_last"].append(
                minimal_loop(name, data, batch_size, warmup, steps, channels_last=True)["img_s"]
            )
            samples["eval"].append(eval_loop(name, data, batch_size, warmup, steps, compiled=False))
            if with_compile:
                samples["eval_compiled"].append(
                    eval_loop(name, data, batch_size, warmup, steps, compiled=True)
                )
                c = minimal_loop(name, data, batch_size, warmup, steps, compiled=True)
                samples["compiled"].append(c["img_s"])
                compile_s.append(c["first_step_s"])
        med = {k: statistics.median(v) for k, v in samples.items() if v}
        row: dict[str, Any] = {
            "model": name, "batch_size": batch_size, "steps": steps, "warmup": warmup, "rounds": rounds,
            "minimal_img_s": med["minimal"], "fit_img_s": med["fit"], "ratio": med["fit"] / med["minimal"],
            "channels_last_img_s": med["channels_last"],
            "channels_last_ratio": med["channels_last"] / med["minimal"],
            "eval_img_s": med["eval"], "samples": samples,
        }  # fmt: skip
        if with_compile:
            # the first round compiles cold (the run's own empty inductor cache); later rounds hit the cache
            compiled_epoch = compile_s[0] + CIFAR_TRAIN / med["compiled"]
            row.update(
                compiled_img_s=med["compiled"], compile_s=compile_s[0], compile_s_rounds=compile_s,
                epoch_compiled_over_eager=compiled_epoch / (CIFAR_TRAIN / med["minimal"]),
                eval_compiled_img_s=med["eval_compiled"],
                eval_compiled_ratio=med["eval_compiled"] / med["eval"],
            )  # fmt: skip
        if epoch:
            row["epoch_seconds"] = real_epoch(name, batch_size)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "samples"}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp), stream_images)
        batches = max(1, stream_images // batch_size)
        paths = {"memory": statistics.median(memory_path(data, batch_size, batches) for _ in range(rounds))}
        for workers in (0, 1, 2):
            paths[f"stream_w{workers}"] = statistics.median(
                stream_path(folder, batch_size, workers) for _ in range(rounds)
            )
    result = {
        "command": " ".join(["python", "benchmarks/train_throughput.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(), "rows": rows, "data_paths_img_s": paths,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "train_throughput.json", json.dumps(result, indent=2) + "\n")
    write_text(out / "train_throughput.md", markdown(result))


def markdown(result: dict[str, Any]) -> str:
    load, nan = result.get("load_average", {}), float("nan")
    lines = [
        "# Training throughput",
        "",
        f"Generated by `{result['command']}` ({result['threads']} threads; 1-minute load average "
        f"{load.get('start', nan):.2f} at the start, {load.get('end', nan):.2f} at the end).",
        "Random uint8 data of CIFAR shape; every loop runs the same warm-up and the same timed steps;",
        "medians of interleaved rounds. The compiled epoch includes compilation; evaluation is forward only.",
        "",
        "| model | batch | minimal loop img/s | fit img/s | fit / minimal | channels_last / minimal "
        "| compiled / eager epoch | eval img/s | compiled / eager eval | real epoch (50k images) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in result["rows"]:
        compiled = f"{r['epoch_compiled_over_eager']:.2f}" if "epoch_compiled_over_eager" in r else "-"
        epoch = f"{r['epoch_seconds']:.0f} s" if "epoch_seconds" in r else "-"
        ev = f"{r['eval_img_s']:.0f}" if "eval_img_s" in r else "-"
        ev_c = f"{r['eval_compiled_ratio']:.2f}" if "eval_compiled_ratio" in r else "-"
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['minimal_img_s']:.0f} | {r['fit_img_s']:.0f} | "
            f"{r['ratio']:.3f} | {r['channels_last_ratio']:.3f} | {compiled} | {ev} | {ev_c} | {epoch} |"
        )
    paths = result["data_paths_img_s"]
    lines += [
        "",
        "Data paths alone (training loader, images/s): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in paths.items()),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Suite 2: onnxruntime latency of pruned models, graphprune arms against Torch-Pruning at the same FLOPs.

    python benchmarks/latency_suite.py            # full: 6 models x 3 targets, batch 1/32, 1/2 threads
    python benchmarks/latency_suite.py --smoke    # CIFAR ResNet-20, one target, a few runs (CI)

Arms per model and FLOPs target: graphprune channels (L1, global allocation, round_to=8), blocks only,
blocks + channels, and Torch-Pruning's base pruner (GroupMagnitudeImportance p=2, global allocation as
graphprune's, round_to=8, the classifier ignored) with its ratio searched to the same FLOPs cap. Arms are
compared only where their FLOPs kept are within 0.01 of each other. Weights: the trained CIFAR baseline
where one exists (the CIFAR ResNet-56: trained weights decide where a global allocation puts channels),
random (seeded) otherwise. The load average is recorded at the start and the end. Every model is
exported to simplified ONNX (`graphprune.export`); all arms of one
model, original included, are timed together in interleaved rounds, one session at a time, the order
reversed every round (`graphprune.latency.interleaved_latency`). Writes latency.json, latency.md and
latency.png under --out (docs/results by default); --resume keeps the models already in latency.json.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import gp_arms
import run_meta
import torch
import tp_arms
from torch import nn

import graphprune as gp
from graphprune.export import export_onnx
from graphprune.fileio import write_text
from graphprune.latency import interleaved_latency
from graphprune.modelspec import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = (
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:mobilenet_v2",
    "torchvision:efficientnet_b0",
    "torchvision:regnet_y_400mf",
    "graphprune:cifar_resnet56",
)
REDUCTIONS = (0.3, 0.5, 0.7)
ARMS = ("gp-channel", "gp-block", "gp-block+channel", "tp-groupnorm-global")
ORIGINAL = "original"
TRAINED = {
    "graphprune:cifar_resnet56": "cifar10jpeg_resnet56.th",
    "graphprune:cifar_resnet20": "cifar10jpeg_resnet20.th",
}
FLOPS_MATCH = 0.01
"""Two arms are compared only if their FLOPs kept differ by at most this much."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def build_arm(arm: str, model: nn.Module, x: tuple[torch.Tensor, ...], keep: float) -> tuple[nn.Module, dict]:
    """The pruned model of `arm` at `keep` of the FLOPs, and notes on how it was made."""
    if arm == "gp-channel":
        return gp_arms.channel_arm(model, x, keep), {"round_to": 8, "criterion": "l1", "scope": "global"}
    if arm == "gp-block":
        return gp_arms.block_arm(model, x, keep), {"criterion": "block-l1"}
    if arm == "gp-block+channel":
        return gp_arms.block_channel_arm(model, x, keep), {"round_to": 8, "block_share": 0.5}
    if arm == "tp-groupnorm-global":
        notes: dict[str, Any] = {
            "importance": "GroupMagnitudeImportance(p=2)",
            "global": True,
            "round_to": 8,
        }
        search = {"importance": "groupnorm", "global_pruning": True, "round_to": 8}
        try:
            res = tp_arms.tp_prune_to_flops(model, x, keep, **search)
        except tp_arms.BrokenModelError as exc:
            # the peer couples the zero-padded option-A shortcut wrongly; keep it off the residual stream
            ignored = tuple(tp_arms.coupled_convs(model, x))
            notes["first_attempt"] = str(exc)
            notes["ignored_residual_convs"] = len(ignored)
            res = tp_arms.tp_prune_to_flops(model, x, keep, ignored=ignored, **search)
        notes.update(
            pruning_ratio=res.pruning_ratio, matched=res.matched, reachable=res.reachable, trials=res.trials
        )
        return res.model, notes
    raise click.BadParameter(f"unknown arm {arm!r}")


def run_model(
    spec: str,
    reductions: tuple[float, ...],
    arms: tuple[str, ...],
    batches: tuple[int, ...],
    threads: tuple[int, ...],
    rounds: int,
    runs: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Build, export and time every arm of one model; failures are recorded per arm, never hidden."""
    resolved = resolve_model(spec)
    model, x = resolved.model, resolved.example_inputs
    weights = TRAINED.get(spec)
    if weights is not None:
        from graphprune import shared
        from graphprune.weights import load_weights

        model = load_weights(model, shared.weights_file(weights)).eval()
    base_flops = gp.count_flops(model, x)
    entries: dict[str, dict[str, Any]] = {
        ORIGINAL: {"arm": ORIGINAL, "reduction": 0.0, "flops": base_flops, "params": gp.count_params(model)}
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {ORIGINAL: Path(tmp) / "original.onnx"}
        export_onnx(model, x, paths[ORIGINAL])
        for reduction in reductions:
            for arm in arms:
                key = f"{arm}@{reduction:g}"
                entry: dict[str, Any] = {"arm": arm, "reduction": reduction}
                start = time.perf_counter()
                try:
                    slim, notes = build_arm(arm, model, x, 1.0 - reduction)
                    entry.update(notes=notes, flops=gp.count_flops(slim, x), params=gp.count_params(slim))
                    path = Path(tmp) / f"{len(paths)}.onnx"
                    export_onnx(slim, x, path)
                    paths[key] = path
                except Exception as exc:  # recorded in the results as this arm's failure
                    entry["error"] = _one_line(exc)
                    log(f"{spec} {key}: {entry['error']}\n{traceback.format_exc(limit=3)}")
                entry["build_s"] = round(time.perf_counter() - start, 2)
                if "flops" in entry:
                    entry["flops_ratio"] = entry["flops"] / base_flops
                entries[key] = entry
                log(f"{spec} {key}: {entry.get('flops_ratio', entry.get('error'))}")
        timings = []
        for batch in batches:
            for n_threads in threads:
                shape = (batch, *resolved.input_shape[1:])
                stats = interleaved_latency(paths, shape, rounds=rounds, runs=runs, threads=n_threads)
                for key, s in stats.items():
                    timings.append({"key": key, "batch": batch, "threads": n_threads, **s})
                log(f"{spec} batch {batch} threads {n_threads}: timed {len(stats)} files")
    return {
        "spec": spec,
        "weights": weights or "random (seeded)",
        "input_shape": list(resolved.input_shape),
        "measured": run_meta.describe_run("model")["date"],  # --resume keeps models of earlier runs
        "entries": entries,
        "timings": timings,
    }


def derive(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (arm, target, batch, threads): p50/p90, speed-up vs original, speed-up / FLOPs speed-up."""
    entries = result["entries"]
    base = {(t["batch"], t["threads"]): t for t in result["timings"] if t["key"] == ORIGINAL}
    rows = []
    for t in result["timings"]:
        if t["key"] == ORIGINAL:
            continue
        e = entries[t["key"]]
        b = base[(t["batch"], t["threads"])]
        speedup = b["p50_ms"] / t["p50_ms"]
        flops_speedup = entries[ORIGINAL]["flops"] / e["flops"]
        rows.append(
            {
                "model": result["spec"],
                "arm": e["arm"],
                "reduction": e["reduction"],
                "flops_ratio": e["flops_ratio"],
                "params": e["params"],
                "batch": t["batch"],
                "threads": t["threads"],
                "p50_ms": t["p50_ms"],
                "p90_ms": t["p90_ms"],
                "original_p50_ms": b["p50_ms"],
                "original_p90_ms": b["p90_ms"],
                "speedup": speedup,
                "speedup_per_flops": speedup / flops_speedup,
            }
        )
    return rows


def answer(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """At (about) equal FLOPs, is block+channel faster than channel-only, and graphprune than TP?"""

    def compare(a: str, b: str) -> dict[str, Any]:
        index = {(r["model"], r["reduction"], r["batch"], r["threads"], r["arm"]): r for r in rows}
        pairs, unmatched = [], 0
        for (m, red, batch, th, arm), r in index.items():
            other = index.get((m, red, batch, th, b))
            if arm == a and other is not None and abs(r["flops_ratio"] - other["flops_ratio"]) > FLOPS_MATCH:
                unmatched += 1
            elif arm == a and other is not None:
                pairs.append(
                    {
                        "model": m,
                        "reduction": red,
                        "batch": batch,
                        "threads": th,
                        "latency_ratio": r["p50_ms"] / other["p50_ms"],
                        "flops_ratio_a": r["flops_ratio"],
                        "flops_ratio_b": other["flops_ratio"],
                    }
                )
        ratios = sorted(p["latency_ratio"] for p in pairs)
        return {
            "a": a,
            "b": b,
            "cases": len(pairs),
            "a_faster": sum(p["latency_ratio"] < 1.0 for p in pairs),
            "median_latency_ratio": ratios[len(ratios) // 2] if ratios else None,
            "not_compared_flops_differ": unmatched,
            "pairs": pairs,
        }

    return {
        "block_channel_vs_channel": compare("gp-block+channel", "gp-channel"),
        "channel_vs_tp": compare("gp-channel", "tp-groupnorm-global"),
        "block_channel_vs_tp": compare("gp-block+channel", "tp-groupnorm-global"),
    }


def markdown(data: dict[str, Any]) -> str:
    """latency.md: every number from latency.json."""
    meta, rows = data["meta"], data["rows"]
    configs = sorted({(r["batch"], r["threads"]) for r in rows})
    load = f"; load average (1/5/15 min) at start {meta['load_average']}" if "load_average" in meta else ""
    if "load_average_end" in data:
        load += f", at the end {data['load_average_end']}"
    lines = [
        "# Latency of exported models (suite 2)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['mode']} mode); "
        f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores, onnxruntime "
        f"{meta['versions']['onnxruntime']}, torch-pruning {meta['versions']['torch-pruning']}{load}.",
        "Weights: trained where the model has a CIFAR baseline, else random (seeded); simplified ONNX; arms "
        f"compared only within {FLOPS_MATCH} of each other's FLOPs kept; p50 over all timed runs of "
        "interleaved rounds "
        f"({data['config']['rounds']} rounds x {data['config']['runs']} runs per file and setting).",
        "Cells: speed-up of p50 latency vs the original / (speed-up / FLOPs speed-up; 1.0 = latency "
        "falls as fast as FLOPs).",
        "",
    ]
    left = [m for m in MODELS if m not in {d["spec"] for d in data["models"]}]
    if meta["mode"] != "smoke" and left:
        lines += [f"Not in this run (re-run them with `--model NAME --resume`): {', '.join(left)}.", ""]
    for cmp_key, text in (
        ("block_channel_vs_channel", "block+channel faster than channel-only"),
        ("channel_vs_tp", "graphprune channel faster than Torch-Pruning"),
        ("block_channel_vs_tp", "graphprune block+channel faster than Torch-Pruning"),
    ):
        c = data["answer"][cmp_key]
        if c["cases"]:
            lines.append(
                f"- **{text}** in {c['a_faster']} of {c['cases']} (model, target, batch, threads) cases; "
                f"median latency ratio {c['median_latency_ratio']:.3f} (below 1 = faster); "
                f"{c.get('not_compared_flops_differ', 0)} cases not compared (FLOPs differ by over "
                f"{FLOPS_MATCH})."
            )
    lines.append("")
    header = "| target | arm | FLOPs kept | params | " + " | ".join(f"b{b} t{t}" for b, t in configs) + " |"
    for result in data["models"]:
        spec = result["spec"]
        when = f" (measured {result['measured']})" if "measured" in result else ""
        lines += [f"## {spec}{when}", "", header, "|" + "---|" * (4 + len(configs))]
        model_rows = [r for r in rows if r["model"] == spec]
        for key, e in result["entries"].items():
            if key == ORIGINAL:
                continue
            target = f"-{e['reduction']:.0%}"
            if "error" in e:
                lines.append(f"| {target} | {e['arm']} | failed: {e['error']} |" + " |" * (1 + len(configs)))
                continue
            # Torch-Pruning's ratio search can miss the FLOPs target by more than its tolerance
            off = " (off target)" if e.get("notes", {}).get("matched") is False else ""
            cells = []
            for b, t in configs:
                r = next(
                    (
                        r
                        for r in model_rows
                        if r["arm"] == e["arm"]
                        and r["reduction"] == e["reduction"]
                        and (r["batch"], r["threads"]) == (b, t)
                    ),
                    None,
                )
                cells.append(f"{r['speedup']:.2f}x / {r['speedup_per_flops']:.2f}" if r else "—")
            lines.append(
                f"| {target} | {e['arm']} | {e['flops_ratio']:.3f}{off} | {e['params']:,} | "
                + " | ".join(cells)
                + " |"
            )
        base = [t for t in result["timings"] if t["key"] == ORIGINAL]
        lines += [
            "",
            "Original p50 / p90 ms: "
            + ", ".join(f"b{t['batch']} t{t['threads']} {t['p50_ms']:.2f} / {t['p90_ms']:.2f}" for t in base),
            "",
        ]
    fallbacks = sorted(
        {
            m["spec"]
            for m in data["models"]
            for e in m["entries"].values()
            if "first_attempt" in e.get("notes", {})
        }
    )
    if fallbacks:
        lines += [
            f"Torch-Pruning on {', '.join(fallbacks)}: its first pruned model did not run (it couples the",
            "zero-padded option-A shortcut as if elementwise), so its residual-stream convs were passed as",
            "`ignored_layers` and only the convs inside the blocks were pruned (notes in `latency.json`).",
            "",
        ]
    lines += ["p50 and p90 of every arm are in `latency.json` (`rows`).", ""]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """Speed-up against FLOPs kept, batch 1 / 1 thread, one panel per model, the ideal 1/FLOPs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = [m["spec"] for m in data["models"]]
    cols = min(3, len(specs)) or 1
    nrows = -(-len(specs) // cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    config = min((r["batch"], r["threads"]) for r in data["rows"]) if data["rows"] else (1, 1)
    for ax, spec in zip(axes.flat, specs, strict=False):
        rows = [r for r in data["rows"] if r["model"] == spec and (r["batch"], r["threads"]) == config]
        for arm in ARMS:
            pts = sorted((r["flops_ratio"], r["speedup"]) for r in rows if r["arm"] == arm)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=arm)
        ax.plot([0.25, 1.0], [4.0, 1.0], "k--", lw=0.8, label="ideal (1/FLOPs)")
        ax.set_title(spec, fontsize=9)
        ax.set_xlabel("FLOPs kept")
        ax.set_ylabel(f"speed-up (b{config[0]}, {config[1]} thread)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(specs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--smoke", is_flag=True, help="CIFAR ResNet-20, one target, batch 1, 1 thread, few runs (CI).")
@click.option(
    "--model", "models", multiple=True, help="Model spec (repeatable); default: the six of the suite."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
@click.option("--rounds", type=int, default=None, help="Interleaved rounds per setting (default 7; smoke 2).")
@click.option("--runs", type=int, default=None, help="Timed runs per file per round (default 10; smoke 3).")
@click.option("--resume", is_flag=True, help="Keep models already in OUT/latency.json and skip them.")
def main(
    smoke: bool, models: tuple[str, ...], out: Path, rounds: int | None, runs: int | None, resume: bool
) -> None:
    """Run the latency suite and write latency.json, latency.md and latency.png."""
    torch.set_num_threads(1)
    specs = models or (("graphprune:cifar_resnet20",) if smoke else MODELS)
    reductions = (0.5,) if smoke else REDUCTIONS
    batches, threads = ((1,), (1,)) if smoke else ((1, 32), (1, 2))
    rounds = rounds or (2 if smoke else 7)
    runs = runs or (3 if smoke else 10)
    json_path = out / "latency.json"
    done: list[dict[str, Any]] = []
    if resume and json_path.exists():
        done = [m for m in json.loads(json_path.read_text())["models"] if m["spec"] in specs]
    data: dict[str, Any] = {
        "meta": run_meta.describe_run("smoke" if smoke else "full"),
        "config": {
            "reductions": list(reductions),
            "arms": list(ARMS),
            "batches": list(batches),
            "threads": list(threads),
            "rounds": rounds,
            "runs": runs,
            "weights": "random (seeded)",
        },
        "models": done,
    }
    for spec in specs:
        if any(m["spec"] == spec for m in data["models"]):
            click.echo(f"{spec}: already in {json_path}, skipped")
            continue
        data["models"].append(run_model(spec, reductions, ARMS, batches, threads, rounds, runs, click.echo))
        data["rows"] = [r for m in data["models"] for r in derive(m)]
        data["answer"] = answer(data["rows"])
        write_text(json_path, json.dumps(data, indent=1) + "\n")  # after every model: resumable
    data["rows"] = [r for m in data["models"] for r in derive(m)]
    data["answer"] = answer(data["rows"])
    data["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_text(json_path, json.dumps(data, indent=1) + "\n")
    write_text(out / "latency.md", markdown(data))
    plot(data, out / "latency.png")
    click.echo(f"wrote {json_path}, latency.md, latency.png")


if __name__ == "__main__":
    main()

"""Latency that counts: timm CNNs at -50% FLOPs, onnxruntime speed-up per FLOPs speed-up, graphprune vs TP.

    python benchmarks/timm_latency.py          # efficientnet_b0, mobilenetv3_large_100, regnety_016 at 224²
    python benchmarks/timm_latency.py --smoke  # efficientnet_b0 at 64², 2 rounds x 3 runs (CI)

Per model (`timm:NAME`, random seeded weights, no data) the arms are: the unpruned model, graphprune L1
channels (global, round_to=8), graphprune L1 blocks + channels (half the reduction from whole blocks, the
rest from channels, round_to=8), and Torch-Pruning's base pruner with its README's magnitude importance
(GroupMagnitudeImportance p=2, global, round_to=8, the classifier ignored), its ratio searched to the most
FLOPs at or under the target + 0.01 (`tp_arms.tp_prune_to_flops`). The arms are built exactly as suite 2
builds them (`latency_suite.build_arm`). FLOPs are counted on each rewritten model with one counter
(`gp.count_flops`). Every arm, the unpruned one included, goes through the same export path
(`graphprune.export.export_onnx`: torch.onnx.export, onnxsim, onnx.checker, onnxruntime checked against
PyTorch) and is timed by the same function (`graphprune.latency.interleaved_latency`): batch 1, `--threads`
intra-op threads, one session running at a time, the order reversed every round, so load drift hits every
arm alike. Latency is the p50 over all timed runs; speed-up = t_unpruned / t_arm, FLOPs speed-up =
1 / flops_ratio, and their ratio says how much of the FLOPs cut the latency sees (1.0 = all of it).

An arm that fails gets a row with its one-line error. Writes timm_latency.json (after every model, so a
stopped run resumes: a model already measured with the same settings is skipped unless --force) and
timm_latency.md under --out (docs/results by default).
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
import latency_suite
import run_meta
import torch

import graphprune as gp
from graphprune.export import export_onnx
from graphprune.fileio import write_text
from graphprune.latency import interleaved_latency
from graphprune.modelspec import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("efficientnet_b0", "mobilenetv3_large_100", "regnety_016")
KEEP = 0.5
"""FLOPs kept by every pruned arm (-50%)."""
TOLERANCE = latency_suite.FLOPS_MATCH
"""graphprune arms must keep at most KEEP + TOLERANCE; Torch-Pruning is searched within it."""
ORIGINAL = "unpruned"
ARMS = ("gp-channel", "gp-block+channel", "tp-groupnorm-global")
LABELS = {
    ORIGINAL: "unpruned",
    "gp-channel": "graphprune L1 channel",
    "gp-block+channel": "graphprune L1 block+channel",
    "tp-groupnorm-global": "Torch-Pruning (magnitude, global)",
}
VERDICT_NAMES = {
    "gp-block+channel": "block+channel",
    "gp-channel": "channel-only",
    "tp-groupnorm-global": "Torch-Pruning",
}


def on_target(entry: dict[str, Any]) -> bool:
    """Whether an arm's FLOPs kept obey the rules: at most KEEP + TOLERANCE, and for Torch-Pruning's
    search also at least KEEP - TOLERANCE (`matched`), so that the arms are compared at the same FLOPs."""
    if "flops_ratio" not in entry or entry["flops_ratio"] > KEEP + TOLERANCE + 1e-9:
        return False
    return entry.get("notes", {}).get("matched", True) is not False


def config_of(size: int, threads: int, rounds: int, runs: int) -> dict[str, Any]:
    """What a model's record was measured with: a record is reused only under the same settings."""
    return {"size": size, "batch": 1, "threads": threads, "rounds": rounds, "runs": runs, "keep": KEEP}


def run_model(name: str, config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Build, export and time every arm of one timm model; an arm's failure is recorded, never raised."""
    load_start = [round(v, 2) for v in os.getloadavg()]
    size = config["size"]
    resolved = resolve_model(f"timm:{name}", input_shape=(1, 3, size, size))
    model, x = resolved.model.eval(), resolved.example_inputs
    base_flops = gp.count_flops(model, x)
    entries: dict[str, dict[str, Any]] = {
        ORIGINAL: {
            "arm": ORIGINAL, "flops": base_flops, "flops_ratio": 1.0, "params": gp.count_params(model),
        }
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = {ORIGINAL: Path(tmp) / "unpruned.onnx"}
        start = time.perf_counter()
        try:
            entries[ORIGINAL]["onnx_max_rel_error"] = export_onnx(model, x, paths[ORIGINAL]).max_rel_error
        except Exception as exc:  # without the reference no speed-up exists: every arm says why
            error = f"unpruned model: {latency_suite._one_line(exc)}"
            log(f"{name}: {error}")
            return {
                "model": name, "spec": resolved.name, "input_shape": list(resolved.input_shape),
                "config": config, "measured": run_meta.describe_run("model")["date"],
                "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
                "entries": {a: {"arm": a, "error": error} for a in (ORIGINAL, *ARMS)},
            }  # fmt: skip
        entries[ORIGINAL]["build_s"] = round(time.perf_counter() - start, 2)
        for arm in ARMS:
            entry: dict[str, Any] = {"arm": arm}
            start = time.perf_counter()
            try:
                slim, notes = latency_suite.build_arm(arm, model, x, KEEP)
                flops = gp.count_flops(slim, x)
                entry.update(
                    notes=notes, flops=flops, flops_ratio=flops / base_flops, params=gp.count_params(slim)
                )
                path = Path(tmp) / f"{arm.replace('+', '_')}.onnx"
                entry["onnx_max_rel_error"] = export_onnx(slim, x, path).max_rel_error
                paths[arm] = path
            except Exception as exc:  # recorded as this arm's row
                entry["error"] = latency_suite._one_line(exc)
                log(f"{name} {arm}: {entry['error']}\n{traceback.format_exc(limit=3)}")
            entry["build_s"] = round(time.perf_counter() - start, 2)
            if "error" not in entry:
                entry["on_target"] = on_target(entry)
            entries[arm] = entry
            log(f"{name} {arm}: {entry.get('flops_ratio', entry.get('error'))} ({entry['build_s']} s)")
        start = time.perf_counter()
        stats = interleaved_latency(
            paths, (1, 3, size, size), rounds=config["rounds"], runs=config["runs"], threads=config["threads"]
        )
        log(f"{name}: timed {len(stats)} files in {time.perf_counter() - start:.1f} s")
    base_ms = stats[ORIGINAL]["p50_ms"]
    for arm, s in stats.items():
        e = entries[arm]
        e.update(p50_ms=s["p50_ms"], p90_ms=s["p90_ms"], round_median_ms=s["round_median_ms"])
        e["speedup"] = base_ms / s["p50_ms"]
        e["flops_speedup"] = 1.0 / e["flops_ratio"]
        e["speedup_per_flops"] = e["speedup"] / e["flops_speedup"]
    return {
        "model": name,
        "spec": resolved.name,
        "input_shape": list(resolved.input_shape),
        "config": config,
        "measured": run_meta.describe_run("model")["date"],
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "entries": entries,
    }


def verdict(record: dict[str, Any]) -> str:
    """One line from the numbers: speed-up / FLOPs speed-up of each pruned arm, off-target arms flagged."""
    cells = []
    for arm in ("gp-block+channel", "gp-channel", "tp-groupnorm-global"):
        e = record["entries"].get(arm, {})
        if "speedup_per_flops" not in e:
            cells.append(f"{VERDICT_NAMES[arm]} failed")
            continue
        off = "" if e.get("on_target") else f", off target: FLOPs kept {e['flops_ratio']:.3f}"
        cells.append(f"{VERDICT_NAMES[arm]} {e['speedup_per_flops']:.2f} ({e['speedup']:.2f}x{off})")
    measured = [
        (e["speedup_per_flops"], VERDICT_NAMES[a])
        for a, e in record["entries"].items()
        if a != ORIGINAL and e.get("on_target") and "speedup_per_flops" in e
    ]
    best = f"; best: {max(measured)[1]}" if len(measured) > 1 else ""
    return f"speed-up / FLOPs speed-up {cells[0]} vs {cells[1]} vs {cells[2]}{best}"


def markdown(data: dict[str, Any]) -> str:
    """timm_latency.md: every number from timm_latency.json."""
    meta = data["meta"]
    lines = [
        "# Latency that counts: timm CNNs at -50% FLOPs",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['mode']} mode); "
        f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores, onnxruntime "
        f"{meta['versions']['onnxruntime']}, torch-pruning {meta['versions']['torch-pruning']}, timm "
        f"{data.get('timm', '?')}; load average (1/5/15 min) at start {meta['load_average']}, at the end "
        f"{data.get('load_average_end', '?')}.",
        "Random (seeded) weights; batch 1; simplified ONNX (the project's export path for every arm, "
        "Torch-Pruning included); onnxruntime CPU, intra-op threads as in each heading; p50 over all timed "
        "runs of interleaved rounds (rounds x runs per arm in each heading). graphprune: L1, global, "
        "round_to 8 (block+channel: half the cut from whole blocks); Torch-Pruning: BasePruner, "
        "GroupMagnitudeImportance(p=2), global, round_to 8, the classifier ignored.",
        f"Speed-up = p50 unpruned / p50 arm; FLOPs speed-up = 1 / FLOPs kept; the last column is their ratio "
        f"(1.0 = latency falls as fast as FLOPs). Pruned arms target {KEEP} of the FLOPs: graphprune at most "
        f"{KEEP + TOLERANCE:.2f}, Torch-Pruning's ratio searched into [{KEEP - TOLERANCE:.2f}, "
        f"{KEEP + TOLERANCE:.2f}]; an arm outside is marked off target.",
        "",
    ]
    for record in data["models"]:
        c = record["config"]
        load = record.get("load_average", {})
        lines += [
            f"## {record['model']} at {c['size']}² (measured {record['measured']}; {c['threads']} "
            f"thread(s), {c['rounds']} rounds x {c['runs']} runs; load average {load.get('start')} -> "
            f"{load.get('end')})",
            "",
            "| arm | FLOPs kept | params | p50 ms | p90 ms | speed-up | FLOPs speed-up "
            "| speed-up / FLOPs speed-up |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for arm, e in record["entries"].items():
            label = LABELS.get(arm, arm)
            if "p50_ms" not in e:
                why = e.get("error", "not timed")
                lines.append(f"| {label} | failed: {why} | | | | | | |")
                continue
            off = "" if arm == ORIGINAL or e.get("on_target") else " (off target)"
            lines.append(
                f"| {label} | {e['flops_ratio']:.3f}{off} | {e['params']:,} | {e['p50_ms']:.2f} | "
                f"{e['p90_ms']:.2f} | {e['speedup']:.2f}x | {e['flops_speedup']:.2f}x | "
                f"{e['speedup_per_flops']:.2f} |"
            )
        lines += ["", f"Verdict: {verdict(record)}.", ""]
        tp = record["entries"].get("tp-groupnorm-global", {}).get("notes", {})
        if tp:
            lines += [
                f"Torch-Pruning: pruning ratio {tp.get('pruning_ratio', 0):.3f} after "
                f"{tp.get('trials')} trials"
                + (" (target unreachable)" if tp.get("reachable") is False else "")
                + (f"; first attempt: {tp['first_attempt']}" if "first_attempt" in tp else "")
                + ".",
                "",
            ]
    return "\n".join(lines)


@click.command()
@click.option("--smoke", is_flag=True, help="efficientnet_b0 at 64², 2 rounds x 3 runs (CI).")
@click.option(
    "--models",
    default=None,
    help=f"Comma-separated timm names (default: {','.join(MODELS)}; smoke: efficientnet_b0).",
)
@click.option("--size", type=int, default=None, help="Input side in pixels (default 224; smoke 64).")
@click.option(
    "--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads (and torch's)."
)
@click.option("--rounds", type=int, default=None, help="Interleaved rounds (default 15; smoke 2).")
@click.option("--runs", type=int, default=None, help="Timed runs per arm per round (default 20; smoke 3).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT / "docs" / "results",
    help="Folder for timm_latency.json and .md (default docs/results).",
)
@click.option("--force", is_flag=True, help="Measure again the models already in OUT/timm_latency.json.")
def main(
    smoke: bool,
    models: str | None,
    size: int | None,
    threads: int,
    rounds: int | None,
    runs: int | None,
    out: Path,
    force: bool,
) -> None:
    """Time timm CNNs pruned to -50% FLOPs (graphprune channel, block+channel, Torch-Pruning) with onnxruntime
    and write timm_latency.json and timm_latency.md."""
    if threads < 1:
        raise click.BadParameter("must be >= 1", param_hint="--threads")
    torch.set_num_threads(threads)
    from graphprune.timm_compat import import_timm

    timm = import_timm()
    names = (
        [m.strip() for m in models.split(",") if m.strip()]
        if models
        else (["efficientnet_b0"] if smoke else list(MODELS))
    )
    config = config_of(
        size or (64 if smoke else 224), threads, rounds or (2 if smoke else 15), runs or (3 if smoke else 20)
    )
    json_path = out / "timm_latency.json"
    kept: dict[str, dict[str, Any]] = {}
    if json_path.exists() and not force:
        kept = {
            m["model"]: m
            for m in json.loads(json_path.read_text()).get("models", [])
            if m.get("config") == config
        }
    data: dict[str, Any] = {
        "meta": run_meta.describe_run(
            "smoke" if smoke else "full" if config["size"] == 224 else "reduced size"
        ),
        "timm": timm.__version__,
        "config": {**config, "models": names, "arms": [ORIGINAL, *ARMS], "tolerance": TOLERANCE},
        "models": [],
    }
    for name in names:
        if name in kept:
            click.echo(f"{name}: already in {json_path} with these settings, skipped (--force to redo)")
            record = kept[name]
        else:
            start = time.perf_counter()
            record = run_model(name, config, click.echo)
            record["seconds"] = round(time.perf_counter() - start, 1)
            click.echo(f"{name}: {record['seconds']} s")
        data["models"].append(record)
        data["rows"] = rows(data["models"])
        write_text(json_path, json.dumps(data, indent=1) + "\n")  # after every model: resumable
    data["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_text(json_path, json.dumps(data, indent=1) + "\n")
    write_text(out / "timm_latency.md", markdown(data))
    for record in data["models"]:
        click.echo(f"{record['model']}: {verdict(record)}")
    click.echo(f"wrote {json_path} and timm_latency.md")


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (model, arm, numbers) for the results page's generic layout and quick reading."""
    keys = (
        "flops_ratio",
        "params",
        "p50_ms",
        "speedup",
        "flops_speedup",
        "speedup_per_flops",
        "on_target",
        "error",
    )
    return [
        {"model": r["model"], "arm": arm, **{k: e[k] for k in keys if k in e}}
        for r in records
        for arm, e in r["entries"].items()
    ]


if __name__ == "__main__":
    main()

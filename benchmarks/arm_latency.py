"""The latency of the accuracy suite's finished arms: the models whose top-1 is on the accuracy page.

    python benchmarks/arm_latency.py --model graphprune:cifar_resnet56            # standard, -60%, seed 0
    python benchmarks/arm_latency.py --mode quick --model graphprune:cifar_resnet20 --target 0.6

Every finished arm leaves `final.onnx` in its run folder (accuracy_suite.py, `--work-dir`). An arm that
ran before that file existed is rebuilt where its record pins the architecture: L1 (data-free, so its plan
is recomputed and must give the record's FLOPs exactly) and the learned methods (the blocks and the
kept-channel counts their records list; the FLOPs must match too). Other arms without the file are
listed as not timed. The files are timed with the unpruned original in interleaved
rounds (onnxruntime CPU, 1 thread, batch 1 and 32), on a machine that should be quiet: pause background
runs first (the load average is recorded).

The claim it checks (ABP removes whole blocks, so its claim is latency): ABP's export is faster than
L1's at both batch sizes, their FLOPs within 0.01, and ABP's top-1 within 1.0 point of L1's.
Writes arm_latency.{json,md} under --out (docs/results by default).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import accuracy_suite
import click
import run_meta
import torch

import graphprune as gp
from graphprune import shared
from graphprune.export import export_onnx
from graphprune.fileio import write_text
from graphprune.latency import interleaved_latency
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = "original"
BATCHES = (1, 32)
FLOPS_MATCH = 0.01
TOP1_WITHIN = 1.0


def records(out: Path, mode: str, model: str, reduction: float, seed: int) -> list[dict[str, Any]]:
    """The finished arm records of one cell (the control included), in file order."""
    found = []
    for path in sorted((out / "accuracy_arms" / mode).glob("*.json")):
        r = json.loads(path.read_text())
        if r["model"] != model or r["seed"] != seed or r.get("status") != "ok":
            continue
        if r["reduction"] is None or abs(r["reduction"] - reduction) < 1e-9:
            found.append(r)
    return found


def rebuild(
    record: dict[str, Any], original: torch.nn.Module, x: tuple[torch.Tensor, ...]
) -> torch.nn.Module:
    """The arm's architecture from its record alone (weights do not change latency); ValueError if the
    record does not pin it."""
    pg = gp.trace(original, x)
    arm = accuracy_suite.ARMS.get(record["arm"])
    if arm is not None and arm.kind == "control":
        plan = gp.PruningPlan.for_graph(pg)
    elif arm is not None and arm.method == "l1":
        plan, _ = accuracy_suite.l1_plan(pg, arm, 1.0 - record["reduction"])
    elif arm is not None and arm.method in ("abp", "wgates", "abp+wgates"):
        plan = gp.PruningPlan.for_graph(pg)
        for name in record["notes"].get("removed_blocks", []):
            plan.remove_block(name)
        report = record["notes"].get("method_report", {})
        for gid, kept in kept_counts(report.get("kept_channels", "")).items():
            plan.remove_channels(gid, range(kept, pg.group(gid).size))  # which ones does not change latency
    else:
        raise ValueError("no final.onnx and the record does not pin the architecture")
    slim = gp.apply(pg, plan)
    flops = gp.count_flops(slim, x)
    if flops != record["flops"]:
        raise ValueError(f"rebuilt FLOPs {flops} differ from the record's {record['flops']}")
    return slim


def kept_counts(text: str) -> dict[str, int]:
    """`conv1 9/16, layer1.0.conv1 8/16` (a learned method's report) -> {"conv1": 9, "layer1.0.conv1": 8}."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        gid, counts = item.rsplit(" ", 1)
        out[gid] = int(counts.split("/")[0])
    return out


def claim(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ABP against L1: faster at every batch, FLOPs within FLOPS_MATCH, top-1 within TOP1_WITHIN."""
    abp, l1 = rows.get("abp"), rows.get("l1")
    if not abp or not l1 or "latency" not in abp or "latency" not in l1:
        return {"judged": False, "why": "abp or l1 not timed"}
    ratios = {str(b): abp["latency"][str(b)]["p50_ms"] / l1["latency"][str(b)]["p50_ms"] for b in BATCHES}
    flops_gap = abs(abp["flops_ratio"] - l1["flops_ratio"])
    top1_gap = abp["test_top1"] - l1["test_top1"]
    checks = {
        "faster": all(r < 1.0 for r in ratios.values()),
        "same_flops": flops_gap <= FLOPS_MATCH,
        "top1_within": top1_gap >= -TOP1_WITHIN,
    }
    return {
        "judged": True, "latency_ratio_abp_over_l1": ratios, "flops_gap": flops_gap,
        "top1_abp_minus_l1": top1_gap, **checks, "met": all(checks.values()),
    }  # fmt: skip


def run(
    out: Path, work: Path, mode: str, model: str, reduction: float, seed: int, rounds: int, runs: int
) -> dict:
    cell = records(out, mode, model, reduction, seed)
    if not cell:
        raise click.ClickException(f"no finished arm records for {model} at -{reduction:.0%}, seed {seed}")
    resolved = resolve_model(model)
    weights = cell[0]["weights"]
    original = load_weights(resolved.model, shared.weights_file(weights)).eval()
    x = resolved.example_inputs
    rows: dict[str, dict[str, Any]] = {ORIGINAL: {"arm": ORIGINAL, "flops_ratio": 1.0}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {ORIGINAL: Path(tmp) / "original.onnx"}
        export_onnx(original, x, paths[ORIGINAL])
        for r in cell:
            name = r["arm"]
            row = {k: r[k] for k in ("arm", "kind", "flops_ratio", "params", "test_top1", "val_top1")}
            folder = accuracy_suite.run_folder(work, model, name, r["reduction"], seed)
            final = folder / accuracy_suite.FINAL_ONNX
            if final.is_file():
                paths[name], row["source"] = final, "final.onnx"
            else:
                try:
                    path = Path(tmp) / f"{len(paths)}.onnx"
                    export_onnx(rebuild(r, original, x), x, path)
                    paths[name], row["source"] = path, "rebuilt from the record"
                except (ValueError, KeyError) as exc:
                    row["not_timed"] = str(exc)
            rows[name] = row
        for batch in BATCHES:
            stats = interleaved_latency(paths, (batch, *resolved.input_shape[1:]), rounds=rounds, runs=runs)
            for name, s in stats.items():
                rows[name].setdefault("latency", {})[str(batch)] = {
                    "p50_ms": s["p50_ms"],
                    "p90_ms": s["p90_ms"],
                }
    base = rows[ORIGINAL]["latency"]
    for row in rows.values():
        if "latency" in row:
            row["speedup"] = {b: base[b]["p50_ms"] / row["latency"][b]["p50_ms"] for b in row["latency"]}
    meta = run_meta.describe_run(mode)
    meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return {
        "meta": meta, "model": model, "reduction": reduction, "seed": seed, "rounds": rounds, "runs": runs,
        "rows": list(rows.values()), "claim": claim(rows),
    }  # fmt: skip


def markdown(data: dict[str, Any]) -> str:
    m = data["meta"]
    lines = [
        f"# Latency of the accuracy suite's arms: {data['model']} at −{data['reduction']:.0%} "
        f"({m['mode']} mode, seed {data['seed']})",
        "",
        f"Generated by `{m['command']}` on {m['date']}; load average at start {m['load_average']}, at the "
        f"end {m['load_average_end']}. onnxruntime CPU, 1 thread, p50 over {data['rounds']} interleaved "
        f"rounds × {data['runs']} runs. The models are the arms' own exports (top-1 from their records).",
        "",
        "| arm | FLOPs kept | params | test top-1 | b1 p50 ms | b32 p50 ms | speed-up b1 / b32 | from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if "latency" not in r:
            lines.append(f"| {r['arm']} | {r['flops_ratio']:.3f} | | {r['test_top1']:.2f} | not timed: "
                         f"{r.get('not_timed', '')} | | | |")  # fmt: skip
            continue
        lat, sp = r["latency"], r["speedup"]
        params = f"{r['params']:,}" if "params" in r else ""
        top1 = f"{r['test_top1']:.2f}" if "test_top1" in r else ""
        lines.append(
            f"| {r['arm']} | {r['flops_ratio']:.3f} | {params} | {top1} | {lat['1']['p50_ms']:.2f} | "
            f"{lat['32']['p50_ms']:.2f} | {sp['1']:.2f}x / {sp['32']:.2f}x | {r.get('source', 'baseline')} |"
        )
    c = data["claim"]
    lines.append("")
    if c["judged"]:
        ratio = ", ".join(f"batch {b} {v:.3f}" for b, v in c["latency_ratio_abp_over_l1"].items())
        lines.append(
            f"**ABP against L1: {'met' if c['met'] else 'not met'}.** Latency ABP / L1: {ratio} "
            f"(below 1 = ABP faster); FLOPs apart {c['flops_gap']:.3f} (limit {FLOPS_MATCH}); top-1 ABP − L1 "
            f"{c['top1_abp_minus_l1']:+.2f} (limit −{TOP1_WITHIN})."
        )
    else:
        lines.append(f"ABP against L1: not judged ({c['why']}).")
    return "\n".join(lines) + "\n"


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--mode", default="standard", show_default=True, type=click.Choice(["quick", "standard"]))
@click.option("--model", default="graphprune:cifar_resnet56", show_default=True)
@click.option("--target", "reduction", type=float, default=0.6, show_default=True, help="FLOPs reduction.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The accuracy suite's run folders (default runs/accuracy-<mode>).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
@click.option("--rounds", type=int, default=7, show_default=True)
@click.option("--runs", type=int, default=10, show_default=True)
@click.option("--name", default="arm_latency", show_default=True, help="Output file stem under --out.")
def main(
    mode: str, model: str, reduction: float, seed: int, work_dir: Path | None, out: Path, rounds: int,
    runs: int, name: str,
) -> None:  # fmt: skip
    work = work_dir or Path("runs") / f"accuracy-{mode}"
    data = run(out, work, mode, model, reduction, seed, rounds, runs)
    write_text(out / f"{name}.json", json.dumps(data, indent=1) + "\n")
    write_text(out / f"{name}.md", markdown(data))
    click.echo(f"wrote {out / name}.json and .md: {data['claim']}")


if __name__ == "__main__":
    main()

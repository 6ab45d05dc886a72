"""W-Gates' latency claim: at equal measured latency, the latency budget beats the FLOPs budget and L1.

    python benchmarks/equal_latency.py --smoke              # seconds: a few steps on a few images (CI)
    python benchmarks/equal_latency.py --quick --seed 0     # ResNet-20, the accuracy suite's quick budget

The W-Gates paper claims higher top-1 at lower latency. The arms, each rounded to 8 channels (the CLI's
default) and trained for the accuracy suite's quick budget (160 steps, batch 128, the gate stage a
quarter of it, KD from the baseline, BatchNorm recalibrated before the fine-tune):

- `wgates-latency`: W-Gates under `Budget(target_latency_ratio=--ratio)`, the fitted latency predictor in
  training and measured latency in the repair. Its plan's measured latency is the level the others match.
- `wgates-flops`: W-Gates under a FLOPs budget. The FLOPs target is searched (a gate stage per try)
  until the plan's latency is within a third of --tolerance of the level, and the try nearest it is kept.
- `l1`: the L1 criterion (global, data-free) at the FLOPs target on a grid whose latency is nearest the
  level.

A peer's candidates are timed as the final timing times the finished arms: exported (simplified) as
they are, beside wgates-latency's own export (a candidate's latency is its ratio to it times the level,
so that an error in the level's one measurement does not move the match), from a fresh process, in
interleaved rounds over several passes (`matched_by` in its record). Two earlier rules missed:
- before 2026-12-07 19:00, candidates were timed beside the original, and the final timing put peers up
  to 11% off the level;
- until 2026-12-07 22:10, they were timed in the training process with a shorter protocol, and the peer
  was the candidate with the most FLOPs within the tolerance; the final timing put such peers up to 4%
  off the level.
`--rematch` runs those peers again.

Latency is onnxruntime on the CPU, 1 thread, batch 1, as a ratio to the original timed in alternating
rounds (`paired_plan_ratio`); the machine should be quiet, so pause background runs. At the end the
finished exports of every set and the original are timed again, from a fresh process (a process that has
just trained timed them differently), in interleaved rounds over several passes, and the claim is judged
on those numbers: every arm within the tolerance of wgates-latency, and wgates-latency first on test
top-1 (validation is shown beside it). Each arm's record is written when it finishes
(OUT/equal_latency/<mode>/), and a re-run skips it. Writes equal_latency.{json,md} under --out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import accuracy_suite
import click
import fresh_timing
import run_meta
import torch

import graphprune as gp
from graphprune import shared
from graphprune.efficiency.latency import TERMS, export_plan, paired_plan_ratio
from graphprune.errors import PlanError
from graphprune.fileio import write_text
from graphprune.methods.wgates.repair import BudgetError
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("wgates-latency", "l1", "wgates-flops")  # wgates-flops starts its search at L1's target
ROUND_TO = 8
GATE_SHARE = 0.25  # the accuracy suite's wgates arm
MAX_TRIES = 8  # FLOPs targets wgates-flops may try
AIM = 1 / 3  # wgates-flops' search stops within this share of the tolerance of the level
MATCHED_BY = "nearest the level, timed as the final timing (fresh process, simplified export)"
MODES: dict[str, dict[str, Any]] = {
    "quick": {"suite": "quick", "grid": [round(0.10 + 0.02 * i, 2) for i in range(46)], "rounds": 15,
              "final_rounds": 45, "passes": 5, "latency_samples": 60},
    "smoke": {"suite": "smoke", "grid": [0.3, 0.5, 0.7, 0.9], "rounds": 1, "final_rounds": 1, "passes": 1,
              "latency_samples": 6},
}  # fmt: skip


VARIED = ("span_floor", "calibrate_every", "repair_by", "repair_from")
"""W-Gates options a set may set for both its W-Gates arms (None: the method's default)."""


def variant(options: dict[str, Any]) -> str:
    """The tag of a set by the W-Gates options it sets ("": the method's defaults), e.g. "-floor1-cal0",
    then by the latency predictor's terms where a record names others than the current default (sets
    run with an earlier predictor)."""
    short = {"span_floor": "floor", "calibrate_every": "cal", "repair_by": "by-", "repair_from": "from-"}
    tag = "".join(
        f"-{short[k]}{v:g}" if isinstance(v, (int, float)) else f"-{short[k]}{v}"
        for k in VARIED
        if (v := options.get(k)) is not None
    )
    terms = options.get("latency_terms")
    return tag + (f"-{terms}" if terms not in (None, TERMS[0]) else "")


def record_file(out: Path, mode: str, arm: str, ratio: float, seed: int, tag: str = "") -> Path:
    return out / "equal_latency" / mode / f"{arm}@{ratio:g}{tag}-seed{seed}.json"


def within(ratio: float, level: float, tolerance: float) -> bool:
    return abs(ratio / level - 1.0) <= tolerance


def pick(trials: list[dict[str, Any]], level: float) -> dict[str, Any]:
    """The trial nearest `level`. Aiming at the level, not at the edge of the tolerance, leaves the final
    timing's noise the whole tolerance either side."""
    return min(trials, key=lambda t: abs(t["ratio"] / level - 1))


def plan_key(plan: gp.PruningPlan) -> tuple[Any, ...]:
    """What makes two plans the same model (FLOPs targets a step apart often give one plan)."""
    channels = tuple(sorted((gid, tuple(sorted(idx))) for gid, idx in plan.channels.items() if idx))
    return channels, tuple(sorted(plan.blocks))


def time_beside(
    candidates: dict[float, tuple[gp.PrunableGraph, gp.PruningPlan]], level: float, level_file: Path,
    spec: dict[str, Any], threads: int, folder: Path,
) -> dict[float, float]:  # fmt: skip
    """Per FLOPs target, its candidate's latency over the original's (`level` times its ratio to the level's
    export `level_file`), timed as the final timing times the finished arms: exported (simplified) into
    `folder`, from a fresh process, `spec["passes"]` passes of `spec["final_rounds"]` interleaved rounds.
    Candidates that are the same plan are exported and timed once."""
    from graphprune.export import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    paths, name_of = {"level": str(level_file)}, {}
    for f, (pg, plan) in sorted(candidates.items()):
        key = plan_key(plan)
        if key not in name_of:
            name_of[key] = f"{f:g}"
            path = folder / f"flops-{f:g}.onnx"
            export_onnx(gp.apply(pg, plan).eval(), pg.example_inputs, path)
            paths[name_of[key]] = str(path)
    shape = [list(t.shape) for t in next(iter(candidates.values()))[0].example_inputs]
    timed = fresh_timing.time_fresh(paths, shape, spec["final_rounds"], spec["passes"], threads)
    ratio = {name: level * timed[name]["p10_ms"] / timed["level"]["p10_ms"] for name in paths}
    return {f: ratio[name_of[plan_key(plan)]] for f, (_, plan) in candidates.items()}


def next_target(trials: list[dict[str, Any]], level: float) -> float:
    """The FLOPs target to try next. Once trials lie on both sides of `level`, halfway between the
    largest target below it and the smallest above it (latency is a step function of FLOPs, so a line can
    overshoot far). Before that, from the end of the tried targets nearest the level (the smallest when
    every trial is too slow, the largest when every one is too fast): along the line through the two end
    trials where latency rises with FLOPs between them, else that end's target scaled by level / latency
    (a falling pair, which the steps make common, would send the search away from the level). Clipped to
    [0.05, 0.95]; a target tried already gives the nearest untried one on a 0.01 grid, toward the level
    first."""
    below = [t for t in trials if t["ratio"] < level]
    above = [t for t in trials if t["ratio"] >= level]
    if below and above:
        lo = max(below, key=lambda t: t["target_flops"])["target_flops"]
        hi = min((t for t in above if t["target_flops"] > lo), key=lambda t: t["target_flops"], default=None)
        f = (lo + hi["target_flops"]) / 2 if hi is not None else lo + 0.02
        toward = 1.0
    else:
        toward = 1.0 if below else -1.0  # all too fast: more FLOPs; all too slow: fewer
        ends = sorted(trials, key=lambda t: toward * t["target_flops"], reverse=True)[:2]
        f0, m0 = ends[0]["target_flops"], ends[0]["ratio"]
        f = f0 * level / m0
        if len(ends) == 2:
            f1, m1 = ends[1]["target_flops"], ends[1]["ratio"]
            if (m0 - m1) * (f0 - f1) > 1e-12:  # latency rises with FLOPs between them: follow their line
                f = f0 + (level - m0) * (f1 - f0) / (m1 - m0)
    tried = {round(t["target_flops"], 3) for t in trials}
    f = round(min(0.95, max(0.05, f)), 3)
    for k in range(200):
        for cand in (round(f + toward * 0.01 * k, 3), round(f - toward * 0.01 * k, 3)):
            if 0.05 <= cand <= 0.95 and cand not in tried:
                return cand
    raise RuntimeError("every FLOPs target on the grid was tried")


def wgates(
    model: torch.nn.Module, x: tuple[torch.Tensor, ...], budget: Any, data: Any, cfg: Any, run_dir: Path,
    steps: int, cache: Path, samples: int, threads: int, extra: dict[str, Any],
) -> tuple[gp.PrunableGraph, gp.PruningPlan, dict[str, Any]]:  # fmt: skip
    """W-Gates to `budget`, its gate stage `steps` long: the trained model's graph, its plan, the report."""
    from graphprune.methods import MethodContext, get_method

    options = {"epochs": [accuracy_suite._epochs(steps, data, cfg)], "stage_steps": [steps],
               "round_to": ROUND_TO, "latency_cache": str(cache), "latency_samples": samples,
               "latency_threads": threads, **extra}  # fmt: skip
    ctx = MethodContext(
        model=model, example_inputs=x, pg=gp.trace(model, x), budget=budget, data=data, train_cfg=cfg,
        teacher=model, run_dir=run_dir / "method", resume=True, options=options,
    )  # fmt: skip
    result = get_method("wgates")(ctx)
    report = {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}
    return gp.trace(result.model, x), result.plan, report


def prune_arm(
    arm: str, baseline: torch.nn.Module, x: tuple[torch.Tensor, ...], data: Any, cfg: Any, run_dir: Path,
    level: float | None, ratio: float, tolerance: float, spec: dict[str, Any], gate_steps: int, threads: int,
    work: Path, level_file: Path | None = None,
) -> tuple[torch.nn.Module, Path, dict[str, Any]]:  # fmt: skip
    """The pruned model of `arm`, the folder its fine-tune goes to, and what to record of the pruning
    (`plan_ratio`: its latency over the original's; `level`: wgates-latency's, which the others match,
    timed beside its export `level_file`)."""
    from graphprune.methods import Budget

    pg = gp.trace(baseline, x)
    original = work / "original.onnx"
    if not original.is_file():
        export_plan(pg, gp.PruningPlan.for_graph(pg), original)
    cache = work / "latency"
    extra = {k: spec[k] for k in VARIED if spec.get(k) is not None}
    if arm == "wgates-latency":
        budget = Budget(target_latency_ratio=ratio)
        trained, plan, report = wgates(
            baseline,
            x,
            budget,
            data,
            cfg,
            run_dir,
            gate_steps,
            cache,
            spec["latency_samples"],
            threads,
            extra,
        )
        found = paired_plan_ratio(trained, plan, original, threads=threads, rounds=spec["rounds"])
        return gp.apply(trained, plan), run_dir, {"plan_ratio": found, "method_report": report}
    assert level is not None and level_file is not None
    trials: list[dict[str, Any]] = []
    if arm == "l1":
        plans = {}
        for f in spec["grid"]:
            try:
                plans[f] = gp.criteria.plan_by_criterion(pg, "l1", f, "global", round_to=ROUND_TO)
            except PlanError:  # below what L1 can reach (no group loses more than 90%)
                continue
        timed = time_beside({f: (pg, p) for f, p in plans.items()}, level, level_file, spec, threads,
                            run_dir / "candidates")  # fmt: skip
        trials = [{"target_flops": f, "ratio": r} for f, r in timed.items()]
        best = pick(trials, level)
        notes = {"plan_ratio": best["ratio"], "target_flops": best["target_flops"], "trials": trials,
                 "matched_by": MATCHED_BY}  # fmt: skip
        return gp.apply(pg, plans[best["target_flops"]]), run_dir / f"flops-{best['target_flops']:g}", notes
    # wgates-flops: a gate stage per FLOPs target, until one lands within the tolerance
    tried: dict[float, tuple[gp.PrunableGraph, gp.PruningPlan, Path, dict[str, Any]]] = {}
    f = spec.get("start_flops", 0.4)  # the quick mode's headline cut, unless L1's target is known
    for _ in range(MAX_TRIES):
        folder = run_dir / f"flops-{f:g}"
        try:
            trained, plan, report = wgates(
                baseline, x, Budget(target_flops=f), data, cfg, folder, gate_steps, cache, 0, threads, extra
            )
        except BudgetError:  # below what the method's floors can reach: aim higher
            f = round(min(0.95, f + 0.05), 3)
            continue
        found = time_beside({f: (trained, plan)}, level, level_file, spec, threads, folder / "candidate")[f]
        trials.append({"target_flops": f, "ratio": found})
        tried[f] = (trained, plan, folder, report)
        if within(found, level, AIM * tolerance):
            break
        f = next_target(trials, level)
    if not trials:
        raise RuntimeError(f"wgates-flops reached no FLOPs target in {MAX_TRIES} tries")
    best = pick(trials, level)
    trained, plan, folder, report = tried[best["target_flops"]]
    notes = {"plan_ratio": best["ratio"], "target_flops": best["target_flops"], "trials": trials,
             "method_report": report, "matched_by": MATCHED_BY}  # fmt: skip
    return gp.apply(trained, plan), folder, notes


def run_arm(
    arm: str, seed: int, spec: dict[str, Any], ratio: float, tolerance: float, data: Any, work: Path,
    out: Path, threads: int, device: str,
) -> dict[str, Any]:  # fmt: skip
    """One arm, pruned to its latency level, fine-tuned to the suite's budget and evaluated once."""
    mode = accuracy_suite.MODES[spec["suite"]]
    block = mode.blocks[0]
    resolved = resolve_model(block.model)
    baseline = load_weights(resolved.model, shared.weights_file(block.weights)).eval()
    x = resolved.example_inputs
    cfg = accuracy_suite.train_config(mode, seed, threads, device)
    budget = mode.steps or mode.epochs * (len(data.train) // mode.batch_size)
    gate_steps = max(1, round(GATE_SHARE * budget))
    record: dict[str, Any] = {
        "mode": spec["name"], "model": block.model, "weights": block.weights, "arm": arm, "seed": seed,
        "ratio": ratio, **{k: spec.get(k) for k in VARIED}, "latency_terms": TERMS[0], "tolerance": tolerance,
        "round_to": ROUND_TO, "matched_beside": "wgates-latency's export",
        "threads": threads, "device": device,
        "budget_steps": budget, "gate_steps": gate_steps, "commit": run_meta.versions()["git"],
        "code": run_meta.code_version("graphprune/methods"), "command": run_meta.command_line(),
        "load_average": os.getloadavg()[0],
    }  # fmt: skip
    level, level_file, tag = None, None, variant(spec)
    if arm != "wgates-latency":
        first = record_file(out, spec["name"], "wgates-latency", ratio, seed, tag)
        if not first.is_file():
            raise click.UsageError(f"{arm} matches wgates-latency's latency: run that arm first ({first})")
        leader = json.loads(first.read_text())
        level, level_file = leader["plan_ratio"], Path(leader["final_onnx"])
        if not level_file.is_file():
            raise click.UsageError(
                f"{arm} is timed beside wgates-latency's export, which is gone: {level_file}"
            )
    if arm == "wgates-flops" and (l1 := record_file(out, spec["name"], "l1", ratio, seed, tag)).is_file():
        spec = {**spec, "start_flops": json.loads(l1.read_text())["target_flops"]}  # where L1 met the level
    start = time.perf_counter()
    torch.manual_seed(seed)
    run_dir = work / f"{arm}@{ratio:g}{tag}" / f"seed{seed}"
    slim, tune_dir, notes = prune_arm(
        arm, baseline, x, data, cfg, run_dir, level, ratio, tolerance, spec, gate_steps, threads, work,
        level_file,
    )  # fmt: skip
    slim = slim.cpu().eval()
    record.update(notes, level=level if level is not None else notes["plan_ratio"])
    record.update(flops_ratio=gp.count_flops(slim, x) / gp.count_flops(baseline, x),
                  params=gp.count_params(slim))  # fmt: skip
    record.update(accuracy_suite.finish(slim, baseline, x, data, cfg, tune_dir, budget, mode, seed))
    record["final_onnx"] = str(tune_dir / accuracy_suite.FINAL_ONNX)
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["status"] = "ok"
    return record


def time_finals(
    records: list[dict[str, Any]], original: Path, spec: dict[str, Any], threads: int
) -> dict[str, Any]:
    """The finished exports and the `original` (its ONNX file), timed together in interleaved rounds
    (batch 1), in `spec["passes"]` separate passes: per file the median over passes of each pass's p10_ms."""
    paths = {"original": str(original), **{r["arm"]: r["final_onnx"] for r in records}}
    x = resolve_model(accuracy_suite.MODES[spec["suite"]].blocks[0].model).example_inputs
    shape = [list(t.shape) for t in x]
    return fresh_timing.time_together(paths, shape, spec["final_rounds"], spec["passes"], threads)


def stale(record: dict[str, Any]) -> bool:
    """A peer's record matched by an earlier rule (before candidates were timed as the final timing)."""
    return record.get("arm") != ARMS[0] and record.get("matched_by") != MATCHED_BY


def finished_sets(folder: Path) -> dict[tuple[float, str, int], list[dict[str, Any]]]:
    """The records under `folder` by (latency target, variant tag, seed), where every arm has one, in
    ARMS order."""
    found: dict[tuple[float, str, int], dict[str, dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        found.setdefault((r["ratio"], variant(r), r["seed"]), {})[r["arm"]] = r
    return {key: [arms[a] for a in ARMS] for key, arms in found.items() if set(arms) == set(ARMS)}


def earlier_timing(page: Path, label: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The set `label` as the page at `page` last timed it, for a set whose exports are gone (a work
    folder lost with its machine): kept only where that page's rows are these records' (same arms, FLOPs
    and top-1); raises otherwise, naming the first export that is gone."""
    gone = next(r["final_onnx"] for r in records if not Path(r["final_onnx"]).is_file())
    earlier = json.loads(page.read_text()) if page.is_file() else {}
    entry = earlier.get("sets", {}).get(label)

    def same(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(r["arm"], round(r["flops_ratio"], 6), r["val_top1"], r["test_top1"]) for r in rows]

    if entry is None or same(entry["rows"]) != same(records):
        raise click.ClickException(
            f"the export of a finished arm is gone and {page.name} has no timing of these records: {gone}"
        )
    return {**entry, "timed_by": entry.get("timed_by", earlier["meta"]["commit"]), "reused": True}


def summarise(records: list[dict[str, Any]], timing: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Per arm its latency against wgates-latency's and its top-1; the claim's verdict. Against the level:
    the median over passes of each pass's ratio (the files of one pass share its spells of noise; a ratio
    of the per-file medians does not: on the page of commit d9280a6 it read one peer at 1.213 of the
    level where its passes' median ratio was 1.027), else the ratio of the medians."""
    base = timing["original"]["p10_ms"]
    level = timing["wgates-latency"]["p10_ms"] if "wgates-latency" in timing else None
    rows = []
    for r in records:
        ms = timing[r["arm"]]["p10_ms"]
        passes = timing[r["arm"]].get("pass_p10_ms")
        level_passes = timing.get("wgates-latency", {}).get("pass_p10_ms")
        per_pass = (
            [a / b for a, b in zip(passes, level_passes, strict=True)] if passes and level_passes else None
        )
        vs_level = float(statistics.median(per_pass)) if per_pass else (ms / level if level else None)
        rows.append({
            "arm": r["arm"], "flops_ratio": r["flops_ratio"], "ms": ms, "latency_ratio": ms / base,
            "vs_level": vs_level, "val_top1_bnrecal": r["val_top1_bnrecal"],
            "val_top1": r["val_top1"], "test_top1": r["test_top1"], "vs_level_passes": per_pass,
        })  # fmt: skip
    by = {row["arm"]: row for row in rows}
    verdict: dict[str, Any] = {"complete": set(by) == set(ARMS)}
    if verdict["complete"]:
        others = [by[a] for a in ARMS if a != "wgates-latency"]
        me = by["wgates-latency"]
        verdict.update(
            equal_latency=all(abs(o["vs_level"] - 1) <= tolerance for o in others),
            first_on_val=all(me["val_top1"] > o["val_top1"] for o in others),
            first_on_test=all(me["test_top1"] > o["test_top1"] for o in others),
        )
        verdict["met"] = verdict["equal_latency"] and verdict["first_on_test"]
    return {"original_ms": base, "rows": rows, "verdict": verdict}


def markdown(summaries: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# W-Gates' latency claim: equal measured latency",
        "",
        f"Generated by `{meta['command']}` (commit {meta['commit']}).",
        f"ResNet-20 on CIFAR-10 JPEG, the accuracy suite's {meta['suite']} budget "
        f"({meta['budget_steps']} steps, batch 128), every arm rounded to {ROUND_TO} channels. "
        "Latency: onnxruntime CPU, 1 thread, batch 1, "
        f"the finished exports timed together with the original in {meta['rounds']} interleaved rounds, "
        f"{meta['passes']} passes (per file the median over passes of the 10th percentile of its timed "
        "calls: contention and slow spells only add time). "
        f"Equal latency: within ±{meta['tolerance']:.0%} of wgates-latency's. "
        "The peers are matched to wgates-latency's plan before their fine-tune; the final timing judges. "
        "Against wgates-latency: the median over passes of each pass's ratio; in brackets the lowest and "
        "highest of them, how far one pass's timing moves.",
        "",
    ]
    done = [s["verdict"] for s in summaries.values() if s["verdict"]["complete"]]
    lines += [
        f"**The claim holds in {sum(v['met'] for v in done)} of {len(done)} sets** (target x seed): "
        "every peer within the tolerance of wgates-latency's latency, wgates-latency first on test top-1.",
        "",
    ]
    reused = [s for s in summaries.values() if s.get("reused")]
    if reused:
        lines += [
            f"{len(reused)} of the sets were timed by an earlier run (commit "
            f"{', '.join(sorted({str(s['timed_by']) for s in reused}))}): their exports are gone, so their "
            "rows and verdicts are that run's. Each set's verdict compares arms timed together, never across "
            "runs.",
            "",
        ]
    for r in meta.get("out_of_reach", []):
        options = variant(r)
        lines += [
            f"- Out of reach, so no set: latency target {r['ratio']:g}, seed {r['seed']}"
            + (f" ({options.lstrip('-')})" if options else "")
            + f": {r['error']}",
        ]
    if meta.get("out_of_reach"):
        lines.append("")
    for s in summaries.values():
        lines += [
            f"## Latency target {s['ratio']:g} of the original, seed {s['seed']}"
            + (f", W-Gates' stream floor {s['span_floor']:g}" if s.get("span_floor") is not None else "")
            + (f", calibrate_every {s['calibrate_every']:g}" if s.get("calibrate_every") is not None else "")
            + (f", repair ordered by {s['repair_by']}" if s.get("repair_by") is not None else "")
            + (f", repair from the {s['repair_from']}" if s.get("repair_from") is not None else "")
            + (
                f", predictor terms {s['latency_terms']}"
                if s.get("latency_terms") not in (None, TERMS[0])
                else ""
            )
            + ("" if s.get("matched_beside") else ", peers matched beside the original")
            + (
                f", timed by the run of commit {s['timed_by']} (its exports are gone)"
                if s.get("reused")
                else ""
            )
            + (
                ""
                if s.get("matched_by") or not s.get("matched_beside")
                else ", peers matched by the search's timing alone"
            ),
            "",
            "| arm | FLOPs kept | latency (ms) | vs original | vs wgates-latency | val after BN recal | "
            "final val | test |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s["rows"]:
            vs = f"{r['vs_level']:.3f}" if r["vs_level"] is not None else "-"
            if r.get("vs_level_passes") and r["arm"] != "wgates-latency":
                vs += f" ({min(r['vs_level_passes']):.3f}–{max(r['vs_level_passes']):.3f})"
            lines.append(
                f"| {r['arm']} | {r['flops_ratio']:.3f} | {r['ms']:.3f} | {r['latency_ratio']:.3f} | {vs} | "
                f"{r['val_top1_bnrecal']:.2f} | {r['val_top1']:.2f} | {r['test_top1']:.2f} |"
            )
        v = s["verdict"]
        lines.append("")
        if not v["complete"]:
            lines.append("Not every arm has a record yet.")
        else:
            lines.append(
                f"Equal latency (±{meta['tolerance']:.0%}): {'yes' if v['equal_latency'] else 'no'}; "
                f"wgates-latency first on validation: {'yes' if v['first_on_val'] else 'no'}, on test: "
                f"{'yes' if v['first_on_test'] else 'no'}. Claim **{'met' if v['met'] else 'not met'}**."
            )
        lines.append("")
    return "\n".join(lines)


@click.command()
@click.option("--smoke", "mode_name", flag_value="smoke", help="A few steps on a few images (CI).")
@click.option("--quick", "mode_name", flag_value="quick", default=True,
              help="ResNet-20, the accuracy suite's quick budget (default).")  # fmt: skip
@click.option("--seed", "seeds", type=int, multiple=True, help="Seeds to run (repeatable; default 0).")
@click.option("--ratio", "ratios", type=click.FloatRange(0.05, 1.0), multiple=True,
              help="wgates-latency's target: this share of the original's measured latency (repeatable; "
              "default 0.6).")  # fmt: skip
@click.option("--span-floor", type=click.FloatRange(0.0, 1.0), default=None,
              help="W-Gates' floor on the streams across stages, both W-Gates arms (default: the method's); "
              "a set of its own.")  # fmt: skip
@click.option("--calibrate-every", type=click.IntRange(min=0), default=None,
              help="W-Gates' latency calibration period in steps, both W-Gates arms (default: the method's; "
              "0: off); a set of its own.")  # fmt: skip
@click.option("--repair-by", type=click.Choice(["flops", "predictor", "calibrated"]), default=None,
              help="What orders W-Gates' repair moves, both W-Gates arms (default: the method's; a FLOPs "
              "budget always uses its exact FLOPs); a set of its own.")  # fmt: skip
@click.option("--repair-from", type=click.Choice(["readoff", "floor"]), default=None,
              help="Where W-Gates' repair starts, both W-Gates arms (default: the method's); a set of its "
              "own.")  # fmt: skip
@click.option("--rematch", is_flag=True,
              help="Run again the peers of the chosen sets matched by an earlier rule (before their "
              "candidates were timed as the final timing times them).")  # fmt: skip
@click.option("--tolerance", type=click.FloatRange(0.0, 0.5), default=0.03, show_default=True,
              help="How close (relative) a peer's latency must be to wgates-latency's.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU threads for training and for onnxruntime.")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="Training device (auto: CUDA if present).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results",
    help="Where the records (equal_latency/<mode>/) and equal_latency.{json,md} go (default: docs/results).",
)  # fmt: skip
@click.option(
    "--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Checkpoints and exports (default: a temporary folder for --smoke, runs/equal-latency).",
)  # fmt: skip
def main(
    mode_name: str, seeds: tuple[int, ...], ratios: tuple[float, ...], span_floor: float | None,
    calibrate_every: int | None, repair_by: str | None, repair_from: str | None, rematch: bool,
    tolerance: float, threads: int, device: str, out: Path, work_dir: Path | None,
) -> None:  # fmt: skip
    """Run (or resume) the equal-latency arms, then time every finished set together and write the page."""
    from graphprune.train import load_data

    torch.set_num_threads(threads)
    spec = {
        **MODES[mode_name],
        "name": mode_name,
        "span_floor": span_floor,
        "calibrate_every": calibrate_every,
        "repair_by": repair_by,
        "repair_from": repair_from,
    }
    suite = accuracy_suite.MODES[spec["suite"]]
    with tempfile.TemporaryDirectory() as tmp:
        work = work_dir or (Path(tmp) if mode_name == "smoke" else ROOT / "runs" / "equal-latency")
        data, trained = None, False
        for ratio in ratios or (0.6,):
            for seed in seeds or (0,):
                first = record_file(out, mode_name, ARMS[0], ratio, seed, variant(spec))
                if first.is_file() and json.loads(first.read_text()).get("status") != "ok":
                    continue  # the latency target is out of reach: no level for the peers to match
                for arm in ARMS:
                    path = record_file(out, mode_name, arm, ratio, seed, variant(spec))
                    if path.is_file() and not (rematch and stale(json.loads(path.read_text()))):
                        continue
                    if data is None:
                        data = load_data(
                            "cifar10:", limit=suite.data_limit, val_split=suite.val_images, val_seed=0
                        )
                    trained = True
                    try:
                        rec = run_arm(arm, seed, spec, ratio, tolerance, data, work, out, threads, device)
                    except BudgetError as exc:
                        if arm != ARMS[0]:
                            raise
                        rec = {
                            "arm": arm, "ratio": ratio, "seed": seed, **{k: spec.get(k) for k in VARIED},
                            "latency_terms": TERMS[0], "status": "out of reach", "error": str(exc),
                        }  # fmt: skip
                        write_text(path, json.dumps(rec, indent=1) + "\n")
                        click.echo(f"{path.stem}: {exc}; the set is skipped", file=sys.stderr)
                        break
                    write_text(path, json.dumps(rec, indent=1) + "\n")
                    shown = (
                        f"test top-1 {rec['test_top1']:.2f}, FLOPs {rec['flops_ratio']:.3f}, "
                        f"latency {rec['plan_ratio']:.3f} of the original ({rec['seconds']} s)"
                    )
                    click.echo(f"{path.stem}: {shown}", file=sys.stderr)
        if trained:  # time in a fresh process: after training, this one's timings disagreed with it
            args = [
                f"--{mode_name}",
                "--threads",
                str(threads),
                "--tolerance",
                str(tolerance),
                "--out",
                str(out),
            ]
            child = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], check=False)
            if child.returncode:
                raise click.ClickException(f"timing the finished sets failed (exit {child.returncode})")
            return
        from graphprune.export import export_onnx

        resolved = resolve_model(suite.blocks[0].model)
        original = Path(tmp) / "original.onnx"  # exported as the finished arms were
        export_onnx(resolved.model.eval(), resolved.example_inputs, original)
        name = "equal_latency" if mode_name == "quick" else f"equal_latency_{mode_name}"
        commit = run_meta.versions()["git"]
        summaries = {}
        for (ratio, tag, seed), records in sorted(finished_sets(out / "equal_latency" / mode_name).items()):
            label = f"{ratio:g}{tag}/seed{seed}"
            if not all(Path(r["final_onnx"]).is_file() for r in records):
                summaries[label] = earlier_timing(out / f"{name}.json", label, records)
                continue
            timing = time_finals(records, original, spec, threads)
            summaries[label] = {
                "ratio": ratio, "seed": seed, **{k: records[0].get(k) for k in VARIED},
                "latency_terms": records[0].get("latency_terms"),
                "matched_beside": records[-1].get("matched_beside"),
                "matched_by": records[-1].get("matched_by") if not any(map(stale, records)) else None,
                **summarise(records, timing, tolerance), "timed_by": commit,
            }  # fmt: skip
        meta = {
            "mode": mode_name, "command": run_meta.command_line(), "commit": commit,
            "suite": suite.name, "budget_steps": suite.steps, "rounds": spec["final_rounds"],
            "passes": spec["passes"], "tolerance": tolerance, "load_average": os.getloadavg()[0],
        }  # fmt: skip
        meta["out_of_reach"] = [
            {k: r.get(k) for k in ("ratio", "seed", *VARIED, "latency_terms", "error")}
            for path in sorted((out / "equal_latency" / mode_name).glob(f"{ARMS[0]}@*.json"))
            if (r := json.loads(path.read_text())).get("status") != "ok"
        ]
        write_text(out / f"{name}.json", json.dumps({"meta": meta, "sets": summaries}, indent=1) + "\n")
        write_text(out / f"{name}.md", markdown(summaries, meta) + "\n")
        click.echo(f"wrote {out / name}.json and .md")


if __name__ == "__main__":
    main()

"""The results page and the suites' derived numbers come from the JSON they are given, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import accuracy_verdicts
import latency_suite
import results_page


def _meta(mode: str) -> dict:
    return {
        "command": f"python benchmarks/x.py --{mode}",
        "mode": mode,
        "date": "2026-01-02 03:04 UTC",
        "machine": {"cpu": "TestCPU", "cores": 3, "memory_gib": 1.5, "gpu": None},
        "versions": {"torch": "9.9"},
    }


def _latency(mode: str) -> dict:
    result = {
        "spec": "m",
        "input_shape": [1, 3, 8, 8],
        "entries": {
            "original": {"arm": "original", "reduction": 0.0, "flops": 1000, "params": 10},
            "gp-channel@0.5": {
                "arm": "gp-channel", "reduction": 0.5, "flops": 500, "flops_ratio": 0.5, "params": 5,
            },
            "gp-block+channel@0.5": {
                "arm": "gp-block+channel", "reduction": 0.5, "flops": 495, "flops_ratio": 0.495, "params": 4,
            },
        },
        "timings": [
            {"key": "original", "batch": 1, "threads": 1, "p50_ms": 8.0, "p90_ms": 9.0},
            {"key": "gp-channel@0.5", "batch": 1, "threads": 1, "p50_ms": 6.0, "p90_ms": 7.0},
            {"key": "gp-block+channel@0.5", "batch": 1, "threads": 1, "p50_ms": 4.0, "p90_ms": 5.0},
        ],
    }  # fmt: skip
    rows = latency_suite.derive(result)
    return {"meta": _meta(mode), "models": [result], "rows": rows, "answer": latency_suite.answer(rows)}


def test_latency_rows_are_ratios_of_the_measured_medians() -> None:
    data = _latency("full")
    bc = next(r for r in data["rows"] if r["arm"] == "gp-block+channel")
    assert bc["speedup"] == 8.0 / 4.0
    assert bc["speedup_per_flops"] == 2.0 / (1000 / 495)
    cmp = data["answer"]["block_channel_vs_channel"]
    assert (cmp["cases"], cmp["a_faster"], cmp["median_latency_ratio"]) == (1, 1, 4.0 / 6.0)
    for r in data["rows"]:  # 0.02 apart in FLOPs: not the same budget, not compared
        r["flops_ratio"] = 0.48 if r["arm"] == "gp-block+channel" else r["flops_ratio"]
    cmp = latency_suite.answer(data["rows"])["block_channel_vs_channel"]
    assert (cmp["cases"], cmp["not_compared_flops_differ"]) == (0, 1)


def test_page_shows_the_json_numbers_and_the_run_description(tmp_path: Path) -> None:
    (tmp_path / "latency.json").write_text(json.dumps(_latency("full")))
    (tmp_path / "tool_speed.json").write_text(
        json.dumps({"meta": _meta("full"), "rows": [{"model": "r", "s": 0.25}]})
    )
    text = results_page.page(results_page.load_results(tmp_path), tmp_path)
    assert "2.00x" in text and "TestCPU, 3 cores" in text and "python benchmarks/x.py --full" in text
    assert "| r | 0.25 |" in text
    assert "faster than channel-only in 1 of 1 cases" in text


def test_readme_block_is_replaced_and_smoke_runs_are_not_summarised(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# project\n\ntext\n")
    results_page.update_readme(readme, results_page.summary({"latency.json": _latency("smoke")}))
    once = readme.read_text()
    assert "No full benchmark run" in once and once.count(results_page.BEGIN) == 1
    results_page.update_readme(readme, results_page.summary({"latency.json": _latency("full")}))
    twice = readme.read_text()
    assert twice.count(results_page.BEGIN) == 1 and "No full benchmark run" not in twice
    assert "Latency (m): graphprune block+channel was faster than channel-only in 1 of 1" in twice
    assert twice.startswith("# project\n\ntext\n")


def test_readme_has_a_line_per_suite_including_losses() -> None:
    import test_accuracy_verdicts as tv

    acc = {"meta": _meta("quick"), "verdicts": accuracy_verdicts.verdicts(accuracy_verdicts.rows(tv.ARMS))}
    speed = {"results": [{"model": "r", "ratio_analysis_apply": 0.4, "ratio_with_verify": 1.3}]}
    pred = {"goal_mape_pct": 5.0, "rows": [{"model": "m", "held_out_mape_pct": 7.9, "meets_goal": False}]}
    key = "original_weights_bnrecal"
    rows = [{"arm": "l1", key: 32.88}, {"arm": "wgates", key: 33.36}]
    choice = {"meta": _meta("full"), "model": "r20", "keep": 0.4, "rows": rows}
    claim = {"judged": True, "met": False, "latency_ratio_abp_over_l1": {"1": 0.5, "32": 0.6},
             "flops_gap": 0.004, "top1_abp_minus_l1": -1.5}  # fmt: skip
    timed = {"arm": "abp", "speedup": {"1": 2.5, "32": 3.0}, "flops_ratio": 0.4, "test_top1": 85.0}
    timed["source"] = "final.onnx"
    original = {"arm": "original", "speedup": {"1": 1.0, "32": 1.0}, "flops_ratio": 1.0}
    arm_lat = {"meta": _meta("standard"), "model": "r56", "reduction": 0.6, "seed": 0, "claim": claim,
               "rows": [original, timed]}  # fmt: skip
    found = {"accuracy.json": acc, "tool_speed.json": speed, "predictor_error.json": pred,
             "choice_ablation.json": choice, "arm_latency.json": arm_lat}  # fmt: skip
    lines = results_page.summary(found)
    (acc_line,) = [x for x in lines if x.startswith("Accuracy")]
    assert "learned abp 71.00, L1 l1 70.00, Torch-Pruning tp-groupnorm-global 69.00" in acc_line
    assert "By test alone wgates is first" in acc_line  # validation chose abp
    assert any("no slower on 0 of 1 models" in x for x in lines)
    assert any("m 7.9%" in x and "0 of 1 meet the goal" in x for x in lines)
    assert any("Choice of channels alone (r20 at 0.40" in x and "l1 32.88, wgates 33.36" in x for x in lines)
    (speed,) = [x for x in lines if x.startswith("Speed-up of the accuracy suite's own exports")]
    assert speed.endswith("1 thread): abp 2.50x / 3.00x at 0.400 of the FLOPs (85.00%).")  # no original
    (abp_line,) = [x for x in lines if x.startswith("ABP against L1")]
    assert "not met" in abp_line and "batch 32 0.60" in abp_line and "-1.50" in abp_line


def test_readme_counts_the_methods_issue_targets_met() -> None:
    targets = [
        {"target": "wgates beats l1", "model": "graphprune:cifar_resnet20", "met": False, "seeds": [0]},
        {"target": "abp within 1.0 of l1", "model": "graphprune:cifar_resnet56", "met": None, "seeds": []},
        {"target": "abp+wgates within 1.0", "model": "graphprune:cifar_resnet56", "met": True, "seeds": [0]},
    ]
    (line,) = [x for x in results_page.accuracy_lines({"verdicts": [], "targets": targets}) if "targets" in x]
    assert line.startswith("Methods issue's targets (standard, -60%): 1 of 3 met.")
    assert "wgates beats l1 (cifar_resnet20): NOT met" in line and "not judged yet" in line


def test_readme_shows_each_abp_ranking_on_each_gate() -> None:
    fast = {"vote": 14.48, "mean mark": 14.48, "measured": 25.86}
    row = {"variant": "plain", "max_std": 0.029, "fast": fast}
    marks = {"meta": _meta("full"), "model": "r20", "keep": 0.4, "rows": [row]}
    (line,) = [x for x in results_page.summary({"abp_marks.json": marks}) if x.startswith("ABP's block")]
    assert "plain gate (largest per-sample std 0.029): vote 14.48, mean mark 14.48, measured 25.86" in line


def test_readme_shows_the_clean_split_margins_and_skips_incomplete_cells() -> None:
    def margin(rival: str, m: float) -> dict:
        return {"rival": rival, "margin": m, "se": 0.3}

    full = {"model": "r56", "reduction": 0.6, "seed": 0, "verdict": {
        "best_by_choose": {"learned": "abp+wgates", "l1": "l1", "torch_pruning": "tp-a", "control": "u"},
        "margins_on_judge": {"l1": margin("l1", 1.18), "torch_pruning": margin("tp-a", 0.7)},
        "margins_against_best_on_judge": {"l1": margin("l1", 1.18), "torch_pruning": margin("tp-b", 0.36)},
        "met": True,
    }}  # fmt: skip
    partial = {"model": "r20", "reduction": 0.6, "seed": 0, "verdict": {
        "best_by_choose": {"learned": "abp", "l1": "l1", "torch_pruning": None, "control": None},
        "margins_on_judge": {"l1": margin("l1", -6.7)}, "margins_against_best_on_judge": {}, "met": None,
    }}  # fmt: skip
    lines = results_page.summary({"clean_split.json": {"meta": _meta("standard"), "cells": [full, partial]}})
    clean = [line for line in lines if line.startswith("Clean split")]
    assert len(clean) == 1 and "r56" in clean[0]
    assert "tp-a +0.70 ± 0.30" in clean[0] and "tp-b +0.36" in clean[0]  # the strict reading shown too


def test_the_latency_claim_line_keeps_each_repair_variant_apart() -> None:
    def one(met: bool, top1: float, **options: object) -> dict:
        rows = [{"arm": "wgates-latency", "test_top1": top1}, {"arm": "l1", "test_top1": 70.0}]
        return {"ratio": 0.75, "span_floor": 1.0, "latency_terms": "nchwc", **options,
                "verdict": {"complete": True, "met": met}, "rows": rows}  # fmt: skip

    eq = {
        "meta": {"tolerance": 0.03},
        "sets": {"a": one(True, 80.0), "b": one(False, 76.0, repair_by="calibrated", repair_from="floor"),
                 "c": one(True, 82.0, matched_by="nearest the level")},
    }  # fmt: skip
    [line] = results_page.equal_latency_lines(eq)
    assert "met in 2 of 3 sets" in line
    assert "stream floor 1, peers confirmed at the level: met in 1 of 1 (wgates-latency 82.00" in line
    assert "stream floor 1: met in 1 of 1 (wgates-latency 80.00, l1 70.00)" in line
    assert (
        "stream floor 1, repair by calibrated and repair from floor: met in 0 of 1 (wgates-latency 76.00"
        in line
    )
    assert "timed by an earlier run" not in line
    eq["sets"]["a"]["reused"] = True  # its exports were gone: the page kept an earlier run's timing
    [line] = results_page.equal_latency_lines(eq)
    assert "met in 2 of 3 sets (1 of them timed by an earlier run: their exports are gone)" in line

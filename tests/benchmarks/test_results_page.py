"""The results page and the suites' derived numbers come from the JSON they are given, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import accuracy_suite
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
                "arm": "gp-block+channel", "reduction": 0.5, "flops": 480, "flops_ratio": 0.48, "params": 4,
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
    assert bc["speedup_per_flops"] == 2.0 / (1000 / 480)
    cmp = data["answer"]["block_channel_vs_channel"]
    assert (cmp["cases"], cmp["a_faster"], cmp["median_latency_ratio"]) == (1, 1, 4.0 / 6.0)


def test_pareto_keeps_points_no_other_point_beats() -> None:
    pts = [(0.4, 80.0), (0.5, 79.0), (0.6, 85.0), (0.45, 82.0)]
    assert accuracy_suite.pareto(pts) == [(0.4, 80.0), (0.45, 82.0), (0.6, 85.0)]


def test_accuracy_verdicts_compare_only_arms_that_met_the_budget() -> None:
    def row(arm: str, kept: float, top1: float) -> dict[str, object]:
        return {"arm": arm, "reduction": 0.6, "status": "ok", "flops_ratio": kept, "top1_mean": top1} | {
            "top1_pruned_mean": top1 / 2
        }

    rows = [row("abp", 0.30, 70.0), row("l1", 0.40, 75.0), row("tp-magnitude-layer", 0.505, 81.0)]
    rows.append(row("tp-magnitude-global", 0.39, 68.0))
    text = "\n".join(accuracy_suite.verdicts(rows))
    assert "best graphprune arm l1 75.00%" in text and "tp-magnitude-global 68.00%" in text
    assert "graphprune wins by 7.00 points" in text
    assert (
        "Missed the budget (kept over 0.420 of the FLOPs; not compared): tp-magnitude-layer (0.5050)" in text
    )


def test_accuracy_aggregate_means_over_seeds_and_keeps_unavailable_arms() -> None:
    ok = {"status": "ok", "top1_pruned": 10.0, "flops": 50, "flops_ratio": 0.5, "params": 7}
    ok |= {"latency_ms": 1.0, "latency_ratio": 0.6}
    arms = [
        {"arm": "l1", "reduction": 0.5, "seed": 0, **ok, "top1": 80.0},
        {"arm": "l1", "reduction": 0.5, "seed": 1, **ok, "top1": 84.0},
        {"arm": "abp", "reduction": 0.5, "seed": 0, "status": "not available", "error": "unknown method"},
    ]
    rows = {r["arm"]: r for r in accuracy_suite.aggregate(arms)}
    assert rows["l1"]["top1_mean"] == 82.0 and rows["l1"]["top1_spread"] == 2.0
    assert rows["abp"]["status"] == "not available"


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
    assert "Latency: graphprune block+channel was faster than channel-only in 1 of 1" in twice
    assert twice.startswith("# project\n\ntext\n")


def test_readme_accuracy_line_compares_within_each_budget() -> None:
    def row(arm: str, kept: float, top1: float) -> dict[str, object]:
        return {"arm": arm, "reduction": 0.6, "status": "ok", "flops_ratio": kept, "top1_mean": top1}

    rows = [
        row("l1", 0.40, 75.0),
        row("tp-magnitude-layer", 0.505, 81.0),
        row("tp-magnitude-global", 0.39, 68.0),
    ]
    acc = {"meta": _meta("quick"), "mode": {"model": "m"}, "rows": rows}
    (line,) = [x for x in results_page.summary({"accuracy.json": acc}) if x.startswith("Accuracy")]
    assert line.endswith("-60% 75.00 vs 68.00.")

"""Every benchmark suite runs end to end in its smoke mode, so that the benchmarks never rot.

Each suite writes into a temporary folder (never docs/results). A smoke test fails when any arm of its
suite fails or is missing, or when its script is gone: nothing here turns into a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def run_script(
    script: Path, *args: str | Path, env: dict[str, str] | None = None, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run a benchmark script from the repository root with this checkout's package importable."""
    assert script.is_file(), f"{script} is missing"
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == expect, f"{script.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def latency_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("latency")
    run_script(BENCHMARKS / "latency_suite.py", "--smoke", "--out", out)
    return out


def test_latency_suite_smoke(latency_out: Path) -> None:
    data = json.loads((latency_out / "latency.json").read_text())
    assert data["meta"]["mode"] == "smoke"
    entries = data["models"][0]["entries"]
    assert {e["arm"] for e in entries.values()} == {"original", "gp-channel", "gp-block", "gp-block+channel",
                                                    "tp-groupnorm-global"}  # fmt: skip
    built = [e for e in entries.values() if e["arm"] != "original"]
    assert all("error" not in e for e in built), [e.get("error") for e in built]
    assert all(e["flops"] < entries["original"]["flops"] for e in built)
    assert all(r["p50_ms"] > 0 and r["speedup"] > 0 for r in data["rows"])
    assert (latency_out / "latency.md").is_file() and (latency_out / "latency.png").stat().st_size > 0


def test_accuracy_suite_smoke_runs_every_arm_under_the_rules(tmp_path: Path, shared_dir: Path) -> None:
    import accuracy_suite

    run_script(BENCHMARKS / "accuracy_suite.py", "--smoke", "--strict", "--out", tmp_path)
    data = json.loads((tmp_path / "accuracy.json").read_text())
    mode = accuracy_suite.MODES["smoke"]
    expected = {CONTROL := accuracy_suite.CONTROL, *mode.arms}
    arms = {a["arm"]: a for a in data["arms"]}
    assert set(arms) == expected and all(a["status"] == "ok" for a in arms.values())
    assert {a["total_steps"] for a in arms.values()} == {mode.steps}  # equal budgets, control included
    assert all(a["threads"] >= 1 and a["code"] and a["commit"] for a in arms.values())
    assert all(a["onnx"] == {"file": accuracy_suite.FINAL_ONNX} for a in arms.values())  # for arm_latency.py
    for name, a in arms.items():
        if name != CONTROL:
            assert a["flops_ratio"] <= 0.5 + 0.01 + 1e-9, name
    assert len(arms["abp+wgates"]["stage_steps"]) == 4  # three method stages and the fine-tune
    assert arms["l1-stream"]["notes"]["kept_whole"] == ["conv1", "layer2.0.conv2", "layer3.0.conv2"]
    assert arms["l1"]["notes"]["kept_whole"] == []
    assert "depgraph-sparse" in " ".join(arms["tp-depgraph"]["stage_steps"])
    verdicts = {v["round_to"]: v for v in data["verdicts"]}
    assert verdicts[1]["equal_steps"] and all(verdicts[1]["best"].values())
    again = run_script(BENCHMARKS / "accuracy_suite.py", "--smoke", "--strict", "--out", tmp_path)
    assert again.stdout.count("skipped") == len(arms)  # resumes per arm: all done


def test_accuracy_smoke_fails_when_an_arm_raises(tmp_path: Path, shared_dir: Path) -> None:
    import accuracy_suite

    env = {accuracy_suite.FAIL_ENV: "l1"}
    proc = run_script(
        BENCHMARKS / "accuracy_suite.py", "--smoke", "--strict", "--arm", "l1", "--no-summary",
        "--out", tmp_path, env=env, expect=1,
    )  # fmt: skip
    assert "1 arm(s) not ok" in proc.stderr and "l1@0.5-seed0: failed" in proc.stderr


def test_results_page_from_smoke_results(latency_out: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    run_script(BENCHMARKS / "results_page.py", "--results", latency_out, "--readme", readme)
    page = (latency_out / "README.md").read_text()
    assert "Suite 2: latency" in page and "smoke mode" in page
    assert "No full benchmark run" in readme.read_text()


def test_tool_speed_suite_smoke(tmp_path: Path) -> None:
    run_script(BENCHMARKS / "tool_speed.py", "--smoke", "--out", tmp_path)
    assert list(tmp_path.glob("*.json"))


def test_predictor_error_smoke(tmp_path: Path) -> None:
    run_script(BENCHMARKS / "predictor_error.py", "--smoke", "--out", tmp_path)
    data = json.loads((tmp_path / "predictor_error.json").read_text())
    (row,) = data["rows"]
    assert row["model"] == "graphprune:cifar_resnet20" and row["samples"] == 8
    assert row["held_out"] >= 1 and row["held_out_mape_pct"] >= 0 and row["fit_mape_pct"] >= 0
    assert row["meets_goal"] == (row["held_out_mape_pct"] <= data["goal_mape_pct"])
    assert row["held_out_mape_plain_pct"] >= 0 and row["splits"] == 10  # the first predictor's beside
    assert row["repeated"] == 2 and row["repeat_mape_pct"] >= 0
    assert "held-out MAPE" in (tmp_path / "predictor_error.md").read_text()


def test_choice_ablation_smoke_scores_every_arms_choice_on_the_original_weights(
    tmp_path: Path, shared_dir: Path
) -> None:
    run_script(BENCHMARKS / "choice_ablation.py", "--smoke", "--out", tmp_path)
    data = json.loads((tmp_path / "choice_ablation.json").read_text())
    rows = {r["arm"]: r for r in data["rows"]}
    assert set(rows) == {"l1", "l1-stream", "wgates-prior", "wgates"}
    assert not set(rows["l1-stream"]["kept"]) & {"conv1", "layer2.0.conv2", "layer3.0.conv2"}  # streams whole
    assert all(r["flops_ratio"] <= data["keep"] + 1e-9 for r in rows.values())
    assert all(0 <= r["original_weights_bnrecal"] <= 100 for r in rows.values())
    assert "own_weights_bnrecal" in rows["wgates"] and "own_weights_bnrecal" not in rows["l1"]
    assert "original weights" in (tmp_path / "choice_ablation.md").read_text()


def test_abp_marks_smoke_scores_every_ranking_on_each_gate(tmp_path: Path, shared_dir: Path) -> None:
    import abp_marks

    run_script(BENCHMARKS / "abp_marks.py", "--smoke", "--out", tmp_path)
    data = json.loads((tmp_path / "abp_marks.json").read_text())
    assert [r["variant"] for r in data["rows"]] == list(abp_marks.VARIANTS)
    for row in data["rows"]:
        assert set(row["removed"]) == set(row["fast"]) == set(abp_marks.RANKINGS)
        assert all(0 <= v <= 100 for v in row["fast"].values())
        assert all(row["removed"][k] for k in abp_marks.RANKINGS)  # the budget removes blocks
    assert "mean mark: val top-1" in (tmp_path / "abp_marks.md").read_text()

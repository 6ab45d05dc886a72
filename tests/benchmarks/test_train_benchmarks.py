"""Smoke runs of the training benchmarks (their --smoke modes): they run and write their results pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's graphprune, not an installed one
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_train_throughput_smoke(tmp_path: Path) -> None:
    run_script("train_throughput.py", tmp_path)
    result = json.loads((tmp_path / "train_throughput.json").read_text())
    row = result["rows"][0]
    assert row["model"] == "cifar_resnet20" and row["fit_img_s"] > 0 and row["minimal_img_s"] > 0
    assert row["steps"] == 2 and row["warmup"] == 2 and row["channels_last_img_s"] > 0
    assert row["eval_img_s"] > 0
    assert result["threads"] >= 1 and set(result["load_average"]) == {"start", "end"}
    assert set(result["data_paths_img_s"]) == {"memory", "stream_w0", "stream_w1", "stream_w2"}
    assert all(v > 0 for v in result["data_paths_img_s"].values())
    assert "fit / minimal" in (tmp_path / "train_throughput.md").read_text()


def test_finetune_l1_smoke_and_resume(tmp_path: Path, shared_dir: Path) -> None:
    run_script("finetune_l1.py", tmp_path)
    result = json.loads((tmp_path / "finetune_l1.json").read_text())
    assert set(result["arms"]) == {"pruned_kd", "pruned_ce", "unpruned_ce"}
    assert all(a["steps"] == 2 for a in result["arms"].values())
    assert 0.4 < result["flops_ratio"] <= 0.5
    stored = (tmp_path / "finetune_l1" / "arms" / "pruned_kd.json").read_text()
    run_script("finetune_l1.py", tmp_path)  # every arm is done: nothing is trained again
    assert (tmp_path / "finetune_l1" / "arms" / "pruned_kd.json").read_text() == stored
    assert json.loads((tmp_path / "finetune_l1.json").read_text())["arms"] == result["arms"]

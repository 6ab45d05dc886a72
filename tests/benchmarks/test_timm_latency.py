"""Smoke run of benchmarks/timm_latency.py (efficientnet_b0 at 64²): every arm recorded, on the FLOPs target
rules, timed, and laid out in the markdown table; a second run resumes (the model is not measured again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphprune.errors import ModelSpecError
from graphprune.timm_compat import import_timm

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("unpruned", "gp-channel", "gp-block+channel", "tp-groupnorm-global")


def run_smoke(out: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # this checkout's graphprune
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "timm_latency.py"), "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_timm_latency_smoke(tmp_path: Path) -> None:
    try:
        import_timm()
    except ModelSpecError:
        pytest.skip("timm is not installed")
    run_smoke(tmp_path)
    data = json.loads((tmp_path / "timm_latency.json").read_text())
    assert data["meta"]["mode"] == "smoke" and data["config"]["threads"] == 1
    assert len(data["meta"]["load_average"]) == 3 and len(data["load_average_end"]) == 3
    assert [m["model"] for m in data["models"]] == ["efficientnet_b0"]
    record = data["models"][0]
    assert record["input_shape"] == [1, 3, 64, 64]
    entries = record["entries"]
    assert set(entries) == set(ARMS)
    assert entries["unpruned"]["flops_ratio"] == 1.0 and entries["unpruned"]["speedup"] == 1.0
    for arm in ("gp-channel", "gp-block+channel"):
        e = entries[arm]
        assert "error" not in e, e
        assert 0.0 < e["flops_ratio"] <= 0.5 + 0.01 and e["on_target"]
    tp = entries["tp-groupnorm-global"]
    assert "error" in tp or tp["notes"]["reachable"] is False or tp["flops_ratio"] <= 0.5 + 0.01, tp
    for arm, e in entries.items():
        if "error" in e:
            continue
        assert e["p50_ms"] > 0 and e["p90_ms"] >= e["p50_ms"], (arm, e)
        assert e["flops_speedup"] == pytest.approx(1.0 / e["flops_ratio"])
        assert e["speedup"] == pytest.approx(entries["unpruned"]["p50_ms"] / e["p50_ms"])
        assert e["speedup_per_flops"] == pytest.approx(e["speedup"] / e["flops_speedup"])
    md = (tmp_path / "timm_latency.md").read_text()
    assert "| arm | FLOPs kept | params | p50 ms |" in md
    for label in ("| unpruned |", "| graphprune L1 channel |", "| graphprune L1 block+channel |"):
        assert label in md
    assert "| Torch-Pruning (magnitude, global) |" in md
    verdict = next(line for line in md.splitlines() if line.startswith("Verdict:"))
    bc = entries["gp-block+channel"]["speedup_per_flops"]
    assert f"block+channel {bc:.2f}" in verdict and "channel-only" in verdict and "Torch-Pruning" in verdict

    stdout = run_smoke(tmp_path)  # same settings: the model's record is kept, not measured again
    assert "already in" in stdout
    again = json.loads((tmp_path / "timm_latency.json").read_text())
    assert again["models"][0]["entries"] == entries

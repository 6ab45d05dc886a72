"""The ABP benchmark's --smoke mode runs end to end (a few CIFAR images, two steps per stage)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_mode_writes_every_arm_and_the_latency_comparison(shared_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("abp_cifar", ROOT / "benchmarks" / "abp_cifar.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--smoke", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(bench.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "abp_cifar_smoke.json").read_text())
    arms = summary["arms"]
    assert set(arms) == {"original", "control", "abp-0.6", "l1-0.6"}
    assert arms["abp-0.6"]["flops"] <= 0.6 * arms["original"]["flops"]
    assert arms["abp-0.6"]["flops"] == arms["abp-0.6"]["predicted_flops"]
    assert {(r["baseline"], r["candidate"], r["batch"]) for r in summary["latency"]} >= {
        ("l1-0.6", "abp-0.6", 1),
        ("l1-0.6", "abp-0.6", 32),
    }
    assert (tmp_path / "out" / "abp_cifar_smoke.md").read_text().startswith("# ABP on CIFAR-10 JPEG")
    again = CliRunner().invoke(bench.main, args, catch_exceptions=False)  # every arm stored: all skipped
    assert again.output.count("done before, skipped") == 4

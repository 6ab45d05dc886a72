"""The W-Gates benchmark's --smoke mode runs end to end (a few CIFAR images, two steps per stage)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_mode_writes_every_arm_within_the_budget(shared_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("wgates_cifar", ROOT / "benchmarks" / "wgates_cifar.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--smoke", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(bench.main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    arms = json.loads((tmp_path / "out" / "wgates_cifar_smoke.json").read_text())["arms"]
    assert set(arms) == {"original", "control", "wgates-0.5", "abp+wgates-0.5", "l1-0.5"}
    for arm in ("wgates-0.5", "abp+wgates-0.5", "l1-0.5"):
        assert arms[arm]["flops"] <= 0.5 * arms["original"]["flops"], arm
        assert arms[arm]["latency_ratio"] > 0
    assert arms["wgates-0.5"]["flops"] == arms["wgates-0.5"]["method_report"]["measured_cost"]
    assert arms["abp+wgates-0.5"]["removed_blocks"]
    page = (tmp_path / "out" / "wgates_cifar_smoke.md").read_text()
    assert page.startswith("# W-Gates on CIFAR-10 JPEG")
    again = CliRunner().invoke(bench.main, args, catch_exceptions=False)  # every arm stored: all skipped
    assert again.output.count("done before, skipped") == 5

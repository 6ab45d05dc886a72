"""`graphprune prune --method wgates | abp+wgates` end to end through the CLI on a tiny image folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_abp_cli import _image_folder

from graphprune.cli import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("data"), size=32)  # ResNet-20 takes 32x32


@pytest.mark.parametrize(("method", "epochs"), [("wgates", "1"), ("abp+wgates", "1,1,1")])
def test_prune_with_a_learned_method_meets_the_budget_and_reports_the_gates(
    data: Path, tmp_path: Path, method: str, epochs: str
) -> None:
    out = tmp_path / "run"
    args = [
        "prune", "graphprune:cifar_resnet20", "--method", method, "--target-flops", "0.5",
        "--data", f"imagefolder:{data}", "--epochs", epochs, "--max-steps", "2", "--batch-size", "4",
        "--calib-batches", "1", "--out", str(out),
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["flops"] <= 0.5 * report["original"]["flops"]
    mr = report["method_report"]
    assert mr["measured_cost"] == report["pruned"]["flops"]
    assert mr["kept_channels"] and "over 2 steps" in mr["gate_open_ratio"]
    details = json.loads((out / "wgates.json").read_text())
    assert len(details["open_ratio_history"]) == 2 and details["measured_cost"] == mr["measured_cost"]
    assert "kept_channels" in (out / "report.md").read_text()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["meta"]["method"] == method
    if method == "abp+wgates":
        assert plan["blocks"] and plan["blocks"] == mr["removed_blocks"]
    assert (out / "wgates_open_ratio.png").is_file()

"""Every method runs from the CLI with nothing but the required flags (no --epochs, no method options;
--no-export only skips the ONNX export, which is not under test here)."""

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


@pytest.mark.parametrize("method", ["l1", "bn", "abp", "wgates", "abp+wgates"])
def test_every_method_runs_with_only_the_required_flags(data: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    args = [
        "prune", "graphprune:cifar_resnet20", "--method", method, "--target-flops", "0.5",
        "--data", f"imagefolder:{data}", "--max-steps", "2", "--batch-size", "4", "--no-export",
        "--out", str(out),
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["flops"] <= 0.5 * report["original"]["flops"]
    assert json.loads((out / "plan.json").read_text())["meta"]["method"] == method

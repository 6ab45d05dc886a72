"""`graphprune demo`: the learned pipeline on the shared CIFAR-10 JPEG data, or the Fashion-MNIST fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.tiny_data import write_fashion_mnist

from graphprune import shared
from graphprune.cli import cli
from graphprune.cli import demo as demo_module
from graphprune.train import datasets


def _demo(out: Path, *extra: str) -> dict:
    args = ["demo", "--out", str(out), "--steps", "2", "--train-images", "100", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    report["_stderr"] = " ".join(result.stderr.split())  # rich wraps long lines
    return report


def test_demo_runs_the_learned_pipeline_on_cifar(tmp_path: Path, shared_dir: Path) -> None:
    report = _demo(tmp_path / "demo", "--no-export")
    assert report["model"] == demo_module.CIFAR_MODEL and report["method"] == "abp+wgates"
    assert report["data"].startswith("cifar10:")
    # ABP removed blocks, W-Gates channels, and the plan meets the budget
    assert report["method_report"]["removed_blocks"]
    assert report["pruned"]["flops"] <= 0.5 * report["original"]["flops"] * 1.001
    assert {"top1", "top5"} <= set(report["original"]) and {"top1", "top5"} <= set(report["pruned"])
    assert report["original"]["top1"] > 50  # the trained baseline, evaluated
    md = (tmp_path / "demo" / "report.md").read_text(encoding="utf-8")
    assert "top-1" in md and "Fashion-MNIST" not in report["_stderr"]


def test_demo_falls_back_to_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shared.ENV_VAR, str(tmp_path / "no-shared"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", write_fashion_mnist(tmp_path / "fmnist", 120, 40))
    report = _demo(tmp_path / "demo", "--method", "wgates")
    assert "falling back to Fashion-MNIST" in report["_stderr"]
    assert report["model"] == demo_module.FMNIST_MODEL and report["input_shape"] == [1, 1, 28, 28]
    assert (tmp_path / "demo" / demo_module.BASELINE_FILE).is_file()
    assert (tmp_path / "demo" / "model.onnx").is_file()
    assert report["pruned"]["flops"] <= 0.5 * report["original"]["flops"] * 1.001


def test_demo_without_any_data_names_both_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shared.ENV_VAR, str(tmp_path / "no-shared"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "no-fmnist")
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code != 0
    assert "no-shared" in result.output and "dataset-fashion-mnist" in result.output
    assert not (tmp_path / "demo").exists()

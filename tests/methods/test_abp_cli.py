"""`graphprune prune --method abp` end to end through the CLI on a tiny image folder (one step per stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from graphprune.cli import cli


def _image_folder(root: Path, classes: int = 10, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_prune_method_abp_writes_a_run_with_the_gate_report(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "run"
    args = [
        "prune", "graphprune:cifar_resnet20", "--method", "abp", "--target-flops", "0.7",
        "--data", f"imagefolder:{data}", "--epochs", "1,1,1", "--max-steps", "1", "--batch-size", "4",
        "--calib-batches", "1", "--out", str(out),
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["flops"] <= 0.7 * report["original"]["flops"]
    assert report["pruned"]["flops"] == report["method_report"]["predicted_flops"]
    assert report["method_report"]["removed_blocks"] == json.loads((out / "plan.json").read_text())["blocks"]
    assert report["finetune"]["steps"] == 1  # stage 3 = the pipeline's fine-tune, from --epochs' third entry
    for f in ("model.onnx", "model.safetensors", "metrics.jsonl", "abp_marks.png", "abp.json"):
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "abp_marks.png" in md and "votes over" in md
    stages = {json.loads(line)["stage"] for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert {"abp-1-gates", "abp-2-prune", "finetune"} <= stages

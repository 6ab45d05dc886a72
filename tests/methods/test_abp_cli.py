"""`graphprune prune --method abp` end to end through the CLI on a tiny image folder (one step per stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from graphprune.cli import cli

TINY_RESNET = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(*[Block() for _ in range(4)])
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.layer1(self.stem(x)).mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Net()
"""


def _image_folder(root: Path, classes: int = 10, per_class: int = 2, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 1)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_prune_method_abp_writes_a_run_with_the_gate_report(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data")
    model = tmp_path / "tiny_resnet.py"
    model.write_text(TINY_RESNET)
    out = tmp_path / "run"
    args = [
        "prune", f"{model}:build", "--input-shape", "1,3,16,16", "--method", "abp", "--target-flops", "0.7",
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
    assert {"abp-1-gates", "abp-2-prune/step0", "finetune"} <= stages

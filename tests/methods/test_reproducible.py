"""A learned method decides the same in every process: same seed and threads, same plan and weights,
whatever PYTHONHASHSEED (set and dict order of strings) and torch's unseeded generator say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_abp_cli import _image_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("data"), size=32)


def _prune(data: Path, out: Path, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable, "-m", "graphprune", "prune", "graphprune:cifar_resnet20", "--method", "abp+wgates",
        "--target-flops", "0.5", "--data", f"imagefolder:{data}", "--epochs", "1,1,1",
        "--finetune-epochs", "1", "--max-steps", "2", "--batch-size", "4", "--calib-batches", "1",
        "--threads", "1", "--no-export", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_two_processes_with_other_hash_seeds_agree(data: Path, tmp_path: Path) -> None:
    _prune(data, tmp_path / "a", "1")
    _prune(data, tmp_path / "b", "2")
    assert (tmp_path / "a" / "plan.json").read_text() == (tmp_path / "b" / "plan.json").read_text()
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

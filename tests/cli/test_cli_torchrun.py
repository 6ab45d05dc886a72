"""`torchrun --nproc_per_node 2 -m graphprune finetune` on the CPU (gloo): rank 0 alone prints and writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from train.test_data import write_tree

from graphprune.cli import cli

REPO = Path(__file__).resolve().parents[2]

NET = """
import torch
from torch import nn


def plain():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )


def with_bn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    (root / "net.py").write_text(NET)
    write_tree(root / "tree", per_class=8)
    return root


def _args(root: Path, factory: str, out: Path, *extra: str) -> list[str]:
    return ["finetune", f"{root / 'net.py'}:{factory}", "--input-shape", "1,3,8,8", "--data",
            f"imagefolder:{root / 'tree'}", "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--no-kd",
            "--out", str(out), *extra]  # fmt: skip


def _torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "graphprune", *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_two_ranks_write_once_and_train_as_one_process(setup: Path) -> None:
    out = setup / "ddp"
    done = _torchrun(_args(setup, "plain", out))
    assert done.returncode == 0, done.stderr[-3000:]
    both = done.stdout + done.stderr
    assert both.count(f"wrote {out}/report.md") == 1
    assert both.count("done Exporting the pruned model") == 1 and both.count("done Timing both ONNX") == 1
    assert (out / "model.onnx").is_file() and (out / "report.md").is_file()
    records = (out / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in r for r in records) == 2  # logged by rank 0 alone

    single = setup / "single"
    result = CliRunner().invoke(cli, _args(setup, "plain", single, "--no-export"))
    assert result.exit_code == 0, result.output
    a, b = load_file(out / "model.safetensors"), load_file(single / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_a_batchnorm_net_trains_and_writes_once(setup: Path) -> None:
    out = setup / "bn"
    done = _torchrun(_args(setup, "with_bn", out, "--no-export"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count(f"wrote {out}/report.md") == 1
    assert "1.running_mean" in load_file(out / "model.safetensors")


def test_sync_bn_on_the_cpu_is_one_error_line(setup: Path) -> None:
    result = CliRunner().invoke(cli, _args(setup, "with_bn", setup / "sync", "--sync-bn", "--no-export"))
    assert result.exit_code == 2
    assert "error: --sync-bn needs GPUs" in result.stderr


def test_sync_batchnorm_round_trip_keeps_parameters_and_classes() -> None:
    from graphprune.train.distributed import to_plain_batchnorm, to_sync_batchnorm

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Sequential(torch.nn.BatchNorm1d(4))
    )
    weight, mean = net[1].weight, net[1].running_mean
    assert to_sync_batchnorm(net) == 2
    assert (
        isinstance(net[1], torch.nn.SyncBatchNorm) and net[1].weight is weight and net[1].running_mean is mean
    )
    to_plain_batchnorm(net)
    assert type(net[1]) is torch.nn.BatchNorm2d and type(net[2][0]) is torch.nn.BatchNorm1d
    assert net[1].weight is weight and net[1].running_mean is mean

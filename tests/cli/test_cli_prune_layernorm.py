"""--prune-layernorm end to end: a tiny ConvNeXt-like model whose residual stream goes through LayerNorms
over the channels is pinned without the flag and pruned with it; the run directory records the flag and
reloads, and every report says the pruning is not lossless."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from train.test_data import write_tree

from graphprune.checkpoint import load_run
from graphprune.cli import cli
from graphprune.errors import PlanError

NET = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1 = nn.Linear(c, 4 * c)
        self.pw2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(nn.functional.gelu(self.pw1(self.norm(h)))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.stem_norm = nn.LayerNorm(8)
        self.block = Block(8)
        self.head_norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h = self.block(h)
        return self.head(self.head_norm(h.mean((2, 3))))


def build():
    torch.manual_seed(0)
    return Net()
"""
SHAPE = "1,3,8,8"


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("convnext")
    (root / "net.py").write_text(NET)
    write_tree(root / "tree", per_class=4)
    return {"model": f"{root / 'net.py'}:build", "data": f"imagefolder:{root / 'tree'}"}


def test_inspect_shows_the_stream_pinned_without_the_flag_and_prunable_with_it(tiny: dict[str, str]) -> None:
    plain = run("inspect", tiny["model"], "--input-shape", SHAPE, "--all-groups")
    assert plain.exit_code == 0, plain.output
    assert "--prune-layernorm opts in" in plain.stdout
    opted = run("inspect", tiny["model"], "--input-shape", SHAPE, "--all-groups", "--prune-layernorm")
    assert opted.exit_code == 0, opted.output
    assert "normalises over the channel dim" not in opted.stdout  # no group pinned by a LayerNorm any more
    assert "yes, not lossless" in opted.stdout and "yes, not lossless" not in plain.stdout


def test_prune_without_the_flag_keeps_the_stream_lossless(tiny: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "plain"
    result = run("prune", tiny["model"], "--input-shape", SHAPE, "--method", "l1", "--target-flops", "0.7",
                 "--round-to", "1", "--no-export", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stem" not in json.loads((out / "plan.json").read_text())["channels"]
    report = json.loads((out / "report.json").read_text())
    assert report["lossless"] and report["not_lossless_groups"] == [] and report["lossless_note"] is None
    assert "not lossless" not in result.stdout


def test_prune_pipeline_with_the_flag_prunes_the_stream_and_the_run_reloads(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run("prune", tiny["model"], "--input-shape", SHAPE, "--method", "l1", "--target-flops", "0.7",
                 "--round-to", "1", "--data", tiny["data"], "--no-export", "--prune-layernorm",
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["channels"].get("stem"), plan["channels"]
    assert json.loads((out / "model.json").read_text())["prune_layernorm"] is True
    report = json.loads((out / "report.json").read_text())
    assert not report["lossless"] and report["not_lossless_groups"] == ["stem"]
    assert "not lossless" in result.stdout and "stem" in result.stdout
    assert "Not lossless" in (out / "report.md").read_text()

    loaded = load_run(out)  # model.json says to trace with prune_layernorm, so the plan validates
    kept = 8 - len(plan["channels"]["stem"])
    assert loaded.model.get_submodule("stem").out_channels == kept
    assert loaded.model.get_submodule("stem_norm").normalized_shape == (kept,)
    with torch.no_grad():
        assert loaded.model(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    exported = run("export", out, "--out", tmp_path / "again.onnx")  # from the run directory alone
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "again.onnx").is_file()
    info = json.loads((out / "model.json").read_text())
    (out / "model.json").write_text(json.dumps({**info, "prune_layernorm": False}))
    with pytest.raises(PlanError, match="stem"):  # the record is what makes the plan valid
        load_run(out)

    again = tmp_path / "again"  # apply needs the flag for this plan, and says which group it refuses
    refused = run("apply", tiny["model"], "--plan", out / "plan.json", "--no-export", "--out", again)
    assert refused.exit_code != 0 and "stem" in refused.output and "Traceback" not in refused.output
    applied = run("apply", tiny["model"], "--plan", out / "plan.json", "--no-export", "--prune-layernorm",
                  "--out", again)  # fmt: skip
    assert applied.exit_code == 0, applied.output
    assert json.loads((again / "report.json").read_text())["not_lossless_groups"] == ["stem"]

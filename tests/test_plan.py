from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import graphprune as gp
from graphprune.models import get_model


@pytest.fixture(scope="module")
def pg() -> gp.PrunableGraph:
    return gp.trace(get_model("cifar_resnet20"), torch.randn(1, 3, 32, 32))


def test_json_round_trip_is_exact_and_readable(tmp_path: Path, pg: gp.PrunableGraph) -> None:
    plan = gp.PruningPlan.for_graph(pg).remove_channels("layer1.0.conv1", [7, 3, 3]).remove_block("layer2.2")
    plan.meta["note"] = "hand-made"
    plan.save(tmp_path / "plan.json")
    text = (tmp_path / "plan.json").read_text()
    assert '"layer1.0.conv1": [3, 7]' in text  # one line per group, sorted unique indices
    again = gp.PruningPlan.load(tmp_path / "plan.json")
    assert again == plan
    assert json.loads(text)["format"] == "graphprune.plan"


def test_plan_edited_by_hand_applies(tmp_path: Path, pg: gp.PrunableGraph) -> None:
    d = gp.PruningPlan.for_graph(pg).to_dict()
    d["channels"] = {"layer3.1.conv1": [0, 1, 2]}
    (tmp_path / "p.json").write_text(json.dumps(d))
    slim = gp.apply(pg, gp.PruningPlan.load(tmp_path / "p.json"))
    assert slim.get_submodule("layer3.1.conv1").out_channels == 61


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.remove_channels("layer9.conv1", [0]), "unknown channel group 'layer9.conv1'"),
        (lambda p: p.remove_channels("layer1.0.conv1", [16]), "index 16 is out of range"),
        (lambda p: p.remove_channels("layer1.0.conv1", range(16)), "removes all 16 channels"),
        (lambda p: p.remove_channels("linear", [0]), "not prunable: model output"),
        (lambda p: p.remove_block("layer4.0"), "unknown block 'layer4.0'"),
    ],
)
def test_plans_that_do_not_fit_are_rejected_by_name(pg: gp.PrunableGraph, edit, message: str) -> None:
    plan = gp.PruningPlan.for_graph(pg)
    edit(plan)
    with pytest.raises(gp.PlanError, match=message):
        gp.apply(pg, plan)


def test_architecture_hash_mismatch_is_rejected(pg: gp.PrunableGraph) -> None:
    other = gp.trace(get_model("cifar_resnet32"), torch.randn(1, 3, 32, 32))
    plan = gp.PruningPlan.for_graph(other).remove_channels("layer1.0.conv1", [0])
    with pytest.raises(gp.PlanError, match="plan was made for architecture"):
        plan.validate(pg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "corrupt plan, invalid JSON at line 1"),
        ("[]", "must be a JSON object"),
        ('{"format": "other"}', "not a graphprune plan"),
        ('{"format": "graphprune.plan", "version": 99}', "unsupported plan version 99"),
        (
            '{"format": "graphprune.plan", "version": 1, "channels": {"a": ["x"]}}',
            "must be a list of integers",
        ),
        ('{"format": "graphprune.plan", "version": 1, "channels": {"a": [-1]}}', "negative channel index"),
        ('{"format": "graphprune.plan", "version": 1, "blocks": "layer1.0"}', "'blocks' must be a list"),
    ],
)
def test_corrupt_plan_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(gp.PlanError, match=message) as err:
        gp.PruningPlan.load(path)
    assert str(path) in str(err.value)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(gp.PlanError, match="cannot read plan .*nope.json"):
        gp.PruningPlan.load(tmp_path / "nope.json")

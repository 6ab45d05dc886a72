"""A pruned model is architecture + plan + state_dict: it reloads with weights_only=True, never via pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import graphprune as gp
from graphprune.checkpoint import load_pruned, save_pruned
from graphprune.criteria import plan_by_criterion
from graphprune.models import get_model

X = torch.randn(2, 3, 32, 32)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
    torch.manual_seed(1)
    model = get_model("cifar_resnet20").eval()
    pg = gp.trace(model, X)
    plan = plan_by_criterion(pg, "l1", 0.6).remove_block("layer3.2")
    slim = gp.apply(pg, plan)
    out = tmp_path_factory.mktemp("ck")
    save_pruned(out, slim, plan, pg)
    return model, slim, out


def test_files_are_tensors_and_json_only(pruned: tuple) -> None:
    _, slim, out = pruned
    state = load_file(out / "model.safetensors")
    assert set(state) == set(slim.state_dict())
    assert gp.PruningPlan.load(out / "plan.json").input_shapes == [[2, 3, 32, 32]]


def test_reload_from_pruned_state_dict(pruned: tuple) -> None:
    _, slim, out = pruned
    again = load_pruned(get_model("cifar_resnet20"), out / "plan.json", out / "model.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(X), slim.eval()(X))


def test_reload_from_original_state_dict(pruned: tuple, tmp_path: Path) -> None:
    model, slim, out = pruned
    torch.save(model.state_dict(), tmp_path / "orig.pt")
    again = load_pruned(get_model("cifar_resnet20"), out / "plan.json", tmp_path / "orig.pt")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(X), slim.eval()(X))


def test_state_dict_of_another_model_is_rejected(pruned: tuple, tmp_path: Path) -> None:
    _, _, out = pruned
    torch.save(get_model("cifar_resnet32").state_dict(), tmp_path / "other.pt")
    with pytest.raises(gp.GraphpruneError):
        load_pruned(get_model("cifar_resnet20"), out / "plan.json", tmp_path / "other.pt")


def test_corrupt_weights_file_names_the_file(pruned: tuple, tmp_path: Path) -> None:
    _, _, out = pruned
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(gp.WeightsError, match="bad.pt"):
        load_pruned(get_model("cifar_resnet20"), out / "plan.json", tmp_path / "bad.pt")


def test_unwritable_output_raises_output_error(pruned: tuple, tmp_path: Path) -> None:
    _, slim, _ = pruned
    (tmp_path / "file").write_text("x")
    with pytest.raises(gp.OutputError, match="file"):
        save_pruned(tmp_path / "file" / "sub", slim, gp.PruningPlan())


def test_run_directory_reloads_alone_from_safetensors_or_legacy_pt(pruned: tuple, tmp_path: Path) -> None:
    from graphprune.checkpoint import RunInfo, load_run

    _, slim, out = pruned
    run_dir = tmp_path / "run"
    save_pruned(run_dir, slim, gp.PruningPlan.load(out / "plan.json"))
    RunInfo("graphprune:cifar_resnet20", (2, 3, 32, 32), data="cifar10:", method="l1").save(run_dir)
    loaded = load_run(run_dir)
    assert loaded.info.method == "l1" and loaded.info.input_shape == (2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), slim.eval()(X))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("plan.json", "model.json"):
        (legacy / name).write_bytes((run_dir / name).read_bytes())
    torch.save(slim.state_dict(), legacy / "model.pt")  # what earlier versions wrote
    with torch.no_grad():
        torch.testing.assert_close(load_run(legacy).model(X), slim.eval()(X))


def test_corrupt_safetensors_names_the_file(pruned: tuple, tmp_path: Path) -> None:
    _, _, out = pruned
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(gp.WeightsError, match="bad.safetensors"):
        load_pruned(get_model("cifar_resnet20"), out / "plan.json", tmp_path / "bad.safetensors")

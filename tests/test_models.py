from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.fx

from graphprune.errors import ModelSpecError, WeightsError
from graphprune.models import PadShortcut, default_input_shape, get_model, list_models
from graphprune.shared import load_cifar10_jpeg, normalize_cifar10, weights_file
from graphprune.weights import load_state_dict_file, load_weights

EXPECTED_MODELS = [f"cifar_resnet{d}{s}" for d in (20, 32, 44, 56, 110) for s in ("", "_b")]
EXPECTED_MODELS.append("cifar_mobilenetv2")
INPUT_SHAPES = {name: (1, 3, 32, 32) for name in EXPECTED_MODELS} | {"fmnist_resnet20": (1, 1, 28, 28)}


def test_registry_lists_all_builtins() -> None:
    assert sorted(INPUT_SHAPES) == list_models()


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_builtin_forward_and_trace(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name).eval()
    assert default_input_shape(name) == INPUT_SHAPES[name]
    x = torch.randn(2, *INPUT_SHAPES[name][1:])
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), out)
    assert out.shape == (2, 10)


def test_unknown_model_lists_available() -> None:
    with pytest.raises(ModelSpecError, match="cifar_resnet56"):
        get_model("resnet_nope")
    with pytest.raises(ModelSpecError, match="resnet_nope"):
        default_input_shape("resnet_nope")


def test_num_classes_and_width() -> None:
    assert get_model("cifar_resnet20", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    slim = get_model("cifar_mobilenetv2", width_mult=0.5)
    full = get_model("cifar_mobilenetv2")
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in full.parameters())
    with pytest.raises(ModelSpecError, match="cifar_resnet20"):
        get_model("cifar_resnet20", bogus=1)


def test_option_a_shortcut_is_literal_pad() -> None:
    model = get_model("cifar_resnet20")
    shortcut = model.layer2[0].shortcut
    assert isinstance(shortcut, PadShortcut)
    assert not list(shortcut.parameters())
    x = torch.randn(1, 16, 32, 32)
    expected = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8), "constant", 0)
    torch.testing.assert_close(shortcut(x), expected)
    graph = torch.fx.symbolic_trace(model).graph
    pads = [n.args[1] for n in graph.nodes if n.op == "call_function" and n.target is torch.nn.functional.pad]
    assert pads == [(0, 0, 0, 0, 8, 8), (0, 0, 0, 0, 16, 16)]


def test_option_b_has_projection_shortcuts() -> None:
    keys = get_model("cifar_resnet20_b").state_dict()
    assert "layer2.0.shortcut.0.weight" in keys and "layer3.0.shortcut.1.running_var" in keys
    assert "layer1.0.shortcut.0.weight" not in keys


@pytest.mark.parametrize("depth", [20, 56])
def test_pretrained_option_a_loads_strictly(shared_dir: Path, depth: int) -> None:
    path = weights_file(f"cifar10_resnet{depth}")
    file_state = load_state_dict_file(path)
    model = load_weights(get_model(f"cifar_resnet{depth}"), path, strict=True)
    torch.testing.assert_close(
        model.state_dict()["layer3.0.conv2.weight"], file_state["layer3.0.conv2.weight"]
    )
    assert not any(k.startswith("module.") for k in file_state)


def test_jpeg_finetuned_resnet20_accuracy(shared_dir: Path) -> None:
    images, labels = load_cifar10_jpeg("test", limit=1000)
    assert images.shape == (1000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [100] * 10
    model = load_weights(get_model("cifar_resnet20"), weights_file("cifar10jpeg_resnet20")).eval()
    with torch.no_grad():
        predictions = torch.cat([model(normalize_cifar10(b)).argmax(1) for b in images.split(250)])
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy > 0.80, f"accuracy {accuracy:.4f}"  # measured 0.891 (full test split: 0.8853)


def test_load_cifar10_jpeg_is_deterministic(shared_dir: Path) -> None:
    a, la = load_cifar10_jpeg("test", limit=23)
    b, lb = load_cifar10_jpeg("test", limit=23)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.bincount(la, minlength=10).tolist() == [3, 3, 3] + [2] * 7


def test_corrupt_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.th"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="corrupt.th"):
        load_state_dict_file(bad)
    with pytest.raises(WeightsError, match="corrupt.th"):
        load_weights(get_model("cifar_resnet20"), bad)


def test_truncated_weights_file(tmp_path: Path) -> None:
    good = tmp_path / "good.th"
    torch.save({"state_dict": get_model("cifar_resnet20").state_dict()}, good)
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="truncated.th"):
        load_state_dict_file(truncated)


def test_missing_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="absent.th"):
        load_state_dict_file(tmp_path / "absent.th")
    listed = tmp_path / "listed.th"
    torch.save([1, 2, 3], listed)
    with pytest.raises(WeightsError, match="listed.th.*state dict"):
        load_state_dict_file(listed)


def test_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet32.th"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in get_model("cifar_resnet32").state_dict().items()}}, path
    )
    with pytest.raises(WeightsError, match=r"resnet32\.th.*unexpected layer1\.3\.") as info:
        load_weights(get_model("cifar_resnet20"), path)
    assert "\n" not in str(info.value)
    load_weights(get_model("cifar_resnet20"), path, strict=False)  # the extra blocks are ignored


def test_shape_mismatch_message(tmp_path: Path) -> None:
    state = get_model("cifar_resnet20").state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 16, 3, 3)
    path = tmp_path / "wide.th"
    torch.save(state, path)
    with pytest.raises(
        WeightsError,
        match=r"wide\.th.*layer1\.0\.conv1\.weight: file \(32, 16, 3, 3\) vs model \(16, 16, 3, 3\)",
    ):
        load_weights(get_model("cifar_resnet20"), path, strict=False)


def test_state_dict_argument_is_not_mutated() -> None:
    source = get_model("cifar_resnet20").state_dict()
    state = {f"module.{k}": v.clone() for k, v in source.items() if not k.endswith("num_batches_tracked")}
    before = {k: v.clone() for k, v in state.items()}
    model = load_weights(get_model("cifar_resnet20"), state)
    assert list(state) == list(before)
    for k, v in state.items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(model.state_dict()["linear.weight"], state["module.linear.weight"])
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    assert torch.equal(state["module.linear.weight"], before["module.linear.weight"])

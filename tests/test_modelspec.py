"""resolve_model / parse_input_shape: the three spec kinds and every error naming its culprit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from graphprune.errors import ModelSpecError, WeightsError
from graphprune.modelspec import ResolvedModel, parse_input_shape, resolve_model

FACTORY_FILE = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

def build_tiny():
    return Tiny()

def build_broken():
    raise ValueError("depth must be 6n+2")

def build_number():
    return 42

NOT_CALLABLE = 3
"""


def _one_line_error(exc_info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORY_FILE), encoding="utf-8")
    return path


# --- parse_input_shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["1,3,32,32", " 1, 3, 32, 32 ", "(1,3,32,32)", "[1, 3, 32, 32]", "1x3x32x32"]
)
def test_parse_input_shape_accepts_common_spellings(text: str) -> None:
    assert parse_input_shape(text) == (1, 3, 32, 32)


def test_parse_input_shape_accepts_int_sequences() -> None:
    assert parse_input_shape((2, 3, 8, 8)) == (2, 3, 8, 8)
    assert parse_input_shape([1, 16]) == (1, 16)


@pytest.mark.parametrize("text", ["", "   ", "1,,a", "1,3,-2,2", "1.5,3", "0,3,32,32", "one"])
def test_parse_input_shape_rejects_malformed_text_naming_it(text: str) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        parse_input_shape(text)
    message = _one_line_error(exc_info)
    assert "input shape" in message
    assert repr(text) in message


@pytest.mark.parametrize("shape", [(), (1, 0, 3), (1, 2.5), (True, 3)])
def test_parse_input_shape_rejects_bad_sequences(shape: tuple[object, ...]) -> None:
    with pytest.raises(ModelSpecError, match="input shape"):
        parse_input_shape(shape)  # type: ignore[arg-type]


# --- the three spec kinds --------------------------------------------------------------------


def test_builtin_model_resolves_with_default_shape() -> None:
    rm = resolve_model("graphprune:cifar_resnet20")
    assert isinstance(rm, ResolvedModel)
    assert rm.name == "graphprune:cifar_resnet20"
    assert rm.input_shape == (1, 3, 32, 32)
    assert not rm.model.training
    (x,) = rm.example_inputs
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert rm.model(x).shape == (1, 10)


def test_resolved_model_is_frozen() -> None:
    rm = resolve_model("graphprune:cifar_resnet20")
    with pytest.raises(AttributeError):
        rm.name = "other"  # type: ignore[misc]


def test_resolution_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = resolve_model("graphprune:cifar_resnet20", input_shape="2,3,16,16")
    b = resolve_model("graphprune:cifar_resnet20", input_shape="2,3,16,16")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.input_shape == (2, 3, 16, 16)
    assert torch.equal(a.example_inputs[0], b.example_inputs[0])
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_torchvision_model_resolves_with_224_default() -> None:
    rm = resolve_model("torchvision:resnet18")
    assert rm.name == "torchvision:resnet18"
    assert rm.input_shape == (1, 3, 224, 224)
    assert type(rm.model).__name__ == "ResNet"
    assert not rm.model.training


def test_torchvision_model_takes_explicit_shape_as_tuple() -> None:
    rm = resolve_model("torchvision:resnet18", input_shape=(1, 3, 64, 64))
    assert rm.example_inputs[0].shape == (1, 3, 64, 64)


def test_file_factory_resolves(factory_file: Path) -> None:
    rm = resolve_model(f"{factory_file}:build_tiny", input_shape="1,3,16,16")
    assert rm.name == f"{factory_file}:build_tiny"
    assert type(rm.model).__name__ == "Tiny"
    assert rm.input_shape == (1, 3, 16, 16)
    assert not rm.model.training


def test_file_factory_defaults_to_224_and_can_import_siblings(tmp_path: Path) -> None:
    (tmp_path / "sibling_layers.py").write_text(
        "from torch import nn\nWIDTH = 5\ndef head():\n    return nn.Linear(3, WIDTH)\n",
        encoding="utf-8",
    )
    (tmp_path / "net.py").write_text(
        "from torch import nn\nimport sibling_layers\n"
        "def make():\n"
        "    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), sibling_layers.head())\n",
        encoding="utf-8",
    )
    rm = resolve_model(f"{tmp_path / 'net.py'}:make")
    assert rm.input_shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert rm.model(*rm.example_inputs).shape == (1, 5)


def test_weights_are_loaded(tmp_path: Path) -> None:
    source = resolve_model("graphprune:cifar_resnet20")
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in source.model.state_dict().items()}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    rm = resolve_model("graphprune:cifar_resnet20", weights=str(path))
    loaded = rm.model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not rm.model.training


# --- errors name their culprit ---------------------------------------------------------------


@pytest.mark.parametrize("spec", ["timn:resnet50", "torchvison:resnet50"])
def test_unknown_prefix(spec: str) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(spec)
    message = _one_line_error(exc_info)
    prefix = spec.split(":")[0]
    assert f"unknown model prefix {prefix!r}" in message


def test_unknown_prefix_suggests_close_match() -> None:
    with pytest.raises(ModelSpecError, match="did you mean torchvision"):
        resolve_model("torchvison:resnet50")


@pytest.mark.parametrize("spec", ["resnet50", "graphprune", "graphprune:", "model.py"])
def test_malformed_spec_names_it(spec: str) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(spec)
    assert repr(spec) in _one_line_error(exc_info)


def test_unknown_builtin_suggests_close_matches() -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model("graphprune:cifar_resnet57")
    message = _one_line_error(exc_info)
    assert "'cifar_resnet57'" in message
    assert "did you mean" in message and "cifar_resnet56" in message


def test_unknown_torchvision_model_suggests_close_matches() -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model("torchvision:resnet5")
    message = _one_line_error(exc_info)
    assert "'resnet5'" in message
    assert "resnet50" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "net.py"
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{missing}:build")
    message = _one_line_error(exc_info)
    assert str(missing) in message and "not found" in message


def test_file_without_factory_suggests(factory_file: Path) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{factory_file}:build_tinny")
    message = _one_line_error(exc_info)
    assert str(factory_file) in message
    assert "'build_tinny'" in message
    assert "build_tiny" in message.split("did you mean", 1)[1]


def test_factory_that_is_not_callable(factory_file: Path) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{factory_file}:NOT_CALLABLE")
    assert "NOT_CALLABLE" in _one_line_error(exc_info)


def test_factory_raising_names_the_exception(factory_file: Path) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{factory_file}:build_broken")
    message = _one_line_error(exc_info)
    assert "build_broken" in message
    assert "ValueError: depth must be 6n+2" in message


def test_factory_not_returning_a_module(factory_file: Path) -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{factory_file}:build_number")
    message = _one_line_error(exc_info)
    assert "build_number" in message
    assert "returned int" in message and "nn.Module" in message


def test_file_failing_to_import_names_file_and_exception(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("import torch\nraise ImportError('needs timm\\ninstall it')\n", encoding="utf-8")
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{path}:build")
    message = _one_line_error(exc_info)
    assert str(path) in message and "ImportError: needs timm" in message


def test_file_with_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def build(:\n", encoding="utf-8")
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model(f"{path}:build")
    message = _one_line_error(exc_info)
    assert str(path) in message and "SyntaxError" in message


def test_input_shape_that_does_not_fit_names_shape_and_model() -> None:
    with pytest.raises(ModelSpecError) as exc_info:
        resolve_model("graphprune:cifar_resnet20", input_shape="1,3")
    message = _one_line_error(exc_info)
    assert "input shape 1,3" in message
    assert "graphprune:cifar_resnet20" in message


def test_malformed_shape_is_reported_before_building() -> None:
    with pytest.raises(ModelSpecError, match="malformed input shape '1;3'"):
        resolve_model("graphprune:does_not_matter", input_shape="1;3")


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError) as exc_info:
        resolve_model("graphprune:cifar_resnet20", weights=str(missing))
    assert str(missing) in _one_line_error(exc_info)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(WeightsError) as exc_info:
        resolve_model("graphprune:cifar_resnet20", weights=str(path))
    assert "\n" not in str(exc_info.value)


def test_model_is_a_real_module(factory_file: Path) -> None:
    rm = resolve_model(f"{factory_file}:build_tiny", input_shape="1,3,8,8")
    assert isinstance(rm.model, nn.Module)


def _timm() -> object:
    from graphprune.timm_compat import import_timm

    try:
        return import_timm()
    except ModelSpecError:
        pytest.skip("timm is not installed")


def test_timm_spec_takes_its_input_shape_from_the_pretrained_config() -> None:
    _timm()
    rm = resolve_model("timm:mobilenetv3_small_050")
    assert rm.name == "timm:mobilenetv3_small_050" and rm.input_shape == (1, 3, 224, 224)
    small = resolve_model("timm:mobilenetv3_small_050", input_shape="1,3,64,64")
    assert small.example_inputs[0].shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", ["levit_128s", "efficientformerv2_s0"])
def test_timm_model_with_a_fixed_input_size_is_created_for_the_requested_one(name: str) -> None:
    _timm()
    rm = resolve_model(f"timm:{name}", input_shape="1,3,96,96")  # their attention biases fix the size
    assert rm.model(*rm.example_inputs).shape == (1, 1000)


def test_timm_spec_loads_a_local_checkpoint(tmp_path: Path) -> None:
    timm = _timm()
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("mobilenetv3_small_050")  # type: ignore[attr-defined]
    path = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(path))
    rm = resolve_model("timm:mobilenetv3_small_050", weights=str(path), input_shape="1,3,64,64")
    torch.testing.assert_close(
        rm.model.state_dict()["conv_stem.weight"], source.state_dict()["conv_stem.weight"]
    )
    with pytest.raises(WeightsError, match="not found"):
        resolve_model("timm:mobilenetv3_small_050", weights=str(tmp_path / "missing.pth"))


def test_unknown_timm_model_suggests_names() -> None:
    _timm()
    with pytest.raises(ModelSpecError, match="did you mean efficientnet_b0"):
        resolve_model("timm:efficentnet_b0")


def test_timm_spec_without_timm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ModelSpecError) as info:
        resolve_model("timm:efficientnet_b0")
    assert str(info.value) == "timm is not installed: pip install graphprune[timm]"

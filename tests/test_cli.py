"""End-to-end tests of the `graphprune` command line (click's CliRunner, plus one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from graphprune.cli import cli
from graphprune.cli import inspect as inspect_module
from graphprune.errors import PlanError

MODEL = "graphprune:cifar_resnet20"
OUTPUT_FILES = ("model.safetensors", "plan.json", "model.onnx", "report.json")
COMMANDS = ("inspect", "prune", "finetune", "eval", "apply", "export", "demo")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result: Result, *culprits: str) -> str:
    """Exit 2, one `error: ...` line ending stderr (after progress lines) naming the culprit, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert errors == [lines[-1]], result.stderr
    assert lines[-1].startswith("error: ")
    for culprit in culprits:
        assert culprit in lines[-1]
    return lines[-1]


def load_state(path: Path) -> Any:
    from graphprune.weights import load_state_dict_file

    return load_state_dict_file(path)


def assert_same_tensors(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_tensors(x, y)
    else:
        assert a == b


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """One `graphprune prune` run to 50% FLOPs, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("prune") / "out"
    result = run("prune", MODEL, "--criterion", "l1", "--target-flops", "0.5", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


# --- help, version, entry points -------------------------------------------------------------


def test_group_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    assert "Examples:" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_has_examples(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: graphprune {command}" in result.output
    assert "Examples:" in result.output
    assert f"graphprune {command}" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith("graphprune, version ")


@pytest.mark.parametrize("module", ["graphprune.cli", "graphprune"])
def test_python_dash_m_help_in_a_real_process(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: graphprune" in proc.stdout
    for command in COMMANDS:
        assert command in proc.stdout


def test_usage_errors_keep_click_behaviour() -> None:
    result = run("prune", MODEL, "--target-flops", "0.5", "--out", "x")
    assert result.exit_code == 2
    assert "Usage:" in result.output and "--criterion" in result.output


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_builtin_prints_tables_consistent_with_the_core() -> None:
    import graphprune as gp
    from graphprune.modelspec import resolve_model

    result = run("inspect", MODEL)
    assert result.exit_code == 0, result.output
    for title in ("channel groups", "removable blocks", "layers by FLOPs", "MMACs"):
        assert title in result.stdout
    rm = resolve_model(MODEL)
    pg = gp.trace(rm.model, rm.example_inputs)
    assert f"{pg.flops / 1e6:,.2f}" in result.stdout
    assert f"{pg.params:,}" in result.stdout
    for block in pg.blocks:
        assert block.name in result.stdout


def test_inspect_all_groups_lists_every_group() -> None:
    import graphprune as gp
    from graphprune.modelspec import resolve_model

    rm = resolve_model(MODEL)
    pg = gp.trace(rm.model, rm.example_inputs)
    result = run("inspect", MODEL, "--all-groups")
    assert result.exit_code == 0, result.output
    assert "more groups" not in result.stdout
    for group in pg.groups:
        assert str(group.id) in result.stdout
    if len(pg.groups) > inspect_module.DEFAULT_GROUP_ROWS:
        default = run("inspect", MODEL)
        assert "more groups" in default.stdout


def test_inspect_file_factory(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    path.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))\n",
        encoding="utf-8",
    )
    result = run("inspect", f"{path}:build", "--input-shape", "1,3,16,16", "--top", "2")
    assert result.exit_code == 0, result.output
    assert "top 2 layers by FLOPs" in result.stdout
    assert "Conv2d" in result.stdout


# --- prune / apply / export ------------------------------------------------------------------


def test_prune_writes_the_four_files(pruned_dir: tuple[Path, Result]) -> None:
    out, result = pruned_dir
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    for row in ("FLOPs (MMACs)", "params", "ONNX nodes", "max abs error"):
        assert row in result.stdout


def test_prune_onnx_is_a_valid_model(pruned_dir: tuple[Path, Result]) -> None:
    import onnx

    out, _ = pruned_dir
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    assert len(model.graph.node) > 0


def test_prune_report_ratios_are_consistent(pruned_dir: tuple[Path, Result]) -> None:
    out, _ = pruned_dir
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    original, pruned = report["original"], report["pruned"]
    assert report["model"] == MODEL
    assert report["input_shape"] == [1, 3, 32, 32]
    assert 0 < pruned["flops"] <= 0.55 * original["flops"]
    assert 0 < pruned["params"] < original["params"]
    assert report["ratios"]["flops"] == pytest.approx(pruned["flops"] / original["flops"])
    assert report["ratios"]["params"] == pytest.approx(pruned["params"] / original["params"])
    assert report["plan"]["criterion"] == "l1"
    assert report["plan"]["target_flops"] == 0.5
    assert report["export"] is not None
    assert pruned["onnx_nodes"] == report["export"]["nodes"]
    assert report["export"]["max_abs_error"] < 1e-3


def test_prune_outputs_reload_to_the_reported_model(pruned_dir: tuple[Path, Result]) -> None:
    import graphprune as gp
    from graphprune.modelspec import resolve_model

    out, _ = pruned_dir
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rm = resolve_model(MODEL)
    slim = gp.checkpoint.load_pruned(
        rm.model, str(out / "plan.json"), str(out / "model.safetensors"), rm.example_inputs
    )
    assert gp.count_flops(slim, rm.example_inputs) == report["pruned"]["flops"]
    assert gp.count_params(slim) == report["pruned"]["params"]


def test_apply_with_the_saved_plan_reproduces_the_state_dict(
    pruned_dir: tuple[Path, Result], tmp_path: Path
) -> None:
    out, _ = pruned_dir
    again = tmp_path / "again"
    again.mkdir()
    (again / "model.onnx").write_text("stale export from an earlier run", encoding="utf-8")
    result = run("apply", MODEL, "--plan", out / "plan.json", "--out", again, "--no-export")
    assert result.exit_code == 0, result.output
    assert (again / "model.safetensors").is_file() and (again / "plan.json").is_file()
    assert (again / "report.json").is_file() and not (again / "model.onnx").exists()
    assert_same_tensors(load_state(out / "model.safetensors"), load_state(again / "model.safetensors"))
    first = json.loads((out / "report.json").read_text(encoding="utf-8"))
    second = json.loads((again / "report.json").read_text(encoding="utf-8"))
    assert second["pruned"]["flops"] == first["pruned"]["flops"]
    assert second["export"] is None


def test_export_with_plan_writes_onnx(pruned_dir: tuple[Path, Result], tmp_path: Path) -> None:
    out, _ = pruned_dir
    target = tmp_path / "sub" / "pruned.onnx"
    result = run("export", MODEL, "--plan", out / "plan.json", "--out", target)
    assert result.exit_code == 0, result.output
    assert target.is_file()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert f"{report['export']['flops']:,}" in result.stdout  # same pruned model as `prune` wrote


def test_export_without_plan(tmp_path: Path) -> None:
    target = tmp_path / "r20.onnx"
    result = run("export", MODEL, "--out", target)
    assert result.exit_code == 0, result.output
    assert target.is_file()
    assert "nodes" in result.stdout


# --- errors: one line, exit 2, no traceback --------------------------------------------------


def test_bad_model_name(tmp_path: Path) -> None:
    result = run("prune", "graphprune:cifar_resnet21", "--criterion", "l1", "--target-flops", "0.5",
                 "--out", tmp_path / "o")  # fmt: skip
    assert_one_line_error(result, "cifar_resnet21", "did you mean")


def test_unknown_prefix() -> None:
    assert_one_line_error(run("inspect", "keras:resnet50"), "'keras'")


@pytest.mark.parametrize("shape", ["1,3", "1,3,4,4,4"])
def test_input_shape_that_does_not_fit(shape: str) -> None:
    assert_one_line_error(run("inspect", MODEL, "--input-shape", shape), f"input shape {shape}")


def test_malformed_input_shape(tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = run("prune", MODEL, "--criterion", "l1", "--target-flops", "0.5", "--input-shape", "1,three",
                 "--out", out)  # fmt: skip
    assert_one_line_error(result, "'1,three'")
    assert not out.exists()


def test_corrupt_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "ops": [', encoding="utf-8")
    assert_one_line_error(
        run("apply", MODEL, "--plan", plan, "--out", tmp_path / "o"), str(plan), "invalid JSON"
    )


def test_plan_that_is_not_a_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('["not", "a", "plan"]', encoding="utf-8")
    assert_one_line_error(
        run("apply", MODEL, "--plan", plan, "--out", tmp_path / "o"), str(plan), "JSON object"
    )


@pytest.mark.parametrize("meta", ['"a string"', "[1, 2]", "3"])
def test_plan_whose_meta_is_not_an_object(tmp_path: Path, meta: str) -> None:
    from graphprune.plan import FORMAT, VERSION

    plan = tmp_path / "plan.json"
    plan.write_text(f'{{"format": "{FORMAT}", "version": {VERSION}, "meta": {meta}}}', encoding="utf-8")
    result = run("apply", MODEL, "--plan", plan, "--out", tmp_path / "o")
    assert_one_line_error(result, str(plan), "'meta' must be a JSON object")


def test_plan_for_another_architecture(pruned_dir: tuple[Path, Result], tmp_path: Path) -> None:
    out, _ = pruned_dir
    result = run("apply", "graphprune:cifar_resnet32", "--plan", out / "plan.json", "--out", tmp_path / "o",
                 "--no-export")  # fmt: skip
    assert_one_line_error(result, "plan was made for architecture")


def test_missing_plan_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert_one_line_error(run("apply", MODEL, "--plan", missing, "--out", tmp_path / "o"), str(missing))


def test_corrupt_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"PK\x03\x04 definitely not a checkpoint" * 8)
    assert_one_line_error(run("inspect", MODEL, "--weights", weights), f"cannot read weights file {weights}")


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("echo graphprune-test-should-never-print",)


def test_weights_file_that_would_run_code_names_the_blocked_global(tmp_path: Path) -> None:
    weights = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _RunsCode()}, weights)
    line = assert_one_line_error(run("inspect", MODEL, "--weights", weights), str(weights), ".system")
    assert "weights_only" not in line


def test_weights_for_another_architecture(tmp_path: Path) -> None:
    from graphprune.modelspec import resolve_model

    weights = tmp_path / "r56.pt"
    torch.save(resolve_model("graphprune:cifar_resnet56").model.state_dict(), weights)
    line = assert_one_line_error(run("inspect", MODEL, "--weights", weights), str(weights), "does not fit")
    assert "unexpected layer" in line  # names the first keys resnet20 lacks


def test_unwritable_out_dir_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    out = blocker / "out"
    result = run("prune", MODEL, "--criterion", "l1", "--target-flops", "0.5", "--out", out)
    assert_one_line_error(result, str(out))
    assert "Building" not in result.stderr


def test_out_dir_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("x", encoding="utf-8")
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    assert_one_line_error(run("apply", MODEL, "--plan", plan, "--out", out), str(out))


def test_export_to_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    assert_one_line_error(run("export", MODEL, "--out", blocker / "m.onnx"), str(blocker))


def test_multi_line_error_messages_are_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise PlanError("first line\n  second line")

    monkeypatch.setattr("graphprune.cli.inspect.resolve", fail)
    line = assert_one_line_error(run("inspect", MODEL))
    assert line == "error: first line second line"


def test_keyboard_interrupt_exits_130_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("graphprune.cli.inspect.resolve", interrupt)
    result = run("inspect", MODEL)
    assert result.exit_code == 130
    assert "Aborted" not in result.output and "Traceback" not in result.output


def test_unexpected_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*_: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("graphprune.cli.inspect.resolve", bug)
    result = run("inspect", MODEL)
    assert result.exit_code == 1
    assert isinstance(result.exception, ZeroDivisionError)


UNTRACEABLE = """
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        return x if x.mean() > 0 else -x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate, self.head = nn.Conv2d(3, 8, 3), Gate(), nn.Conv2d(8, 8, 3)

    def forward(self, x):
        return self.head(self.gate(self.conv(x))).mean((2, 3))


def build():
    return Net()
"""


def test_untraceable_module_is_named_and_leaf_module_option_fixes_it(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(UNTRACEABLE)
    spec = f"{tmp_path / 'net.py'}:build"
    assert_one_line_error(run("inspect", spec, "--input-shape", "1,3,16,16"), "'gate'", "--leaf-module gate")
    ok = run("inspect", spec, "--input-shape", "1,3,16,16", "--leaf-module", "gate", "--all-groups")
    assert ok.exit_code == 0, ok.output
    assert "no channel rule for Gate 'gate'" in ok.output


# --- leaf modules, own outputs, atomic output sets, export messages --------------------------

EXPORTABLE_LEAF = """
from torch import nn


class Gate(nn.Module):
    def forward(self, x):  # torch.fx cannot branch on x.dim(); torch.export can
        return x.relu() if x.dim() == 4 else x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.gate = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), Gate()
        self.head = nn.Conv2d(16, 8, 3)

    def forward(self, x):
        return self.head(self.gate(self.conv(self.stem(x).relu()))).mean((2, 3))


def build():
    return Net()
"""

EVEN_BATCHES_ONLY = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 8, 3)

    def forward(self, x):
        return self.conv(self.stem(x).relu()).mean((2, 3)).reshape(-1, 2, 8).sum(1)


def build():
    return Net()
"""


def test_leaf_module_survives_flops_counting_and_export(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(EXPORTABLE_LEAF, encoding="utf-8")
    spec, out = f"{tmp_path / 'net.py'}:build", tmp_path / "out"
    leaf = ("--input-shape", "1,3,16,16", "--leaf-module", "gate")
    result = run("prune", spec, *leaf, "--criterion", "l1", "--target-flops", "0.7", "--round-to", "1",
                 "--out", out, "--no-export")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["pruned"]["flops"] < report["original"]["flops"]

    exported = tmp_path / "onnx"
    result = run("export", spec, *leaf, "--plan", out / "plan.json", "--weights", out / "model.safetensors",
                 "--out", f"{exported}/")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (exported / "model.onnx").is_file()
    assert f"{report['pruned']['flops']:,}" in result.stdout


def test_apply_takes_the_pruned_weights_prune_wrote(pruned_dir: tuple[Path, Result], tmp_path: Path) -> None:
    out, _ = pruned_dir
    again = tmp_path / "again"
    result = run("apply", MODEL, "--weights", out / "model.safetensors", "--plan", out / "plan.json",
                 "--out", again, "--no-export")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert_same_tensors(load_state(out / "model.safetensors"), load_state(again / "model.safetensors"))


def test_export_takes_prunes_output_into_an_existing_directory(
    pruned_dir: tuple[Path, Result], tmp_path: Path
) -> None:
    import graphprune as gp
    from graphprune.export import run_onnx
    from graphprune.modelspec import resolve_model

    out, _ = pruned_dir
    result = run(
        "export", MODEL, "--weights", out / "model.safetensors", "--plan", out / "plan.json",
        "--out", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rm = resolve_model(MODEL)
    weights = out / "model.safetensors"
    slim = gp.checkpoint.load_pruned(rm.model, out / "plan.json", weights, rm.example_inputs)
    x = torch.randn(2, 3, 32, 32)
    (got,) = run_onnx(tmp_path / "model.onnx", (x.numpy(),))
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), slim(x), atol=1e-4, rtol=1e-3)


def test_weights_that_fit_neither_model_are_named(pruned_dir: tuple[Path, Result], tmp_path: Path) -> None:
    from graphprune.modelspec import resolve_model

    out, _ = pruned_dir
    weights = tmp_path / "r32.pt"
    torch.save(resolve_model("graphprune:cifar_resnet32").model.state_dict(), weights)
    result = run("apply", MODEL, "--weights", weights, "--plan", out / "plan.json", "--out", tmp_path / "o")
    line = assert_one_line_error(result, f"weights file {weights} fits neither {MODEL} (unexpected layer")
    assert "pruned by the plan (" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_run_leaves_the_previous_output_set(
    pruned_dir: tuple[Path, Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    from graphprune.cli import pipeline

    out, _ = pruned_dir
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        for name in OUTPUT_FILES:
            (target / name).write_bytes((out / name).read_bytes())
    before = {p.name: p.read_bytes() for p in target.iterdir()} if existing else {}

    def late_failure(*_: object) -> None:  # after model.safetensors and plan.json are written
        raise PlanError("late failure")

    monkeypatch.setattr(pipeline, "_report", late_failure)
    result = run("apply", MODEL, "--plan", out / "plan.json", "--out", target, "--no-export")
    assert_one_line_error(result, "late failure")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_export_errors_name_the_user_files_and_options(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(EVEN_BATCHES_ONLY, encoding="utf-8")
    spec = f"{tmp_path / 'net.py'}:build"
    result = run("prune", spec, "--input-shape", "2,3,16,16", "--criterion", "l1", "--target-flops", "0.7",
                 "--round-to", "1", "--out", tmp_path / "out")  # fmt: skip
    line = assert_one_line_error(result, f"the ONNX export of the original {spec}", "--static-batch")
    assert "original.onnx" not in line and "graphprune-" not in line
    assert not (tmp_path / "out").exists()

    result = run("export", spec, "--input-shape", "2,3,16,16", "--static-batch", "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").is_file()


def test_a_failing_onnxsim_pass_is_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxsim

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("onnxsim exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    result = run("export", MODEL, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())  # rich wraps long lines
    assert "m.onnx is not simplified" in stderr and "onnxsim failed: RuntimeError: onnxsim exploded" in stderr

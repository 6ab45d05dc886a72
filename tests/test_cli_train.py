"""`graphprune finetune`, `eval` and `prune --data` end to end on a tiny model and dataset (seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from train.test_data import write_tree

from graphprune.checkpoint import load_run
from graphprune.cli import cli
from graphprune.train import evaluate, load_data
from graphprune.train.evaluate import evaluate_onnx

NET = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
"""


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    (root / "net.py").write_text(NET)
    write_tree(root / "tree", per_class=8)
    return {"model": f"{root / 'net.py'}:build", "data": f"imagefolder:{root / 'tree'}", "root": str(root)}


def test_prune_finetune_then_eval_from_the_run_directory(tiny: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(
        "prune", tiny["model"], "--input-shape", "1,3,8,8", "--method", "l1", "--target-flops", "0.5",
        "--round-to", "1", "--data", tiny["data"], "--finetune-epochs", "2", "--batch-size", "8",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("plan.json", "model.safetensors", "model.json", "model.onnx", "metrics.jsonl", "report.md",
                 "report.json", "training_curves.png", "kept_channels.png"):  # fmt: skip
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["flops"] < report["original"]["flops"]
    assert report["finetune"]["steps"] == 6 and len(report["finetune"]["history"]) == 2
    md = (out / "report.md").read_text()
    assert f"{report['pruned']['top1']:.2f}%" in md and "training_curves.png" in md

    loaded = load_run(out)  # the run directory alone rebuilds the fine-tuned pruned model
    data = load_data(tiny["data"])
    assert evaluate(loaded.model, data).top1 == pytest.approx(report["pruned"]["top1"])
    onnx_result = evaluate_onnx(out / "model.onnx", data)
    assert abs(onnx_result.top1 - report["pruned"]["top1"]) <= 0.1

    shown = run("eval", out, "--onnx", out / "model.onnx")
    assert shown.exit_code == 0, shown.output
    assert f"{report['pruned']['top1']:.2f}" in shown.stdout and "onnxruntime top-1" in shown.stdout

    exported = run("export", out, "--out", tmp_path / "again.onnx")  # from the run directory alone
    assert exported.exit_code == 0, exported.output
    assert abs(evaluate_onnx(tmp_path / "again.onnx", data).top1 - report["pruned"]["top1"]) <= 0.1

    again = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--plan", out / "plan.json",
                "--data", tiny["data"], "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
                "--no-export", "--out", tmp_path / "ft")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "ft" / "report.json").read_text())["finetune"]["steps"] == 2


def test_eval_rejects_a_class_count_mismatch(tiny: dict[str, str]) -> None:
    result = run("eval", "graphprune:cifar_resnet20", "--data", tiny["data"])
    assert result.exit_code == 2
    assert (
        "error: imagefolder:" in result.stderr
        and "has 3 classes but graphprune:cifar_resnet20 has 10" in result.stderr
    )


def test_onnx_eval_disagreeing_with_pytorch_is_an_error(
    tiny: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graphprune.export import export_onnx
    from graphprune.modelspec import resolve_model
    from graphprune.train import EvalResult

    evaluate_module = sys.modules["graphprune.train.evaluate"]  # the module, not the function of that name

    rm = resolve_model(tiny["model"], input_shape=(1, 3, 8, 8))
    export_onnx(rm.model, rm.example_inputs, tmp_path / "net.onnx")
    truth = evaluate(rm.model, load_data(tiny["data"]))
    off = EvalResult(top1=truth.top1 + 0.2, top5=truth.top5, loss=truth.loss, n=truth.n)
    monkeypatch.setattr(evaluate_module, "evaluate_onnx", lambda *a, **k: off)
    result = run("eval", tiny["model"], "--input-shape", "1,3,8,8", "--data", tiny["data"],
                 "--onnx", tmp_path / "net.onnx")  # fmt: skip
    assert result.exit_code == 2 and "differs from PyTorch" in result.stderr


def test_a_pruned_run_is_fine_tuned_twice_each_continuing_from_the_last(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    from graphprune.checkpoint import RunInfo, file_sha256
    from graphprune.modelspec import resolve_model

    torch = pytest.importorskip("torch")
    weights = tmp_path / "orig.pt"  # the original's own weights: the teacher
    torch.save(resolve_model(tiny["model"], input_shape=(1, 3, 8, 8)).model.state_dict(), weights)
    first = tmp_path / "pr"
    result = run(
        "prune", tiny["model"], "--weights", weights, "--input-shape", "1,3,8,8", "--method", "l1",
        "--target-flops", "0.5", "--round-to", "1", "--data", tiny["data"], "--finetune-epochs", "1",
        "--batch-size", "8", "--no-export", "--out", first,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = RunInfo.load(first)
    assert info.teacher is not None and info.teacher.model == tiny["model"]
    assert info.teacher.weights == str(weights.resolve()) and info.teacher.sha256 == file_sha256(weights)

    previous = first
    for name in ("ft1", "ft2"):
        out = tmp_path / name
        before = load_run(previous).model.state_dict()
        cont = run("finetune", previous, "--epochs", "1", "--batch-size", "8", "--no-export", "--out", out)
        assert cont.exit_code == 0, cont.output
        report = json.loads((out / "report.json").read_text())
        assert report["finetune"]["steps"] == 3 and "KD from the original" in report["finetune_summary"]
        assert RunInfo.load(out).teacher == info.teacher  # the same teacher, recorded again
        after = load_run(out).model.state_dict()
        assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
        # it started from the previous run's pruned weights: the original evaluates the same
        assert (
            report["original"]["top1"] == json.loads((first / "report.json").read_text())["original"]["top1"]
        )
        previous = out

    # the plan and pruned weights of a run, given as MODEL --plan --weights, continue as well
    plain = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--plan", first / "plan.json",
                "--weights", first / "model.safetensors", "--data", tiny["data"], "--epochs", "1",
                "--batch-size", "8", "--no-export", "--out", tmp_path / "ft3")  # fmt: skip
    assert plain.exit_code == 0, plain.output
    assert RunInfo.load(tmp_path / "ft3").teacher == info.teacher

    no_kd = run("finetune", first, "--epochs", "1", "--batch-size", "8", "--no-kd", "--no-export",
                "--out", tmp_path / "ft5")  # fmt: skip
    assert no_kd.exit_code == 0, no_kd.output
    assert RunInfo.load(tmp_path / "ft5").teacher is None
    after_no_kd = run("finetune", tmp_path / "ft5", "--epochs", "1", "--batch-size", "8", "--no-export",
                      "--out", tmp_path / "ft6")  # fmt: skip
    assert after_no_kd.exit_code == 0, after_no_kd.output
    assert (
        "records no teacher: no distillation" in " ".join(after_no_kd.stderr.split())
        and "no KD" in (tmp_path / "ft6" / "report.md").read_text()
    )

    weights.write_bytes(weights.read_bytes() + b"\0")  # the teacher changed since: said, not used
    changed = run("finetune", first, "--epochs", "1", "--no-export", "--out", tmp_path / "ft4")
    assert changed.exit_code == 2 and "teacher) weights" in changed.stderr and "changed" in changed.stderr
    same_dir = run("finetune", first, "--epochs", "1", "--out", first)
    assert same_dir.exit_code == 2 and "--out must be a new directory" in same_dir.stderr


def test_bad_data_is_one_error_line_with_exit_code_2(tiny: dict[str, str], tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=2)
    (tmp_path / "tree" / "train" / "class0" / "000.png").write_bytes(b"broken")  # the very first image
    for spec in (
        f"imagefolder:{tmp_path / 'tree'}",
        f"cifar10:{tmp_path / 'tree' / 'test' / 'class0' / '000.png'}",
    ):
        result = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--data", spec, "--epochs", "1",
                     "--no-kd", "--no-export", "--out", tmp_path / "out")  # fmt: skip
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if not line.startswith("done ")]
        assert len(errors) == 1 and errors[0].startswith("error: ") and "000.png" in errors[0]


def test_greyscale_images_get_a_note_and_train(tiny: dict[str, str], tmp_path: Path) -> None:
    from PIL import Image

    write_tree(tmp_path / "tree", per_class=4)
    grey = tmp_path / "tree" / "train" / "class0" / "000.png"
    Image.open(grey).convert("L").save(grey)
    spec = f"imagefolder:{tmp_path / 'tree'}"
    result = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--data", spec, "--epochs", "1",
                 "--batch-size", "4", "--no-kd", "--no-export", "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: " in result.stderr and "converted 1 greyscale image(s) to RGB" in result.stderr


def test_val_split_is_watched_and_keep_best_keeps_its_best_epoch(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--data", tiny["data"],
                 "--epochs", "3", "--batch-size", "4", "--val-split", "0.25", "--keep", "best", "--no-kd",
                 "--no-export", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    history = report["finetune"]["history"]
    assert [r["eval_split"] for r in history] == ["val"] * 3 and report["finetune"][
        "steps"
    ] == 12  # 18 train, batch 4
    best = max(history, key=lambda r: r["eval_top1"])  # first of the best, as fit keeps it
    from safetensors.torch import load_file

    kept = load_file(out / "stages" / "finetune" / "best.safetensors")
    final = load_file(out / "model.safetensors")
    assert all(torch_equal(kept[k], final[k]) for k in kept)
    data = load_data(tiny["data"])
    assert report["pruned"]["top1"] == pytest.approx(
        evaluate(load_run(out).model, data).top1
    )  # test, not val
    assert best["eval_top1"] >= history[-1]["eval_top1"]


def torch_equal(a: object, b: object) -> bool:
    import torch

    return bool(torch.equal(a, b))  # type: ignore[arg-type]


def test_export_and_timing_run_on_a_cpu_copy_after_fine_tuning(
    tiny: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in for a GPU: fit leaves the model "on its device"; the pipeline must bring it to the CPU
    (Module.cpu) before it saves, evaluates, exports and times it."""
    import torch

    import graphprune.export
    from graphprune.methods import pipeline

    events: list[str] = []
    trained: list[torch.nn.Module] = []
    real_fit, real_cpu, real_export = pipeline.fit, torch.nn.Module.cpu, graphprune.export.export_onnx

    def fit_on_device(model: torch.nn.Module, *args: object, **kw: object) -> object:
        result = real_fit(model, *args, **kw)  # type: ignore[arg-type]
        trained.append(model)
        events.append("fit")
        return result

    def cpu(self: torch.nn.Module) -> torch.nn.Module:
        if any(self is m for m in trained):
            events.append("cpu")
        return real_cpu(self)

    def export(module: torch.nn.Module, *args: object, **kw: object) -> object:
        if any(module is m for m in trained):
            events.append("export")
        return real_export(module, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "fit", fit_on_device)
    monkeypatch.setattr(torch.nn.Module, "cpu", cpu)
    monkeypatch.setattr(graphprune.export, "export_onnx", export)
    result = run("finetune", tiny["model"], "--input-shape", "1,3,8,8", "--data", tiny["data"],
                 "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--no-kd",
                 "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert events == ["fit", "cpu", "export"]


def test_resume_from_the_cli_trains_the_difference_and_refuses_other_changes(
    tiny: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    base = ["finetune", tiny["model"], "--input-shape", "1,3,8,8", "--data", tiny["data"], "--no-kd",
            "--no-export", "--out", out]  # fmt: skip
    first = run(*base, "--epochs", "1", "--max-steps", "2", "--batch-size", "8")
    assert first.exit_code == 0, first.output
    changed = run(*base, "--epochs", "2", "--batch-size", "4", "--resume")
    assert changed.exit_code == 2
    assert changed.stderr.strip().splitlines()[-1] == (
        "error: cannot resume stage finetune: batch_size was 8, now 4 (give --override to resume anyway)"
    )
    more = run(*base, "--epochs", "2", "--batch-size", "8", "--resume")
    assert more.exit_code == 0, more.output
    report = json.loads((out / "report.json").read_text())
    assert report["finetune"]["steps"] == 6  # 24 images, batch 8: 3 steps per epoch
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in steps) == 6
    forced = run(*base, "--epochs", "3", "--batch-size", "4", "--resume", "--override")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "report.json").read_text())["finetune"]["steps"] == 18  # 6 per epoch now

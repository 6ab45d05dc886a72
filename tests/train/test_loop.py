from __future__ import annotations

import copy
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support.tiny_data import tiny_bundle, tiny_net

from graphprune.train import TrainConfig, evaluate, fit
from graphprune.train.loop import lr_factor, param_groups


def quiet(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 2, "batch_size": 16, "lr": 0.1, "verbose": False, "threads": 1}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_one_step_changes_the_weights_and_lowers_the_loss() -> None:
    data = tiny_bundle(n_train=16)
    model = tiny_net()
    before = copy.deepcopy(model)
    x, y = next(iter(data.loader("train", 16, shuffle=False, augment=False)))
    loss_before = F.cross_entropy(before.train()(x), y).item()
    cfg = quiet(epochs=1, max_steps=1, augment=False, schedule="cosine", eval_every_epoch=False, lr=0.05)
    fit(model, data, cfg)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert "0.weight" in changed and "5.weight" in changed
    assert F.cross_entropy(model.train()(x), y).item() < loss_before


def test_no_weight_decay_on_norms_and_biases_and_extra_groups_kept_apart() -> None:
    model = tiny_net()
    gate = torch.nn.Parameter(torch.ones(8))
    groups = param_groups(model, TrainConfig(weight_decay=0.01), [{"params": [gate], "lr": 0.5}])
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01
    assert decayed == {id(model[0].weight), id(model[5].weight)}
    assert groups[1]["weight_decay"] == 0.0 and id(model[1].weight) in {id(p) for p in groups[1]["params"]}
    assert groups[2] == {"params": [gate], "lr": 0.5, "weight_decay": 0.0}


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedule_warms_up_then_decays_to_zero(schedule: str) -> None:
    factors = [lr_factor(s, 100, 10, schedule) for s in range(100)]
    peak = factors.index(max(factors))
    assert 8 <= peak <= 10 and max(factors) == pytest.approx(1.0, abs=0.02)
    assert all(a <= b for a, b in zip(factors[:peak], factors[1 : peak + 1], strict=True))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :], strict=False))
    assert factors[-1] < 0.01


def test_training_learns_and_is_deterministic(tmp_path: Path) -> None:
    data = tiny_bundle()
    a, b = tiny_net(), tiny_net()
    result = fit(a, data, quiet(epochs=4), run_dir=tmp_path)
    fit(b, data, quiet(epochs=4))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert result.steps == 16 and len(result.history) == 4 and result.finished
    assert result.test is not None and result.test.top1 > 40.0 and result.test.loss < 1.0  # chance: 25%, 1.39
    assert result.test == evaluate(a, data)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in lines} == {"step", "epoch"} and all(r["stage"] == "finetune" for r in lines)
    done = json.loads((tmp_path / "stages" / "finetune" / "done.json").read_text())
    assert done["steps"] == 16 and done["test"]["top1"] == result.test.top1


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    data = tiny_bundle()
    cfg = quiet(epochs=3)
    reference = tiny_net()
    fit(reference, data, cfg)

    calls = {"n": 0}

    def ctrl_c_in_step_7(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # mid-step: fit finishes the step, saves, then stops
        return logits.sum() * 0.0

    killed = tiny_net()
    with pytest.raises(KeyboardInterrupt):
        fit(killed, data, cfg, extra_loss=ctrl_c_in_step_7, run_dir=tmp_path)
    assert not (tmp_path / "stages" / "finetune" / "done.json").exists()
    resumed = tiny_net(seed=1)  # a fresh process: different weights until the checkpoint is loaded
    result = fit(resumed, data, cfg, run_dir=tmp_path, resume=True)
    assert result.resumed_at == 7 and result.steps == 12
    for k, v in reference.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    again = tiny_net(seed=2)
    finished = fit(again, data, cfg, run_dir=tmp_path, resume=True)
    assert finished.steps == 12 and finished.test == result.test
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in reference.state_dict().items())


def test_distillation_and_extra_params_are_used() -> None:
    data = tiny_bundle()
    teacher = tiny_net(seed=3)
    teacher_state = copy.deepcopy(teacher.state_dict())
    gate = torch.nn.Parameter(torch.ones(4))

    def gated_penalty(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return gate.abs().sum() * 0.1

    student = tiny_net()
    fit(student, data, quiet(), teacher=teacher, extra_loss=gated_penalty, extra_params=[{"params": [gate]}])
    assert torch.all(gate < 1.0)  # the L1 penalty shrank the gate through its own param group
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    plain = tiny_net()
    fit(plain, data, quiet())
    assert not torch.equal(plain[0].weight, student[0].weight)


def test_max_steps_stops_early() -> None:
    result = fit(tiny_net(), tiny_bundle(), quiet(epochs=5, max_steps=3))
    assert result.steps == 3 and len(result.history) == 1


def _records(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_with_more_epochs_or_steps_trains_the_difference(tmp_path: Path) -> None:
    data = tiny_bundle()  # 4 steps per epoch
    first = fit(tiny_net(), data, quiet(epochs=1, max_steps=2, log_every=1), run_dir=tmp_path)
    assert first.steps == 2
    longer = fit(tiny_net(seed=1), data, quiet(epochs=1, log_every=1), run_dir=tmp_path, resume=True)
    assert longer.resumed_at == 2 and longer.steps == 4
    lrs = {r["step"]: r["lr"] for r in _records(tmp_path) if r["kind"] == "step"}
    assert lrs[2] == pytest.approx(0.1 * lr_factor(1, 2, 0, "onecycle"))  # planned over 2 steps
    assert lrs[3] == pytest.approx(0.1 * lr_factor(2, 4, 0, "onecycle"))  # re-planned over 4 from step 2
    model = tiny_net(seed=2)
    again = fit(model, data, quiet(epochs=2), run_dir=tmp_path, resume=True)
    assert again.resumed_at == 4 and again.steps == 8 and len(again.history) == 3
    done = json.loads((tmp_path / "stages" / "finetune" / "done.json").read_text())
    assert done["steps"] == 8
    finished = fit(tiny_net(seed=3), data, quiet(epochs=2), run_dir=tmp_path, resume=True)
    assert finished.steps == 8 and finished.resumed_at is None  # nothing left: the finished result
    steps = [(r["kind"], r["step"]) for r in _records(tmp_path)]
    assert len(steps) == len(set(steps))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": 8}, "batch_size"),
        ({"lr": 0.2}, "lr"),
        ({"seed": 1}, "seed"),
        ({"schedule": "cosine"}, "schedule"),
    ],
)
def test_resume_with_another_config_names_the_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    from graphprune.errors import GraphpruneError

    data = tiny_bundle()
    fit(tiny_net(), data, quiet(epochs=1, max_steps=2), run_dir=tmp_path)
    with pytest.raises(GraphpruneError, match=f"cannot resume stage finetune: {field} was"):
        fit(tiny_net(), data, quiet(epochs=2, **change), run_dir=tmp_path, resume=True)
    result = fit(
        tiny_net(), data, quiet(epochs=2, resume_override=True, **change), run_dir=tmp_path, resume=True
    )
    assert result.resumed_at == 2


def test_resume_on_other_data_is_an_error(tmp_path: Path) -> None:
    from graphprune.errors import GraphpruneError

    fit(tiny_net(), tiny_bundle(), quiet(epochs=1, max_steps=2), run_dir=tmp_path)
    with pytest.raises(GraphpruneError, match="data train was 64, now 48"):
        fit(tiny_net(), tiny_bundle(n_train=48), quiet(epochs=2), run_dir=tmp_path, resume=True)


def test_resume_for_another_architecture_names_the_tensor(tmp_path: Path) -> None:
    """A run directory resumed with a model of other shapes (a pruning plan that came out differently)
    is refused with the first tensor that differs, not loaded into a crash."""
    from graphprune.errors import GraphpruneError

    data = tiny_bundle()
    fit(tiny_net(), data, quiet(epochs=1, max_steps=2), run_dir=tmp_path)
    with pytest.raises(GraphpruneError, match=r"another model \(5.bias: \[4\] there, \[5\] here\)"):
        fit(tiny_net(classes=5), data, quiet(epochs=2), run_dir=tmp_path, resume=True)
    with pytest.raises(GraphpruneError, match=r"another model \(1.bias: \[8\] there, absent here\)"):
        fit(tiny_net(bn=False), data, quiet(epochs=2), run_dir=tmp_path, resume=True)


def test_a_resumed_run_logs_each_step_once(tmp_path: Path) -> None:
    data = tiny_bundle()
    calls = {"n": 0}

    def crash_in_step_7(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:  # a hard crash: no checkpoint since the end of epoch 1 (step 4)
            raise RuntimeError("killed")
        return logits.sum() * 0.0

    with pytest.raises(RuntimeError):
        fit(tiny_net(), data, quiet(epochs=3, log_every=1), extra_loss=crash_in_step_7, run_dir=tmp_path)
    assert [r["step"] for r in _records(tmp_path) if r["kind"] == "step"] == [1, 2, 3, 4, 5, 6]
    result = fit(tiny_net(), data, quiet(epochs=3, log_every=1), run_dir=tmp_path, resume=True)
    assert result.resumed_at == 4
    records = _records(tmp_path)
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 13))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]


def test_keep_best_ends_with_the_best_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphprune.train import loop
    from graphprune.train.evaluate import EvalResult

    scores = iter([50.0, 80.0, 60.0])
    seen: list[dict[str, torch.Tensor]] = []

    def scripted(model: torch.nn.Module, *args: object, **kw: object) -> EvalResult:
        seen.append(copy.deepcopy(model.state_dict()))
        return EvalResult(top1=next(scores), top5=100.0, loss=1.0, n=32)

    monkeypatch.setattr(loop, "evaluate", scripted)
    data = tiny_bundle().with_val(16)
    model = tiny_net()
    result = fit(model, data, quiet(epochs=3, keep="best"), run_dir=tmp_path)
    assert result.test is not None and result.test.top1 == 80.0
    assert all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())
    assert (tmp_path / "stages" / "finetune" / "best.safetensors").is_file()
    last = fit(tiny_net(), data, quiet(epochs=3, keep="last"), run_dir=tmp_path, resume=True)
    assert last.steps == 9  # keep is no config change; the finished stage returns at once


def test_compile_trains_through_torch_compile_and_keeps_the_plain_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[torch.nn.Module] = []

    def spy(net: torch.nn.Module) -> torch.nn.Module:  # records the call; runs eagerly (no compile in CI)
        compiled.append(net)
        return net

    monkeypatch.setattr(torch, "compile", spy)
    data = tiny_bundle(n_train=16)
    eager, fast = tiny_net(), tiny_net()
    fast.load_state_dict(eager.state_dict())
    cfg = quiet(epochs=1, max_steps=2, eval_every_epoch=False)
    fit(eager, data, cfg)
    assert compiled == []
    fit(fast, data, quiet(epochs=1, max_steps=2, eval_every_epoch=False, compile=True))
    assert compiled == [fast]
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[k], v)  # the same steps on the same weights


def test_compile_is_a_cli_option_of_every_training_command() -> None:
    import click
    from click.testing import CliRunner

    from graphprune.cli import cli
    from graphprune.cli.training import train_config

    kw = {
        "lr": 0.02, "batch_size": 128, "weight_decay": 1e-4, "schedule": "onecycle", "warmup_epochs": 0.0,
        "label_smoothing": 0.0, "kd_temperature": 4.0, "kd_alpha": 0.9, "max_steps": None, "seed": 0,
        "threads": None, "channels_last": False, "bf16": False, "keep": "last", "override": False,
        "sync_bn": False, "compile_": True,
    }  # fmt: skip
    with click.Context(click.Command("finetune")).scope():
        assert train_config(1, kw).compile and not kw
    for command in ("prune", "finetune"):
        assert "--compile" in CliRunner().invoke(cli, [command, "--help"]).output

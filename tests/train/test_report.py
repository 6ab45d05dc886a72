"""The report's training-curve plot: drawn from step records, so a one-epoch run still shows a curve."""

from __future__ import annotations

from pathlib import Path

from graphprune.train.report import plot_training_curves


def _step(stage: str, epoch: float, loss: float) -> dict[str, object]:
    return {"stage": stage, "kind": "step", "epoch": epoch, "train_loss": loss, "train_acc": 50.0}


def test_one_epoch_of_steps_is_a_curve(tmp_path: Path) -> None:
    history = [_step("finetune", e / 4, 2.0 - e / 4) for e in range(1, 5)]
    history.append({"stage": "finetune", "kind": "epoch", "epoch": 1, "train_loss": 1.5, "train_acc": 60.0,
                    "eval_top1": 70.0})  # fmt: skip
    path = plot_training_curves(history, tmp_path / "curves.png")
    assert path is not None and path.stat().st_size > 0


def test_nothing_logged_draws_nothing(tmp_path: Path) -> None:
    assert plot_training_curves([{"stage": "s", "kind": "step", "epoch": 0.5}], tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()


def test_the_pipeline_history_holds_every_logged_step(tmp_path: Path) -> None:
    from support.tiny_data import tiny_bundle, tiny_net

    from graphprune.methods.pipeline import _history
    from graphprune.train import TrainConfig, fit

    cfg = TrainConfig(epochs=1, batch_size=16, log_every=1, verbose=False, threads=1)
    fit(tiny_net(), tiny_bundle(), cfg, run_dir=tmp_path)  # one epoch of 4 steps
    history = _history(tmp_path)
    assert [r["step"] for r in history if r["kind"] == "step"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in history if r["kind"] == "epoch"] == [1]


def test_kept_channels_marks_removed_blocks_and_names_layers(tmp_path: Path) -> None:
    from graphprune.graph import trace
    from graphprune.methods.pipeline import kept_channels
    from graphprune.modelspec import resolve_model
    from graphprune.plan import PruningPlan
    from graphprune.train.report import plot_kept_channels

    rm = resolve_model("graphprune:cifar_resnet20")
    pg = trace(rm.model, rm.example_inputs)
    plan = PruningPlan.for_graph(pg).remove_block("layer1.1").remove_channels("layer1.0.conv1", [0, 1, 2])
    rows = {row[0]: row for row in kept_channels(pg, plan)}
    assert rows["layer1.1.conv1"] == ("layer1.1.conv1", 16, 0, True)  # inside the removed block
    assert rows["layer1.0.conv1"] == ("layer1.0.conv1", 16, 13, False)
    assert rows["conv1"][3] is False  # the residual stream runs through the removed block: not removed
    assert plot_kept_channels(list(rows.values()), tmp_path / "kept.png") is not None

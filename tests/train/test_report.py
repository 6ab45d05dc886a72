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

"""Training progress on the terminal: a rich bar on a TTY, a few plain lines per epoch otherwise."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


def _stats(record: dict[str, Any]) -> str:
    return (
        f"loss {record['train_loss']:.3f}  acc {record['train_acc']:.1f}%  {record['images_per_s']:.0f} img/s"
    )


class Progress:
    """Shows `update`s of a run of `total` steps; plain mode prints about four lines per epoch."""

    def __init__(self, stage: str, total: int, steps_per_epoch: int, *, enabled: bool = True, start: int = 0):
        self.enabled, self.stage, self.total = enabled, stage, total
        self.every = max(1, steps_per_epoch // 4)
        self.last_line = start
        self.bar: RichProgress | None = None
        if enabled and sys.stdout.isatty():
            self.bar = RichProgress(
                TextColumn(f"[bold]{stage}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=Console(),
            )  # fmt: skip
            self.task = self.bar.add_task(stage, total=total, completed=start, stats="")
            self.bar.start()

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=_stats(record))
        elif step - self.last_line >= self.every and step < self.total:
            self.last_line = step
            print(f"{self.stage} step {step}/{self.total}  {_stats(record)}", flush=True)

    def epoch_end(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        test = f"  {record['eval_split']} top-1 {record['eval_top1']:.2f}%" if "eval_top1" in record else ""
        where = f"{self.stage} epoch {record['epoch']} ({record['step']} steps, {record['seconds']:.0f}s)"
        line = f"{where}  {_stats(record)}{test}"
        if self.bar is not None:
            self.bar.console.print(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

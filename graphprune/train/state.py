"""Train-state checkpoints of a run directory: `stages/<stage>/checkpoint.pt` and `done.json`.

A checkpoint is one dict of tensors and plain values (see `loop._train_state` for what it holds),
written atomically and read back with `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from graphprune.errors import GraphpruneError
from graphprune.fileio import save_tensors, write_text

CHECKPOINT_FILE = "checkpoint.pt"
DONE_FILE = "done.json"
METRICS_FILE = "metrics.jsonl"


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / "stages" / stage


def save_checkpoint(run_dir: str | Path, stage: str, state: dict[str, Any]) -> Path:
    path = stage_dir(run_dir, stage) / CHECKPOINT_FILE
    save_tensors(state, path)
    return path


def load_checkpoint(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The stage's last checkpoint, or None if it has none."""
    path = stage_dir(run_dir, stage) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt checkpoint
        raise GraphpruneError(f"unreadable checkpoint {path}: {str(exc).splitlines()[0]}") from None
    return state


def mark_done(run_dir: str | Path, stage: str, metrics: dict[str, Any]) -> None:
    write_text(stage_dir(run_dir, stage) / DONE_FILE, json.dumps(metrics, indent=2) + "\n")


def read_done(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    """The final metrics of a finished stage, or None if it has not finished."""
    path = stage_dir(run_dir, stage) / DONE_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line to `run_dir/metrics.jsonl` (a log: appended, not rewritten)."""
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")

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
BEST_FILE = "best.safetensors"
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


def clear_done(run_dir: str | Path, stage: str) -> None:
    """Mark a finished stage unfinished again (it is being trained further)."""
    (stage_dir(run_dir, stage) / DONE_FILE).unlink(missing_ok=True)


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


def save_best(run_dir: str | Path, stage: str, model_state: dict[str, torch.Tensor]) -> Path:
    """The weights of the best epoch so far (by eval top-1), beside the last checkpoint."""
    from graphprune.checkpoint import save_safetensors

    path = stage_dir(run_dir, stage) / BEST_FILE
    save_safetensors(model_state, path)
    return path


def load_best(run_dir: str | Path, stage: str, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = stage_dir(run_dir, stage) / BEST_FILE
    if not path.is_file():
        raise GraphpruneError(f"{path} not found: the best epoch's weights are gone")
    return load_file(path, device=str(device))


def drop_metrics_after(run_dir: str | Path, stage: str, step: int) -> None:
    """Remove the records of `stage` past `step` from `metrics.jsonl` (logged after the checkpoint a
    run resumes from, so logged again), rewriting the file atomically."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if record.get("stage") == stage and int(record.get("step", 0)) > step:
            continue
        kept.append(line)
    if len(kept) != len(lines):
        write_text(path, "".join(line + "\n" for line in kept))

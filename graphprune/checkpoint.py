"""Saving and loading pruned models as architecture + plan + state_dict: no pickled modules, ever.

A run directory is self-contained: `plan.json`, `model.safetensors` (the pruned weights) and
`model.json` (the MODEL spec, input shape, dataset and method) are all `load_run` needs.
`.pt` state_dicts written by earlier versions still load (with `weights_only=True`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from graphprune.errors import GraphpruneError, PlanError, WeightsError
from graphprune.fileio import atomic_path, write_text
from graphprune.graph import PrunableGraph, trace
from graphprune.plan import PruningPlan
from graphprune.rewrite import apply

MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"
PLAN_FILE = "plan.json"
INFO_FILE = "model.json"


def save_pruned(
    out_dir: str | os.PathLike[str], slim: nn.Module, plan: PruningPlan, pg: PrunableGraph | None = None
) -> dict[str, Path]:
    """Write `model.safetensors` (the pruned state_dict) and `plan.json` into `out_dir`, atomically."""
    out = Path(out_dir)
    if pg is not None:
        plan.arch_hash = plan.arch_hash or pg.arch_hash
        plan.input_shapes = plan.input_shapes or pg.input_shapes
    save_safetensors(slim.state_dict(), out / MODEL_FILE)
    plan.save(out / PLAN_FILE)
    return {"model": out / MODEL_FILE, "plan": out / PLAN_FILE}


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write a state_dict as safetensors, atomically (shared or strided tensors are copied apart first)."""
    from safetensors.torch import save_file

    plain = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (hex), to tell later whether a recorded file is still the same."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelRef:
    """A model a run was built from: MODEL spec, weights file (absolute path) and its sha256."""

    model: str
    weights: str | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, model: str, weights: str | os.PathLike[str] | None) -> ModelRef:
        if weights is None:
            return cls(model)
        return cls(model, str(Path(weights).resolve()), file_sha256(weights))

    def checked_weights(self, role: str) -> str | None:
        """The weights path, after checking the file is still there with the recorded content."""
        if self.weights is None:
            return None
        path = Path(self.weights)
        if not path.is_file():
            raise WeightsError(f"{role} weights {path} recorded by the run are gone")
        if self.sha256 is not None and file_sha256(path) != self.sha256:
            raise WeightsError(f"{role} weights {path} changed since the run (sha256 differs)")
        return self.weights

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weights": self.weights, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ModelRef | None:
        if data is None:
            return None
        return cls(str(data["model"]), data.get("weights"), data.get("sha256"))


@dataclass(frozen=True)
class RunInfo:
    """`model.json`: how to rebuild a run's model without anything but the run directory.

    `weights` is the original MODEL's weights file (as given to the run) and `teacher` the model the
    fine-tune distilled from (None: no distillation), so a continued run starts from the same ones."""

    model: str
    input_shape: tuple[int, ...]
    data: str | None = None
    method: str | None = None
    num_classes: int | None = None
    prune_layernorm: bool = False  # traced with LayerNorms over channels prunable: the plan may need it
    weights: ModelRef | None = None
    teacher: ModelRef | None = None

    def save(self, run_dir: str | os.PathLike[str]) -> None:
        data = {
            "format": "graphprune.run",
            "version": 1,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "data": self.data,
            "method": self.method,
            "num_classes": self.num_classes,
            "prune_layernorm": self.prune_layernorm,
            "weights": self.weights.to_dict() if self.weights is not None else None,
            "teacher": self.teacher.to_dict() if self.teacher is not None else None,
        }
        write_text(Path(run_dir) / INFO_FILE, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> RunInfo:
        path = Path(run_dir) / INFO_FILE
        if not path.is_file():
            raise GraphpruneError(f"{run_dir} is not a run directory: {INFO_FILE} not found")
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                model=str(data["model"]),
                input_shape=tuple(int(d) for d in data["input_shape"]),
                data=data.get("data"),
                method=data.get("method"),
                num_classes=data.get("num_classes"),
                prune_layernorm=bool(data.get("prune_layernorm", False)),
                weights=ModelRef.from_dict(data.get("weights")),
                teacher=ModelRef.from_dict(data.get("teacher")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise GraphpruneError(f"{path} is malformed: {exc!r}") from None


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / INFO_FILE).is_file()


def run_weights(run_dir: str | os.PathLike[str]) -> Path:
    """`model.safetensors` of a run directory, else a legacy `model.pt`."""
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    raise WeightsError(f"{run_dir} holds no {MODEL_FILE}")


@dataclass(frozen=True)
class LoadedRun:
    """A run directory's pruned model (eval mode), its original architecture and its `model.json`."""

    model: fx.GraphModule
    original: nn.Module
    info: RunInfo
    plan: PruningPlan
    example_inputs: tuple[torch.Tensor, ...]


def load_run(run_dir: str | os.PathLike[str]) -> LoadedRun:
    """Rebuild the pruned model of `run_dir` from its `model.json`, `plan.json` and weights alone."""
    from graphprune.modelspec import resolve_model

    info = RunInfo.load(run_dir)
    rm = resolve_model(info.model, input_shape=info.input_shape)
    plan = PruningPlan.load(Path(run_dir) / PLAN_FILE)
    slim = load_pruned(
        rm.model, plan, run_weights(run_dir), rm.example_inputs, prune_layernorm=info.prune_layernorm
    )
    return LoadedRun(slim.eval(), rm.model, info, plan, rm.example_inputs)


def _read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    from graphprune.weights import load_state_dict_file

    return load_state_dict_file(path)


def _fits(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return all(k in own and own[k].shape == v.shape for k, v in state.items()) and all(
        k in state for k in own if not k.endswith("num_batches_tracked")
    )


def load_pruned(
    model: nn.Module,
    plan: PruningPlan | str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor] | str | os.PathLike[str] | None = None,
    example_inputs: Sequence[torch.Tensor] | torch.Tensor | None = None,
    *,
    leaf_modules: Iterable[str | type] = (),
    prune_layernorm: bool = False,
) -> fx.GraphModule:
    """Rebuild a pruned model from its architecture (`model`), its plan and a state_dict.

    The state_dict may be the original model's (it is loaded, then pruned) or the pruned one's (the
    architecture is pruned, then it is loaded). Example inputs default to the plan's input shapes.
    `leaf_modules` and `prune_layernorm` must be those the plan was made with (see `graphprune.trace`).
    """
    if not isinstance(plan, PruningPlan):
        plan = PruningPlan.load(plan)
    if example_inputs is None:
        if not plan.input_shapes:
            raise PlanError("plan has no input_shapes; pass example_inputs")
        example_inputs = tuple(torch.zeros(s) for s in plan.input_shapes)
    source = str(state_dict) if isinstance(state_dict, (str, os.PathLike)) else "state_dict"
    state = _read_state(state_dict) if isinstance(state_dict, (str, os.PathLike)) else state_dict
    if state is not None and _fits(model, state):
        model = copy.deepcopy(model)
        model.load_state_dict(state, strict=False)
        state = None
    pg = trace(model, example_inputs, leaf_modules=leaf_modules, prune_layernorm=prune_layernorm)
    slim = apply(pg, plan, verify=False)
    if state is not None:
        if not _fits(slim, state):
            own = slim.state_dict()
            bad = [k for k in state if k not in own or own[k].shape != state[k].shape] or [
                k for k in own if k not in state
            ]
            raise WeightsError(
                f"{source} fits neither the original nor the pruned model (first mismatch: {bad[0]})"
            )
        slim.load_state_dict(state, strict=False)
    return slim

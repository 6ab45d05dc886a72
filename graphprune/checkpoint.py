"""Saving and loading pruned models as architecture + plan + state_dict: no pickled modules, ever."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from graphprune.errors import PlanError, WeightsError
from graphprune.fileio import save_tensors
from graphprune.graph import PrunableGraph, trace
from graphprune.plan import PruningPlan
from graphprune.rewrite import apply

MODEL_FILE = "model.pt"
PLAN_FILE = "plan.json"


def save_pruned(
    out_dir: str | os.PathLike[str], slim: nn.Module, plan: PruningPlan, pg: PrunableGraph | None = None
) -> dict[str, Path]:
    """Write `model.pt` (the pruned state_dict, tensors only) and `plan.json` into `out_dir`, atomically."""
    out = Path(out_dir)
    if pg is not None:
        plan.arch_hash = plan.arch_hash or pg.arch_hash
        plan.input_shapes = plan.input_shapes or pg.input_shapes
    state = {k: v.detach().clone() for k, v in slim.state_dict().items()}
    save_tensors(state, out / MODEL_FILE)
    plan.save(out / PLAN_FILE)
    return {"model": out / MODEL_FILE, "plan": out / PLAN_FILE}


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
) -> fx.GraphModule:
    """Rebuild a pruned model from its architecture (`model`), its plan and a state_dict.

    The state_dict may be the original model's (it is loaded, then pruned) or the pruned one's (the
    architecture is pruned, then it is loaded). Example inputs default to the plan's input shapes.
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
    pg = trace(model, example_inputs, leaf_modules=leaf_modules)
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

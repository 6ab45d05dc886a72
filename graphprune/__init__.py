"""graphprune: compiler-style structured pruning for PyTorch CNNs.

import graphprune as gp
pg = gp.trace(model, example_inputs)       # analysis; the model is untouched
plan = gp.PruningPlan.for_graph(pg).remove_channels(pg.groups[0].id, [0, 1])
slim = gp.apply(pg, plan)                  # a new, smaller nn.Module
gp.export_onnx(slim, example_inputs, "slim.onnx")
"""

from __future__ import annotations

from typing import Any

from graphprune.analysis.blocks import Block
from graphprune.analysis.groups import ChannelGroup, Member
from graphprune.analysis.rules import register_channelwise_module
from graphprune.costs import LayerCost, count_flops, count_params
from graphprune.errors import (
    GraphpruneError,
    ModelSpecError,
    OutputError,
    PlanError,
    TraceError,
    VerificationError,
    WeightsError,
)
from graphprune.graph import PrunableGraph, trace
from graphprune.plan import PruningPlan
from graphprune.rewrite import apply

__version__ = "0.1.0"

__all__ = [
    "Block",
    "ChannelGroup",
    "GraphpruneError",
    "LayerCost",
    "Member",
    "ModelSpecError",
    "OutputError",
    "PlanError",
    "PrunableGraph",
    "PruningPlan",
    "TraceError",
    "VerificationError",
    "WeightsError",
    "apply",
    "count_flops",
    "count_params",
    "export_onnx",
    "register_channelwise_module",
    "trace",
]


def __getattr__(name: str) -> Any:
    """Heavy submodules (onnx export, criteria, checkpoints) load on first use."""
    if name == "export_onnx":
        from graphprune.export import export_onnx

        return export_onnx
    if name in ("criteria", "checkpoint", "export", "models"):
        import importlib

        return importlib.import_module(f"graphprune.{name}")
    raise AttributeError(f"module 'graphprune' has no attribute {name!r}")

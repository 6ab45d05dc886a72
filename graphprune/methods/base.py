"""What a pruning method is: a function from a MethodContext to a MethodResult, found by name.

A method decides (and may train, e.g. gates); the pipeline then applies its plan, fine-tunes,
exports and reports. Methods never mutate `ctx.model`: they work on their own copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphprune.errors import GraphpruneError
from graphprune.graph import PrunableGraph
from graphprune.plan import PruningPlan
from graphprune.train.config import TrainConfig
from graphprune.train.data import DataBundle


class MethodError(GraphpruneError):
    """A pruning method is unknown, or cannot run with the options or budget it was given."""


@dataclass(frozen=True)
class Budget:
    """What the pruned model may cost. `target_flops` is the fraction of the original FLOPs to keep."""

    target_flops: float | None = None
    target_latency_ms: float | None = None
    target_latency_ratio: float | None = None
    num_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.target_flops is not None and not 0.0 < self.target_flops <= 1.0:
            raise MethodError(f"target FLOPs must be a fraction in (0, 1], got {self.target_flops}")
        if self.target_latency_ratio is not None and not 0.0 < self.target_latency_ratio <= 1.0:
            raise MethodError(f"target latency ratio must be in (0, 1], got {self.target_latency_ratio}")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise MethodError(f"target latency must be > 0 ms, got {self.target_latency_ms}")
        if self.num_blocks is not None and self.num_blocks < 0:
            raise MethodError(f"number of blocks must be >= 0, got {self.num_blocks}")


@dataclass
class MethodContext:
    """Everything a method may use. `model` is the caller's and is never mutated."""

    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    pg: PrunableGraph
    budget: Budget
    data: DataBundle | None = None
    train_cfg: TrainConfig | None = None
    teacher: nn.Module | None = None
    run_dir: Path | None = None
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodResult:
    """A method's decision: the plan, the (possibly trained) unpruned-architecture model it applies to,
    method-specific numbers for the report, and any PNG plots it drew."""

    plan: PruningPlan
    model: nn.Module
    report: dict[str, Any] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw the random numbers inside (gate initialisation) from torch's generator seeded with `seed`,
    leaving the caller's generator state as it was: a method decides the same in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


Method = Callable[[MethodContext], MethodResult]
_METHODS: dict[str, Method] = {}


def register_method(name: str, fn: Method) -> Method:
    """Make `fn` available as `--method name`. Returns `fn`, so it also works as a decorator's body."""
    _METHODS[name] = fn
    return fn


def get_method(name: str) -> Method:
    """The method registered as `name`; MethodError listing the known ones otherwise."""
    from graphprune import methods  # noqa: F401 - registers the built-in methods

    if name not in _METHODS:
        raise MethodError(f"unknown pruning method {name!r} (choose from {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def method_names() -> list[str]:
    from graphprune import methods  # noqa: F401

    return sorted(_METHODS)

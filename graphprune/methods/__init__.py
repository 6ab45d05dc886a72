"""Pruning methods: each decides a PruningPlan for a budget; the pipeline applies, fine-tunes, exports.

Built in: `l1`, `bn` (criteria). Learned methods add a module here and call `register_method`.
"""

from __future__ import annotations

from graphprune.methods import abp, criterion, wgates  # noqa: F401 - registers l1, bn, abp and wgates
from graphprune.methods.base import (
    Budget,
    MethodContext,
    MethodError,
    MethodResult,
    get_method,
    method_names,
    register_method,
)

__all__ = [
    "Budget",
    "MethodContext",
    "MethodError",
    "MethodResult",
    "get_method",
    "method_names",
    "register_method",
]

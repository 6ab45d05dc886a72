"""Deep copies of modules: what `copy.deepcopy` gives, faster, and copies made late (`clone_shared`).

Every `nn.Module` holds a dozen hook tables, almost always empty, which `copy.deepcopy` rebuilds one by
one through `copyreg` (most of the time of copying a large model's module tree). They are given fresh
empty tables up front instead, in deepcopy's memo; everything else is copied by `copy.deepcopy` itself.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)
_EMPTY_TABLES = (OrderedDict, dict, set)


def deepcopy_module(module: M, shared: Iterable[torch.Tensor] = ()) -> M:
    """`copy.deepcopy(module)`; the tensors in `shared` are kept as they are (not cloned)."""
    memo: dict[int, object] = {id(t): t for t in shared}
    for m in module.modules():
        for value in vars(m).values():
            if type(value) in _EMPTY_TABLES and not value:
                memo[id(value)] = type(value)()
    return copy.deepcopy(module, memo)


def clone_shared(module: nn.Module, tensors: Iterable[torch.Tensor]) -> None:
    """Give `module` its own copy of each of its parameters and buffers that is one of `tensors`.

    A tensor held in several places gets one copy, so tied weights stay tied.
    """
    ids = {id(t) for t in tensors}
    copies: dict[int, torch.Tensor] = {}
    for m in module.modules():
        tables: tuple[dict[str, Any], ...] = (m._parameters, m._buffers)
        for table in tables:
            for name, t in table.items():
                if t is None or id(t) not in ids:
                    continue
                if id(t) not in copies:
                    d = t.detach().clone()
                    copies[id(t)] = nn.Parameter(d, t.requires_grad) if isinstance(t, nn.Parameter) else d
                table[name] = copies[id(t)]

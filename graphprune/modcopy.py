"""Deep copies of modules: what `copy.deepcopy` gives, faster.

Every `nn.Module` holds a dozen hook tables, almost always empty, which `copy.deepcopy` rebuilds one by
one through `copyreg` (most of the time of copying a large model's module tree). They are given fresh
empty tables up front instead, in deepcopy's memo; everything else is copied by `copy.deepcopy` itself.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import TypeVar

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

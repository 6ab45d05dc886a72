"""Slicing tensors held by modules: the one place parameters and buffers are replaced."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def index_select(t: torch.Tensor, dim: int, keep: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """A new tensor (index_select copies) holding the `keep` entries of `t` along `dim`."""
    index = keep if isinstance(keep, torch.Tensor) else torch.as_tensor(list(keep), dtype=torch.long)
    return t.detach().index_select(dim, index.to(t.device))


def replace_tensor(owner: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter or buffer `name` of `owner`, keeping its kind and requires_grad."""
    old = getattr(owner, name)
    if isinstance(old, nn.Parameter):
        setattr(owner, name, nn.Parameter(value, requires_grad=old.requires_grad))
    elif name in owner._buffers:
        owner._buffers[name] = value
    else:
        setattr(owner, name, value)


def slice_tensor(owner: nn.Module, name: str, dim: int, keep: Sequence[int] | torch.Tensor) -> None:
    t = getattr(owner, name, None)
    if isinstance(t, torch.Tensor) and t.dim() > dim:
        replace_tensor(owner, name, index_select(t, dim, keep))


def owner_of(root: nn.Module, target: str) -> tuple[nn.Module, str]:
    """The module holding attribute `target` ('a.b.weight' -> (root.a.b, 'weight'))."""
    path, _, name = target.rpartition(".")
    return (root.get_submodule(path) if path else root), name

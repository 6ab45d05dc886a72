"""Deep copies of modules: what `copy.deepcopy` gives, faster, and copies made late (`clone_shared`).

`copy.deepcopy` spends most of its time on a module tree in its generic machinery: a dozen hook tables
per module, almost always empty, rebuilt one by one through `copyreg`, and every int, string and flag of
every module passed through the memo. `deepcopy_module` copies a module of the plain kind (no custom
`__deepcopy__` or pickling hooks) the way deepcopy would, directly: a new instance whose state is the
old state with immutable values kept, empty tables made anew and everything else left to `copy.deepcopy`
(with the same memo, so objects shared in the original are shared in the copy). Other modules (e.g. a
GraphModule) go through `copy.deepcopy` itself, with their plain submodules already copied; a GraphModule
copied with `code=False` is copied directly too, without generating its code.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, TypeVar, cast

import torch
import torch.fx as fx
from torch import nn

M = TypeVar("M", bound=nn.Module)
_EMPTY_TABLES = (OrderedDict, dict, set)
_IMMUTABLE = (int, float, bool, str, bytes, complex, type(None))
_PICKLING_HOOKS = ("__deepcopy__", "__reduce__", "__reduce_ex__", "__getnewargs__", "__getnewargs_ex__")


def deepcopy_module(
    module: M, shared: Iterable[torch.Tensor] = (), *, alias: bool = False, code: bool = True
) -> M:
    """`copy.deepcopy(module)`; the tensors in `shared` are not cloned: kept as they are, or with `alias`
    replaced by new tensor objects over the same memory (then `.to()` or `.double()` on the copy rebinds
    its own objects, never the original's; an in-place write still reaches both).

    A GraphModule copied with `code=False` has the graph and state of the original but no Python code
    yet: call `recompile()` on it before running it (for a copy whose graph is about to be rewritten).
    """
    memo: dict[int, Any] = {id(t): _alias(t) if alias else t for t in shared}
    if _plain(type(module)):
        return _copy_plain(module, memo)
    for child in module.children():
        _copy_value(child, memo)
    if not code and _plain_graph_module(type(module)):
        return cast(M, _copy_graph_module(cast(fx.GraphModule, module), memo))
    return copy.deepcopy(module, memo)


def _alias(t: torch.Tensor) -> torch.Tensor:
    if isinstance(t, nn.Parameter):
        return nn.Parameter(t.detach(), t.requires_grad)
    return t if t.requires_grad else t.detach()


def _plain(cls: type) -> bool:
    """Whether deepcopy would copy instances of `cls` as nn.Module's own pickling protocol says."""
    return (
        issubclass(cls, nn.Module)
        and cls.__getstate__ is nn.Module.__getstate__
        and all(getattr(cls, h, None) is getattr(nn.Module, h, None) for h in _PICKLING_HOOKS)
    )


def _plain_graph_module(cls: type) -> bool:
    """Whether deepcopy would copy instances of `cls` as fx.GraphModule's own `__deepcopy__` does."""
    return issubclass(cls, fx.GraphModule) and cls.__deepcopy__ is fx.GraphModule.__deepcopy__


def _copy_graph_module(gm: fx.GraphModule, memo: dict[int, Any]) -> fx.GraphModule:
    """What GraphModule's `__deepcopy__` makes, less its code: that deep-copies the state, then rebuilds
    the module from it with `GraphModule.__init__`, which generates the code (and copies the modules and
    attributes the graph names, already in the copied state)."""
    new = type(gm).__new__(type(gm))  # its own class: `recompile` puts the forward there
    memo[id(gm)] = new
    new.__dict__.update({k: _copy_value(v, memo) for k, v in vars(gm).items()})
    new._graph.owning_module = new
    for hook in getattr(gm, "_deepcopy_hooks", ()):  # as GraphModule's own copy calls them
        hook(new)
    return new


def _copy_plain(module: nn.Module, memo: dict[int, Any]) -> Any:
    new = type(module).__new__(type(module))
    memo[id(module)] = new
    new.__setstate__({k: _copy_value(v, memo) for k, v in module.__getstate__().items()})
    return new


def _copy_value(value: Any, memo: dict[int, Any]) -> Any:
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if id(value) in memo:
        return memo[id(value)]
    if kind in _EMPTY_TABLES:
        if not value:
            memo[id(value)] = kind()
            return memo[id(value)]
        if kind is not set:
            table = memo[id(value)] = kind()
            table.update((_copy_value(k, memo), _copy_value(v, memo)) for k, v in value.items())
            return table
    if kind is tuple and all(type(v) in _IMMUTABLE for v in value):
        return value
    if isinstance(value, nn.Module) and _plain(kind):
        return _copy_plain(value, memo)
    return copy.deepcopy(value, memo)


def shared_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of `module`: what a copy made with `deepcopy_module` may share."""
    return [*module.parameters(), *module.buffers()]


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

"""Stage 1a: turn a model into a torch.fx GraphModule and record every node's value on example inputs."""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from graphprune.errors import TraceError, first_line
from graphprune.modcopy import deepcopy_module, shared_tensors

META_KEY = "gp_value"


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor value seen while running the example inputs."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def _default_leaf_types() -> tuple[type, ...]:
    """torchvision modules kept whole: StochasticDepth must keep its train/eval behaviour."""
    try:
        from graphprune.torchvision_compat import import_torchvision

        ops = import_torchvision().ops
        return (ops.StochasticDepth,)
    except Exception:  # noqa: BLE001 - torchvision is optional for tracing
        return ()


class _Tracer(fx.Tracer):
    """fx tracer that knows extra leaf modules and which module it is inside (for error messages)."""

    def __init__(self, leaf_types: tuple[type, ...], leaf_names: frozenset[str]) -> None:
        super().__init__()
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.path: list[tuple[str, str]] = []
        self.failed_at: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self.path.append((self.path_of_module(m), type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_at is None:  # innermost module first
                self.failed_at = self.path[-1]
            raise
        finally:
            self.path.pop()


def as_input_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Normalise example inputs to a tuple of tensors."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TraceError("example_inputs must be a tensor or a non-empty sequence of tensors")
    return inputs


def symbolic_trace(model: nn.Module, leaf_modules: Iterable[str | type] = ()) -> fx.GraphModule:
    """Trace a copy of `model`'s module tree in eval mode; the user's model is never touched.

    The copy's parameters and buffers share `model`'s memory (new tensor objects over it): nothing in
    graphprune writes into them, and copying a large model's weights would take most of the analysis time.
    A GraphModule is not traced again: its graph is copied, so names derived from node metadata are stable.
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"expected an nn.Module, got {type(model).__name__}")
    if isinstance(
        model, fx.GraphModule
    ):  # already a graph (e.g. a pruned model): keep it and its node metadata
        gm = deepcopy_module(model, shared_tensors(model), alias=True)
        gm.training = model.training
        return gm
    names = frozenset(x for x in leaf_modules if isinstance(x, str))
    types = tuple(x for x in leaf_modules if isinstance(x, type)) + _default_leaf_types()
    root = deepcopy_module(model, shared_tensors(model), alias=True).eval()
    tracer = _Tracer(types, names)
    try:
        graph = tracer.trace(root)
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes a TraceError naming the module
        where = tracer.failed_at or ("", type(model).__name__)
        mod = f"module '{where[0]}' ({where[1]})" if where[0] else f"model {where[1]}"
        hint = (
            f"; keep it as a leaf module (leaf_modules=['{where[0]}'], or --leaf-module {where[0]})"
            if where[0]
            else ""
        )
        raise TraceError(f"torch.fx cannot trace {mod}: {first_line(exc)}{hint}") from None
    for node in graph.nodes:  # `x: torch.Tensor` annotations print as `_Tensor_`, which TorchScript rejects
        if node.type is torch.Tensor or node.type in ("Tensor", "torch.Tensor"):
            node.type = None
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)
    gm.training = model.training
    return gm


def eval_only_parts(model: nn.Module, gm: fx.GraphModule) -> tuple[str, ...]:
    """What tracing in eval mode left out of `gm`, one line each: modules holding parameters or buffers
    that the graph never uses (an Inception aux head), and traced-through forwards that read
    `self.training` (their training-only branch is frozen to eval)."""
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    attrs = {str(n.target).rpartition(".")[0] for n in gm.graph.nodes if n.op == "get_attr"}

    def inside(path: str) -> bool:
        parts = path.split(".")
        return any(".".join(parts[:k]) in called for k in range(1, len(parts) + 1))

    # every module holding parameters or buffers of its own; its path and each ancestor's are marked
    holds, uses = set(), set()
    for path, m in model.named_modules():
        if next(m.parameters(recurse=False), None) is None and next(m.buffers(recurse=False), None) is None:
            continue
        parts = path.split(".") if path else []
        lineage = {".".join(parts[:k]) for k in range(len(parts) + 1)}
        holds |= lineage
        if path and (inside(path) or path in attrs):
            uses |= lineage

    notes: list[str] = []
    dropped: list[str] = []
    for path, m in model.named_modules():
        if path in holds and path not in uses and not any(path.startswith(d + ".") for d in dropped):
            dropped.append(path)  # named by the outermost module left out
            notes.append(f"module '{path}' ({type(m).__name__}) is unused in eval mode")
    seen: set[type] = set()
    for path, m in model.named_modules():
        if type(m) in seen or (path and inside(path)) or type(m).__module__.startswith("torch.nn"):
            continue
        seen.add(type(m))
        if _reads_training(type(m)):  # type: ignore[arg-type]
            notes.append(f"{type(m).__name__}.forward reads self.training: traced as training=False")
    return tuple(notes)


@functools.cache
def _reads_training(cls: type) -> bool:
    """Whether the source of `cls.forward` mentions self.training (False where it has no source)."""
    try:
        return "self.training" in inspect.getsource(cls.forward)  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return False


def _summarize(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(value.shape), value.dtype)
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, (tuple, list)):
        return (
            type(value)(_summarize(v) for v in value)
            if isinstance(value, tuple)
            else [_summarize(v) for v in value]
        )
    if isinstance(
        value, (int, float, bool, str, slice, torch.dtype, torch.device, type(None), type(Ellipsis))
    ):
        return value
    return object()  # opaque


class _Recorder(fx.Interpreter):
    """Runs the graph once and stores each node's value summary in node.meta[META_KEY]."""

    def __init__(self, gm: fx.GraphModule, after_node: Callable[[fx.Node], None] | None) -> None:
        super().__init__(gm)
        self.after_node = after_node

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception as exc:  # noqa: BLE001 - wrap with the culprit node
            where = (
                f"module '{n.target}'" if n.op == "call_module" else f"node '{n.name}' ({n.op} {n.target})"
            )
            raise TraceError(f"example input does not fit the model at {where}: {first_line(exc)}") from None
        n.meta[META_KEY] = _summarize(result)
        if self.after_node is not None:
            self.after_node(n)
        return result


class _Recording(nn.Module):
    """Holds `gm` as a submodule so torch.func.functional_call can swap its tensors for meta ones."""

    def __init__(self, gm: fx.GraphModule, after_node: Callable[[fx.Node], None] | None) -> None:
        super().__init__()
        self.gm = gm
        self.after_node = after_node

    def forward(self, *inputs: torch.Tensor) -> Any:
        return _Recorder(self.gm, self.after_node).run(*inputs)


class _NormsOnMeta(TorchDispatchMode):
    """Eval-mode batch norm and layer norm on the meta device without torch's Python meta kernels, which
    decompose them into a dozen elementwise meta ops (1-3 ms a call, most of a meta run of a model full
    of norms). The output has the input's shape and dtype; the parameters' shapes are checked as the
    real kernels check them, so a mismatch still fails (and the recording falls back to a real run)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.device.type != "meta" or kwargs:
            return func(*args, **(kwargs or {}))
        if func is torch.ops.aten.native_batch_norm.default and not args[5] and x.ndim >= 2:
            channels = x.shape[1]
            if any(t is not None and t.numel() != channels for t in args[1:5]):
                raise RuntimeError(f"batch norm over {channels} channels with statistics of another size")
            return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))
        if func is torch.ops.aten.native_layer_norm.default:
            shape, k = tuple(args[1]), len(args[1])
            if x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
                raise RuntimeError(f"layer norm over {shape} of an input of shape {tuple(x.shape)}")
            if any(t is not None and tuple(t.shape) != shape for t in args[2:4]):
                raise RuntimeError(f"layer norm over {shape} with parameters of another shape")
            stats = (*x.shape[: x.ndim - k], *(1,) * k)
            return torch.empty_like(x), x.new_empty(stats), x.new_empty(stats)
        return func(*args, **(kwargs or {}))


def _on_meta(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], after: Any) -> Any:
    """Run the recorder with every parameter, buffer and input on the meta device: shapes, no arithmetic."""
    state = {f"gm.{k}": v.to("meta") for k, v in gm.state_dict(keep_vars=True).items()}
    meta_inputs = tuple(t.to("meta") for t in inputs)
    with _NormsOnMeta():
        return torch.func.functional_call(_Recording(gm, after), state, meta_inputs, strict=False)


def record_values(
    gm: fx.GraphModule,
    inputs: tuple[torch.Tensor, ...],
    after_node: Callable[[fx.Node], None] | None = None,
    *,
    shapes_only: bool = False,
) -> Any:
    """Run `gm` (in eval mode, no grad) on `inputs`, annotating each node; returns the output.

    `after_node` is called with each node once its value is recorded (costs.py counts MACs with it).
    With `shapes_only` the run is first tried on the meta device (no arithmetic: the analysis needs only
    shapes, dtypes and Python values); a model that needs real values there (`.item()`, data-dependent
    control flow, constants on another device) is run for real instead. The output is then meta.
    """
    n_placeholders = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
    if n_placeholders != len(inputs):
        raise TraceError(
            f"model takes {n_placeholders} input(s) but {len(inputs)} example input(s) were given"
        )
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            if shapes_only:
                try:
                    return _on_meta(gm, inputs, after_node)
                except Exception:  # noqa: BLE001 - anything meta cannot do is done for real below
                    pass
            return _Recorder(gm, after_node).run(*inputs)
    finally:
        gm.train(was_training)


def arch_hash(gm: fx.GraphModule) -> str:
    """A stable hash of the graph's code and every module's type and configuration."""
    h = hashlib.sha256(gm.code.encode())
    for name, mod in gm.named_modules():
        h.update(f"{name}|{type(mod).__name__}|{mod.extra_repr()}\n".encode())
    for name, p in list(gm.named_parameters()) + list(gm.named_buffers()):
        h.update(f"{name}|{tuple(p.shape)}\n".encode())
    return "sha256:" + h.hexdigest()[:16]

"""Stage 1a: turn a model into a torch.fx GraphModule and record every node's value on example inputs."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from graphprune.errors import ShapeSpecialisedWarning, TraceError, first_line
from graphprune.modcopy import deepcopy_module, shared_tensors
from graphprune.timm_compat import notrace_functions, notrace_module_around

META_KEY = "gp_value"


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of a tensor value seen while running the example inputs."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def _default_leaf_types() -> tuple[type, ...]:
    """Modules kept whole: torchvision's StochasticDepth must keep its train/eval behaviour; timm's
    dynamic-padding convs and functional Linear have the module's channel rule (`timm_compat`)."""
    from graphprune.timm_compat import leaf_types

    try:
        from graphprune.torchvision_compat import import_torchvision

        ops = import_torchvision().ops
        return (ops.StochasticDepth, *leaf_types())
    except Exception:  # noqa: BLE001 - torchvision is optional for tracing
        return leaf_types()


class _Tracer(fx.Tracer):
    """fx tracer that knows extra leaf modules and which module it is inside (for error messages)."""

    def __init__(
        self,
        leaf_types: tuple[type, ...],
        leaf_names: frozenset[str],
        autowrap: tuple[Callable[..., Any], ...] = (),
    ) -> None:
        super().__init__(autowrap_functions=autowrap)
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


class _ValueProxy(fx.Proxy):
    """A proxy whose shape reads are numbers inside the modules its tracer concretises (`_ValueTracer`)."""

    tracer: _ValueTracer

    def _value(self) -> Any:
        return self.tracer.values.get(self.node) if self.tracer.concretising() else None

    def __getattr__(self, k: str) -> Any:
        v = self._value()
        if isinstance(v, torch.Tensor):
            if k == "shape":
                return self.tracer.shape_of(self, v)
            if k == "size":
                return functools.partial(self.tracer.size_of, self, v)
            if k in ("dim", "ndimension", "ndim"):
                return v.dim() if k == "ndim" else v.dim
        return super().__getattr__(k)


class _ValueTracer(_Tracer):
    """`_Tracer` that also runs every op it records on the example inputs. Inside a module whose type is in
    `concrete`, a tensor's shape reads (`x.shape`, `x.size()`, `x.dim()`) are those numbers, so Python
    arithmetic and branches on shapes trace (`math.ceil(H / p)`); the batch dim stays symbolic. The graph
    holds the other sizes as constants: it runs at the example's size. Values never become numbers: a
    branch on data (`if x.sum() > 0`) still fails."""

    def __init__(
        self,
        leaf_types: tuple[type, ...],
        leaf_names: frozenset[str],
        autowrap: tuple[Callable[..., Any], ...],
        example_inputs: tuple[torch.Tensor, ...],
        concrete: tuple[type, ...],
    ) -> None:
        super().__init__(leaf_types, leaf_names, autowrap)
        self.values: dict[fx.Node, Any] = {}
        self.inputs = list(example_inputs)
        self.concrete = concrete
        self.running = False  # computing a value: module calls run, they are not traced

    def concretising(self) -> bool:
        """Whether tracing is inside a module of a `concrete` type (the root included)."""
        inside = (self.root.get_submodule(path) for path, _ in self.path)
        return isinstance(self.root, self.concrete) or any(isinstance(m, self.concrete) for m in inside)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if self.running:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self.running:  # a parameter read while computing a value is the parameter
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ValueProxy(node, self)

    def create_proxy(
        self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *rest: Any, **kw: Any
    ) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        self.values[proxy.node] = self._run(kind, target, args, kwargs)
        return proxy

    def _run(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kind == "placeholder":
            return self.inputs.pop(0) if self.inputs else None
        if kind == "output":
            return None

        def value(a: Any) -> Any:
            return self.values.get(a.node) if isinstance(a, fx.Proxy) else a

        a = fx.node.map_aggregate(args, value)
        kw = fx.node.map_aggregate(kwargs, value)
        self.running = True  # fx's patched Module.__call__/__getattr__ now run and read, not record
        try:
            with torch.no_grad():
                if kind == "get_attr":
                    obj: Any = self.root
                    for part in str(target).split("."):
                        obj = getattr(obj, part)
                    return obj
                if kind == "call_function":
                    return target(*a, **kw)
                if kind == "call_method":
                    return getattr(a[0], target)(*a[1:], **kw)
                return self.root.get_submodule(target)(*a, **kw)
        finally:
            self.running = False

    def shape_of(self, proxy: fx.Proxy, v: torch.Tensor) -> tuple[Any, ...]:
        return tuple(self.size_of(proxy, v, d) for d in range(v.dim()))

    def size_of(self, proxy: fx.Proxy, v: torch.Tensor, dim: int | None = None) -> Any:
        if dim is None:
            return self.shape_of(proxy, v)
        if dim % v.dim() == 0:  # the batch dim stays symbolic
            return self.create_proxy("call_method", "size", (proxy, 0), {})
        return int(v.shape[dim])


def as_input_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Normalise example inputs to a tuple of tensors."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TraceError("example_inputs must be a tensor or a non-empty sequence of tensors")
    return inputs


def symbolic_trace(
    model: nn.Module,
    leaf_modules: Iterable[str | type] = (),
    example_inputs: tuple[torch.Tensor, ...] | None = None,
) -> fx.GraphModule:
    """Trace a copy of `model`'s module tree in eval mode; the user's model is never touched.

    Where tracing fails inside a module and `example_inputs` are given, it is traced again with that
    module's shape reads taken from the example (`_ValueTracer`; a `ShapeSpecialisedWarning` says so).
    Where it still fails inside a timm module that timm declares untraceable (LocalWindowAttention...),
    it is traced again with that module type a leaf (no channel rule: pinned).
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
    error: Exception | None = None
    fallback: tuple[type, ...] = ()  # timm modules timm itself declares untraceable, added as they fail
    concrete: tuple[type, ...] = ()  # modules traced with the example's shapes, added as they fail
    first_failure: tuple[Exception, tuple[str, str]] | None = None  # the one the error names
    while True:
        autowrap = notrace_functions() if fallback else ()
        tracer = (
            _ValueTracer(types + fallback, names, autowrap, example_inputs, concrete)
            if concrete and example_inputs is not None
            else _Tracer(types + fallback, names, autowrap)
        )
        try:
            graph = tracer.trace(root)
            break
        except Exception as exc:  # noqa: BLE001 - any tracing failure becomes a TraceError naming the module
            first_failure = first_failure or (exc, tracer.failed_at or ("", type(model).__name__))
            failed = type(root.get_submodule(tracer.failed_at[0])) if tracer.failed_at else type(root)
            if example_inputs is not None and failed not in concrete + fallback:
                concrete += (failed,)
                continue
            leaf = notrace_module_around(root, tracer.failed_at[0] if tracer.failed_at else "")
            if leaf is not None and leaf not in fallback:
                fallback += (leaf,)
                continue
            error = exc
            break
    if error is not None:
        error, where = first_failure or (error, ("", type(model).__name__))
        mod = f"module '{where[0]}' ({where[1]})" if where[0] else f"model {where[1]}"
        hint = (
            f"; keep it as a leaf module (leaf_modules=['{where[0]}'], or --leaf-module {where[0]})"
            if where[0]
            else ""
        )
        raise TraceError(f"torch.fx cannot trace {mod}: {first_line(error)}{hint}") from None
    for node in graph.nodes:  # `x: torch.Tensor` annotations print as `_Tensor_`, which TorchScript rejects
        if node.type is torch.Tensor or node.type in ("Tensor", "torch.Tensor"):
            node.type = None
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)
    gm.training = model.training
    specialised = sorted({t.__name__ for t in concrete} - {t.__name__ for t in fallback})
    if specialised and isinstance(tracer, _ValueTracer):
        warnings.warn(
            f"traced {', '.join(specialised)} with the example input's shapes (torch.fx cannot trace its "
            f"shape arithmetic): the traced model runs at that input size, with any batch size",
            ShapeSpecialisedWarning,
            stacklevel=3,
        )
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


aten = torch.ops.aten
# pointwise ops whose result has the float input's shape and dtype (in place: is the input)
_UNARY = {aten.relu.default, aten.silu.default, aten.sigmoid.default, aten.hardswish.default}
_UNARY |= {aten.hardsigmoid.default, aten.tanh.default, aten.hardtanh.default}
_UNARY_ = {aten.relu_.default, aten.silu_.default, aten.sigmoid_.default, aten.hardswish_.default}
_UNARY_ |= {aten.hardsigmoid_.default, aten.tanh_.default, aten.hardtanh_.default}
_UNARY |= {aten.gelu.default}  # its `approximate` string is no tensor
_UNARY_ |= {aten.gelu_.default}
_BINARY = {aten.add.Tensor, aten.mul.Tensor, aten.sub.Tensor, aten.div.Tensor}
_BINARY_ = {aten.add_.Tensor, aten.mul_.Tensor}
# a float tensor with a real Python number: the tensor's shape and dtype
_SCALAR = {aten.mul.Scalar, aten.add.Scalar, aten.sub.Scalar, aten.div.Scalar}
# softmax over a dim, in the input's dtype: (x, dim, half_to_float=False) and (x, dim, dtype=None)
_SOFTMAX = {aten._softmax.default, aten._log_softmax.default, aten._safe_softmax.default}


def _dense_floats(*ts: object) -> bool:
    """Contiguous floating tensors of one dtype: where torch's own meta kernels give contiguous results."""
    return _floats_of_one_dtype(*ts) and all(t.is_contiguous() for t in ts)  # type: ignore[attr-defined]


def _floats_of_one_dtype(*ts: object) -> bool:
    first = ts[0]
    return all(
        isinstance(t, torch.Tensor)
        and isinstance(first, torch.Tensor)
        and t.dtype == first.dtype
        and t.is_floating_point()
        for t in ts
    )


class _FastMeta(TorchDispatchMode):
    """The ops a CNN is made of, on the meta device, without torch's Python meta kernels (which cost
    0.05-1 ms a call: most of a meta run): eval-mode batch norm, layer norm, convolution, addmm (linear),
    and the common pointwise ops, softmaxes and means on contiguous float tensors. Each gives the shape,
    dtype and (contiguous) layout torch's kernel gives, and fails where it fails (a mismatch still raises,
    and the recording falls back to a real run); anything else goes to torch. tests/test_trace.py checks
    each against torch."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.device.type != "meta" or kwargs:
            return func(*args, **(kwargs or {}))
        if func is aten.native_batch_norm.default and not args[5] and x.ndim >= 2:
            channels = x.shape[1]
            if any(t is not None and t.numel() != channels for t in args[1:5]):
                raise RuntimeError(f"batch norm over {channels} channels with statistics of another size")
            return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))
        if func is aten.native_layer_norm.default:
            shape, k = tuple(args[1]), len(args[1])
            if x.ndim < k or tuple(x.shape[x.ndim - k :]) != shape:
                raise RuntimeError(f"layer norm over {shape} of an input of shape {tuple(x.shape)}")
            if any(t is not None and tuple(t.shape) != shape for t in args[2:4]):
                raise RuntimeError(f"layer norm over {shape} with parameters of another shape")
            stats = (*x.shape[: x.ndim - k], *(1,) * k)
            return torch.empty_like(x), x.new_empty(stats), x.new_empty(stats)
        fast = _fast_meta(func, x, args)
        return func(*args) if fast is None else fast


def _fast_meta(func: Any, x: torch.Tensor, args: Any) -> torch.Tensor | None:
    """The result of `func(*args)` on the meta device where it is one of the shortcuts, else None."""
    if func in _UNARY_ and _dense_floats(x) and all(not isinstance(a, torch.Tensor) for a in args[1:]):
        return x  # an in-place op returns its input
    if func in _UNARY and _dense_floats(x) and all(not isinstance(a, torch.Tensor) for a in args[1:]):
        return x.new_empty(x.shape)
    if (func in _BINARY or func in _BINARY_) and len(args) == 2 and _dense_floats(x, args[1]):
        shape = torch.broadcast_shapes(x.shape, args[1].shape)
        if func in _BINARY:
            return x.new_empty(shape)
        return x if shape == x.shape else None  # an in-place op cannot grow its input: torch says why
    if func in _SCALAR and len(args) == 2 and type(args[1]) in (int, float) and _dense_floats(x):
        return x.new_empty(x.shape)
    if func in _SOFTMAX and len(args) in (2, 3) and not (args[2:] and args[2]) and _dense_floats(x):
        return x.new_empty(x.shape) if -x.ndim <= args[1] < x.ndim else None  # else torch raises
    if func is aten.addmm.default and len(args) == 3 and _floats_of_one_dtype(*args):
        return _addmm_out(*args)
    if func is aten.mean.dim and len(args) in (2, 3) and args[1] and _dense_floats(x):
        dims = {d % x.ndim for d in args[1]}
        keep = len(args) == 3 and args[2]
        return x.new_empty([1 if d in dims else n for d, n in enumerate(x.shape) if keep or d not in dims])
    if func is aten.convolution.default and not args[6] and 3 <= x.ndim <= 5 and _dense_floats(x, args[1]):
        w, bias, stride, padding, dilation = args[1:6]
        return _conv_out(x, w, bias, stride, padding, dilation, args[8])
    return None


def _addmm_out(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bias + a @ b (what F.linear runs on 2-d inputs): a contiguous (n, m) result, whatever the strides."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise RuntimeError(f"addmm of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    out = (a.shape[0], b.shape[1])
    if torch.broadcast_shapes(bias.shape, out) != out:
        raise RuntimeError(f"addmm bias of shape {tuple(bias.shape)} for a result of shape {out}")
    return a.new_empty(out)


def _conv_out(
    x: torch.Tensor, w: torch.Tensor, bias: Any, stride: Any, padding: Any, dilation: Any, groups: int
) -> torch.Tensor | None:
    """A (non-transposed) convolution's output on the meta device, or None where torch should decide."""
    k = x.ndim - 2
    if w.ndim != x.ndim or not len(stride) == len(padding) == len(dilation) == k:
        return None
    if (
        x.shape[1] != w.shape[1] * groups
        or w.shape[0] % groups
        or (bias is not None and bias.numel() != w.shape[0])
    ):
        raise RuntimeError(f"convolution of an input of shape {tuple(x.shape)} with weights {tuple(w.shape)}")
    size = [
        (n + 2 * p - d * (kk - 1) - 1) // s + 1
        for n, p, d, kk, s in zip(x.shape[2:], padding, dilation, w.shape[2:], stride, strict=True)
    ]
    if min(size) < 1:
        return None  # torch raises its own error
    return x.new_empty((x.shape[0], w.shape[0], *size))


def _on_meta(
    gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...], after: Any, mode: TorchDispatchMode | None
) -> Any:
    """Run the recorder with every parameter, buffer and input on the meta device: shapes, no arithmetic."""
    state = {f"gm.{k}": v.to("meta") for k, v in gm.state_dict(keep_vars=True).items()}
    meta_inputs = tuple(t.to("meta") for t in inputs)
    with _FastMeta(), mode or contextlib.nullcontext():  # `mode` sees each op before the shortcuts
        return torch.func.functional_call(_Recording(gm, after), state, meta_inputs, strict=False)


def record_values(
    gm: fx.GraphModule,
    inputs: tuple[torch.Tensor, ...],
    after_node: Callable[[fx.Node], None] | None = None,
    *,
    shapes_only: bool = False,
    mode: TorchDispatchMode | None = None,
) -> Any:
    """Run `gm` (in eval mode, no grad) on `inputs`, annotating each node; returns the output.

    `after_node` is called with each node once its value is recorded, and every aten op runs under
    `mode` (costs.py counts MACs with the two).
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
                    return _on_meta(gm, inputs, after_node, mode)
                except Exception:  # noqa: BLE001 - anything meta cannot do is done for real below
                    pass
            with mode or contextlib.nullcontext():
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

"""Export a model to ONNX, simplify it, and check onnxruntime computes what PyTorch does.

`export_onnx` never touches the caller's model: it exports a deep copy in eval mode with the
dynamo exporter (`torch.onnx.export(..., dynamo=True)`), batch dimension dynamic by default,
runs onnxsim, checks the file with `onnx.checker`, compares onnxruntime with PyTorch on seeded
random inputs at several batch sizes, and only then renames the file onto `path`. A model too large
for one protobuf (2 GB) keeps its tensors in `<path>.data` beside it (ONNX external data).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import io
import logging
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from graphprune.errors import TraceError, VerificationError, first_line
from graphprune.fileio import check_writable_file, staged_output
from graphprune.trace import as_input_tuple

BATCH_DIM_NAME = "batch"
"""Name of the symbolic batch dimension in exported graphs."""

_FLOAT_TYPES = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
    }
)
_QUIET_LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnxsim", "onnx")
EXTERNAL_DATA_BYTES = 2**31 - 2**26
"""Models whose protobuf would exceed this (2 GiB less a margin for the graph) use external data."""
EXTERNAL_DATA_SUFFIX = ".data"
STATIC_BATCH_HINT = "dynamic_batch=False, or --static-batch on the command line"


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how closely onnxruntime matched PyTorch."""

    path: str
    nodes: int
    """Nodes in the top-level graph of the final file."""
    params: int
    """Elements of floating-point initializers (int64 shape/index constants are not counted)."""
    flops: int | None
    """Multiply-accumulates from `graphprune.costs.count_flops`, None if that module is absent."""
    max_abs_error: float
    max_rel_error: float
    """max_abs_error divided by the largest |PyTorch output|, worst over outputs and batches."""
    opset: int
    simplified: bool
    dynamic_batch: bool
    simplify_error: str | None = None
    """Why onnxsim's result was not used (None when it was, or when simplify=False)."""
    external_data: str | None = None
    """File name (beside `path`) holding the tensors of a model over 2 GB, else None."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return dataclasses.asdict(self)


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[Tensor, ...] | Tensor,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    simplify: bool = True,
    opset: int | None = None,
    check_batches: tuple[int, ...] = (1, 3),
    rtol: float = 1e-3,
    atol: float = 1e-4,
    seed: int = 0,
    label: str | None = None,
    leaf_modules: Iterable[str | type] = (),
) -> ExportReport:
    """Export a deep copy of `model` to ONNX at `path` and verify it with onnxruntime.

    Raises OutputError (before exporting) if `path` cannot be written, TraceError if the
    exporter fails, VerificationError if the file does not match PyTorch within
    `atol + rtol * max|torch output|` at every batch size checked. On any failure no file
    is left at `path` (an existing file there is kept unchanged). Error messages name the file
    `label` (default: `path`), e.g. the final name of a file written into a staging directory.
    `leaf_modules` are kept opaque when counting FLOPs, as in `graphprune.trace`.
    """
    inputs = tuple(t.detach() for t in as_input_tuple(example_inputs))
    batches: tuple[int | None, ...] = (None,)  # None: exactly the example shapes
    if dynamic_batch:
        _check_batchable(inputs)
        if any(b < 1 for b in check_batches):
            raise ValueError(f"check_batches must be positive, got {check_batches}")
        batches = tuple(check_batches) or batches
    target = check_writable_file(path)
    shown = label or str(target)

    net = copy.deepcopy(model).eval()
    proto = _torch_export(net, inputs, dynamic_batch=dynamic_batch, opset=opset)
    if dynamic_batch:
        _require_dynamic_batch(proto, shown)
    actual_opset = _default_opset(proto)
    if opset is not None and actual_opset != opset:
        raise VerificationError(
            f"{shown}: opset {opset} requested but the exporter produced opset {actual_opset}"
        )

    large = _needs_external_data(proto)
    simplified = False
    simplify_error: str | None = None
    if simplify and large:
        simplify_error = "skipped: onnxsim cannot serialise a model over 2 GB"
    elif simplify:
        candidate, simplify_error = _simplify(proto, inputs, rtol=rtol, atol=atol)
        problem = _checker_error(candidate) if candidate is not None else None
        if candidate is not None and problem is None:
            proto, simplified = candidate, True
        elif problem is not None:
            simplify_error = f"onnx.checker rejects the simplified model: {problem}"
    problem = None if simplified or large else _checker_error(proto)
    if problem is not None:
        raise VerificationError(f"{shown}: onnx.checker rejects the exported model: {problem}")

    data_name = target.name + EXTERNAL_DATA_SUFFIX if large else None
    parent = target.parent if str(target.parent) else Path(".")
    with staged_output(parent, (target.name + EXTERNAL_DATA_SUFFIX, target.name)) as stage:
        file = stage / target.name
        _save(proto, file, data_name)
        problem = _checker_error(str(file)) if large else None
        if problem is not None:
            raise VerificationError(f"{shown}: onnx.checker rejects the exported model: {problem}")
        max_abs, max_rel = _verify(net, file, inputs, batches, rtol=rtol, atol=atol, seed=seed, shown=shown)
        flops = _count_flops(net, inputs, leaf_modules)
    return ExportReport(
        path=str(target),
        nodes=len(proto.graph.node),
        params=_float_params(proto.graph),
        flops=flops,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        opset=actual_opset,
        simplified=simplified,
        dynamic_batch=dynamic_batch,
        simplify_error=simplify_error,
        external_data=data_name,
    )


def onnx_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Op-type histogram, node count, parameter count and input/output shapes of an ONNX file.

    Dynamic dimensions appear as strings ("batch"), unknown ones as "?".
    """
    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    ops = Counter(node.op_type for node in graph.node)
    init_names = {init.name for init in graph.initializer}
    return {
        "path": str(path),
        "nodes": len(graph.node),
        "params": _float_params(graph),
        "opset": _default_opset(proto),
        "op_types": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "inputs": [_value_info(v) for v in graph.input if v.name not in init_names],
        "outputs": [_value_info(v) for v in graph.output],
    }


def run_onnx(path: str | os.PathLike[str], inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Run an ONNX file once on CPU with onnxruntime; `inputs` in graph-input order."""
    return _run_session(ort_session(path), inputs)


# --- export ------------------------------------------------------------------------------


def _check_batchable(inputs: tuple[Tensor, ...]) -> None:
    """Dynamic batch needs every input to have a dim 0, all of the same size."""
    sizes = {tuple(t.shape[:1]) for t in inputs}
    if () in sizes or len(sizes) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise TraceError(f"dynamic batch needs inputs sharing a batch dimension, got shapes {shapes}")


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Swallow the exporter's progress prints, Python warnings and torch/onnx log records."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    prefixes = tuple(f"{name}." for name in _QUIET_LOGGERS)
    loggers += [
        lg
        for name, lg in list(logging.root.manager.loggerDict.items())
        if name.startswith(prefixes) and isinstance(lg, logging.Logger)
    ]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null: native code (onnxsim's onnxruntime) prints there."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[tuple[int, int]] = []
    try:
        with open(os.devnull, "wb") as null:
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    saved.append((fd, os.dup(fd)))
                    os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy_fd in saved:
            os.dup2(copy_fd, fd)
            os.close(copy_fd)


def _torch_export(
    net: nn.Module, inputs: tuple[Tensor, ...], *, dynamic_batch: bool, opset: int | None
) -> onnx.ModelProto:
    """Run the dynamo exporter; a batch of 1 is traced as 2 so torch.export cannot specialise it."""
    dynamic_shapes = None
    if dynamic_batch:
        if inputs[0].shape[0] == 1:
            inputs = tuple(t.expand(2, *t.shape[1:]).clone() for t in inputs)
        batch = torch.export.Dim(BATCH_DIM_NAME)
        dynamic_shapes = tuple({0: batch} for _ in inputs)
    with _quiet():
        try:
            program = torch.onnx.export(
                net,
                inputs,
                dynamo=True,
                verbose=False,
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
            )
        except torch.onnx.errors.OnnxExporterError as exc:
            hint = (
                f" (if the dynamic batch is the problem, export with {STATIC_BATCH_HINT})"
                if dynamic_batch
                else ""
            )
            raise TraceError(f"cannot export {type(net).__name__} to ONNX: {_cause_line(exc)}{hint}") from exc
        if program is None:  # only when `f` is given; keeps type checkers happy
            raise TraceError(f"cannot export {type(net).__name__} to ONNX: exporter returned nothing")
        return program.model_proto


def _cause_line(exc: BaseException) -> str:
    """The most telling one-line description of a failure in another library (its cause, if any)."""
    return first_line(exc.__cause__ or exc, with_type=True)


def _require_dynamic_batch(proto: onnx.ModelProto, shown: str) -> None:
    """torch.export may silently specialise the batch size; refuse a file with a fixed batch."""
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_param:
            raise VerificationError(
                f"{shown}: input {value.name!r} kept a fixed batch size {dims[0].dim_value}; the model "
                f"specialises on its batch size (export it as is with {STATIC_BATCH_HINT})"
            )


def _default_opset(proto: onnx.ModelProto) -> int:
    """Version of the default ("" / ai.onnx) domain."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _needs_external_data(proto: onnx.ModelProto) -> bool:
    """True when the model is too large for one protobuf message (tensors must go to external data)."""
    try:
        return proto.ByteSize() > EXTERNAL_DATA_BYTES
    except Exception:  # noqa: BLE001 - protobuf refuses to even measure some oversized messages
        return True


def _save(proto: onnx.ModelProto, file: Path, data_name: str | None) -> None:
    """Write `proto` to `file`; with `data_name`, its tensors go to that file beside it."""
    if data_name is None:
        onnx.save(proto, str(file))
        return
    onnx.save_model(
        proto,
        str(file),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def _simplify(
    proto: onnx.ModelProto, inputs: tuple[Tensor, ...], *, rtol: float, atol: float
) -> tuple[onnx.ModelProto | None, str | None]:
    """onnxsim the model with one self-check at the example shapes: (model, None) or (None, why not)."""
    import onnxsim  # type: ignore[import-untyped]

    names = [v.name for v in proto.graph.input]
    wanted: dict[str, Any] = {
        "check_n": 1,
        "test_input_shapes": {n: list(t.shape) for n, t in zip(names, inputs, strict=False)},
        "check_rtol": rtol,
        "check_atol": atol,
        "certify": False,
    }
    accepted = inspect.signature(onnxsim.simplify).parameters
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    with _quiet(), _quiet_fds():
        try:
            simplified, ok = onnxsim.simplify(copy.deepcopy(proto), **kwargs)
        except Exception as exc:  # noqa: BLE001 - any onnxsim failure means: keep the unsimplified model
            return None, f"onnxsim failed: {_cause_line(exc)}"
    if not ok:
        return None, "onnxsim's simplified model failed its own check against the original"
    return simplified, None


def _checker_error(model: onnx.ModelProto | str) -> str | None:
    """onnx.checker (with full shape-inference check) message, or None if the model passes.

    `model` is a proto, or the path of a saved file (needed for models with external data).
    """
    with _quiet():
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            return _cause_line(exc)
    return None


def _float_params(graph: onnx.GraphProto) -> int:
    """Elements of floating-point initializers and Constant-node tensors in the top-level graph."""
    tensors = list(graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value" and a.HasField("t")]
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in tensors if t.data_type in _FLOAT_TYPES)


def _count_flops(
    net: nn.Module, inputs: tuple[Tensor, ...], leaf_modules: Iterable[str | type]
) -> int | None:
    """Multiply-accumulates of `net` via graphprune.costs, if that module exists."""
    try:
        from graphprune.costs import count_flops
    except ImportError:
        return None
    return int(count_flops(net, inputs, leaf_modules=leaf_modules))


# --- verification -------------------------------------------------------------------------


def _random_like(example: Tensor, batch: int | None, gen: torch.Generator) -> Tensor:
    """Seeded random tensor shaped like `example`, with dim 0 set to `batch` (if given)."""
    shape = (batch, *example.shape[1:]) if batch is not None and example.dim() else tuple(example.shape)
    if example.dtype.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=example.dtype)
    if example.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    low = int(example.min()) if example.numel() else 0
    high = int(example.max()) + 1 if example.numel() else 1
    return torch.randint(low, high, shape, generator=gen, dtype=example.dtype)


def _verify(
    net: nn.Module,
    file: Path,
    inputs: tuple[Tensor, ...],
    batches: tuple[int | None, ...],
    *,
    rtol: float,
    atol: float,
    seed: int,
    shown: str,
) -> tuple[float, float]:
    """Compare onnxruntime with PyTorch at each batch size; return (max abs, max rel) error."""
    try:
        session = ort_session(file)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise VerificationError(f"{shown}: onnxruntime cannot load the file: {_cause_line(exc)}") from exc
    gen = torch.Generator().manual_seed(seed)
    worst_abs = worst_rel = 0.0
    for batch in batches:
        where = f"batch {batch}" if batch is not None else f"batch {_batch_of(inputs)} (static)"
        feed = tuple(_random_like(t, batch, gen) for t in inputs)
        try:
            with torch.no_grad():
                result = net(*feed)
        except Exception as exc:  # any model error means this batch size is unsupported
            hint = f" (export with {STATIC_BATCH_HINT})" if batch is not None else ""
            raise VerificationError(
                f"{shown}: the PyTorch model fails at {where}: {_cause_line(exc)}{hint}"
            ) from exc
        expected = [t.detach().cpu().numpy() for t in tree_flatten(result)[0] if isinstance(t, Tensor)]
        try:
            got = _run_session(session, tuple(t.numpy() for t in feed))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VerificationError(f"{shown}: onnxruntime fails at {where}: {_cause_line(exc)}") from exc
        if len(got) != len(expected):
            raise VerificationError(
                f"{shown}: {len(got)} outputs in ONNX, {len(expected)} in PyTorch ({where})"
            )
        for index, (ref, out) in enumerate(zip(expected, got, strict=True)):
            if ref.shape != out.shape:
                raise VerificationError(
                    f"{shown}: output {index} has shape {out.shape} in ONNX, {ref.shape} in PyTorch ({where})"
                )
            abs_err, scale = _abs_error(ref, out)
            rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
            if not abs_err <= atol + rtol * scale:  # `not <=` so NaN counts as a mismatch
                raise VerificationError(
                    f"{shown}: onnxruntime differs from PyTorch at {where}, output {index}: "
                    f"max abs error {abs_err:.3g} (rel {rel_err:.3g}) > "
                    f"atol {atol:g} + rtol {rtol:g} * {scale:.3g}"
                )
            worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
    return worst_abs, worst_rel


def _batch_of(inputs: tuple[Tensor, ...]) -> int | str:
    """Dim 0 of the first input, for messages."""
    return int(inputs[0].shape[0]) if inputs[0].dim() else "-"


def _abs_error(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(max |out - ref|, max |ref|) ignoring matching NaN/inf; NaN if only one side is NaN."""
    if ref.size == 0:
        return 0.0, 0.0
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(out64 - ref64)
    same = (ref64 == out64) | (np.isnan(ref64) & np.isnan(out64))
    diff = np.where(same, 0.0, diff)
    finite = np.abs(ref64[np.isfinite(ref64)])
    scale = float(finite.max()) if finite.size else 0.0
    return float(diff.max()), scale


# --- onnxruntime --------------------------------------------------------------------------


def ort_session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """CPU onnxruntime session with warnings off (and `threads` intra-op threads if given)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach us as exceptions
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run_session(session: Any, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Feed `inputs` to the session's inputs in order; return all outputs."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"model takes {len(names)} inputs, got {len(inputs)}")
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4  # failures reach the caller as exceptions, not stderr
    return list(session.run(None, dict(zip(names, inputs, strict=True)), run_options))


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    """Name, dtype and shape (dynamic dims as strings) of a graph input or output."""
    tensor = value.type.tensor_type
    shape: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or "?")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
    return {"name": value.name, "dtype": dtype, "shape": shape}

"""Verify: shape propagation on example inputs plus a numerical check. It only checks, never rewrites.

The numerical check compares against a reference leaf by leaf (non-tensor leaves must be equal), with a
tolerance scaled to each part of each tensor, so a wrong part with small values cannot hide beside a
large one. Given a reference *model*, both models also run on fresh random inputs with another batch size:
first in their own dtype, where a match to `quick_rtol` of every part passes at once, else in float64, where
a part's rounding noise stays far below `rtol` and the verdict is final.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.utils._pytree import tree_flatten, tree_leaves

from graphprune.errors import TraceError, VerificationError, first_line
from graphprune.trace import record_values

# in a model's own (float32) precision a part's rounding error reaches ~1e-4 of its scale (measured: logits)
NARROW_PART_RTOL = 1e-2
# float32 rounding between a model and its rewrite reaches ~1e-4 of a part's scale (measured: resnet50 1.0e-4,
# resnet152 4.5e-4); a wrong rewrite moves a part by far more. A miss above this goes on to float64.
QUICK_PART_RTOL = 1e-3
# fresh random inputs batched with the example ones: another batch size, and values the example lacks
FRESH_INPUTS = 1
# a part's scale never drops below this fraction of its tensor's largest value (exact zeros stay checkable)
PART_FLOOR = 1e-9


def part_scale(ref: torch.Tensor) -> torch.Tensor:
    """Per element, the largest |value| of the smallest-valued part it belongs to.

    A part is a slice through the element along one non-batch dim (its channel, its row, its feature...);
    the element's scale is the minimum over those parts, so a channel or feature of small values is judged
    on its own scale. Dim 0 (the batch) is never a part on its own.
    """
    a = ref.detach().abs().double()
    if a.ndim < 2:
        return a
    scale = None
    for d in range(1, a.ndim):
        s = a.amax(dim=[k for k in range(a.ndim) if k != d], keepdim=True)
        scale = s if scale is None else torch.minimum(scale, s)
    assert scale is not None
    return scale.expand_as(a)


def mismatch(out: object, ref: object, rtol: float) -> str | None:
    """Why `out` differs from `ref` beyond `rtol`, or None. Compared leaf by leaf, part by part."""
    got, got_spec = tree_flatten(out)
    want, want_spec = tree_flatten(ref)
    if got_spec != want_spec:
        return f"output structure differs: {got_spec} vs {want_spec}"
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        where = f"output leaf {i}" if len(got) > 1 else "output"
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return f"{where}: {type(x).__name__} vs {type(y).__name__}"
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                return f"{where}: {x!r} vs {y!r}"
            continue
        if x.shape != y.shape:
            return f"{where}: shape {tuple(x.shape)} vs {tuple(y.shape)}"
        if not x.numel():
            continue
        if not (x.is_floating_point() or x.is_complex()):
            if not torch.equal(x, y):
                return f"{where}: values differ"
            continue
        diff = (x.detach().double() - y.detach().double()).abs()
        scale = part_scale(y)
        scale = torch.maximum(scale, PART_FLOOR * scale.max()).clamp_min(1e-30)
        err = diff / scale
        worst = float(err.max())
        if not worst <= rtol:  # also catches nan
            at = tuple(int(k) for k in torch.unravel_index(err.argmax(), err.shape))
            return f"{where}: relative error {worst:.3g} at index {at} (tolerance {rtol:g}, scaled per part)"
    return None


def max_rel_error(out: object, ref: object) -> float:
    """max |out - ref| / max |ref| over all tensor leaves; inf if the structures or shapes differ."""
    a, b = (
        [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)],
        [t for t in tree_leaves(ref) if isinstance(t, torch.Tensor)],
    )
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
        return float("inf")
    err = 0.0
    for x, y in zip(a, b, strict=False):
        scale = max(float(y.abs().max()), 1e-12) if y.numel() else 1.0
        if x.numel():
            err = max(err, float((x.double() - y.double()).abs().max()) / scale)
    return err


def fresh_inputs(
    inputs: Sequence[torch.Tensor], batch: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random inputs like `inputs` (with `batch` rows on dim 0, unless None): floats drawn with each input's
    mean and std, other dtypes (token ids, masks) drawn from the values the input holds."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in inputs:
        shape = (batch, *t.shape[1:]) if t.ndim and batch is not None else tuple(t.shape)
        flat = t.detach().reshape(-1)
        if t.is_floating_point() and flat.numel() > 1 and float(flat.double().std()) > 0:
            mean, std = flat.double().mean(), flat.double().std()
            out.append((torch.randn(shape, generator=g, dtype=torch.float64) * std + mean).to(t.dtype))
        elif flat.numel():
            out.append(flat[torch.randint(flat.numel(), shape, generator=g)])
        else:
            out.append(t.new_empty(shape))
    return tuple(out)


def with_fresh(inputs: Sequence[torch.Tensor], fresh: int = FRESH_INPUTS) -> tuple[torch.Tensor, ...]:
    """`inputs` with `fresh` random rows (`fresh_inputs`) appended on dim 0: the batch a model check runs."""
    extra = fresh_inputs(inputs, fresh)
    return tuple(torch.cat([t, e]) if t.ndim else t for t, e in zip(inputs, extra, strict=True))


@contextlib.contextmanager
def float64(gm: nn.Module) -> Iterator[None]:
    """Run `gm` in float64 for the block: its floating tensors are swapped for float64 copies, and the
    original tensor objects are put back after (nothing of them is changed)."""
    saved: list[tuple[dict[str, Any], str, torch.Tensor]] = []  # (table of the module, name, original)
    for mod in gm.modules():
        tables: list[dict[str, Any]] = [mod._parameters, mod._buffers, vars(mod)]
        for table in tables:
            for name, t in list(table.items()):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
                    saved.append((table, name, t))
    try:
        for table, name, t in saved:
            d = t.detach().double()
            table[name] = nn.Parameter(d, t.requires_grad) if isinstance(t, nn.Parameter) else d
        yield
    finally:
        for table, name, t in saved:
            table[name] = t


@contextlib.contextmanager
def _same_dtype(gm: nn.Module) -> Iterator[None]:
    yield


def _run(gm: nn.Module, inputs: Sequence[torch.Tensor]) -> Any:
    """`gm(*inputs)` in eval mode without grad. A GraphModule that raises prints a traceback of its code to
    stderr first: that is held back (the caller reports the failure), what a run that works prints is not."""
    was_training = gm.training
    gm.eval()
    held = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stderr(held):
            out = gm(*inputs)
        sys.stderr.write(held.getvalue())
        return out
    finally:
        gm.train(was_training)


def _run_pair(
    gm: nn.Module, reference: nn.Module, inputs: Sequence[torch.Tensor], what: str
) -> tuple[Any, Any] | None:
    """(rewritten output, reference output) on `inputs`; None if the reference does not take them. A
    rewrite that does not run where its reference does raises VerificationError."""
    try:
        expected = _run(reference, inputs)
    except Exception:  # noqa: BLE001 - any failure means these inputs are not the reference's
        return None
    try:
        got = _run(gm, inputs)
    except Exception as exc:  # noqa: BLE001 - the reference ran, so the rewrite must
        raise VerificationError(f"rewritten graph does not run on {what}: {first_line(exc)}") from None
    return got, expected


class Verify(PassBase):
    """Runs the graph and compares it with `reference`: the expected output on `inputs`, or a model
    computing it.

    Against a model, both models run on the example inputs batched together with `fresh` random ones
    (another batch size); no separate run on the example inputs alone is needed. A model that only
    takes the example batch size is checked on fresh inputs of that size instead. That run is first made in
    the models' own dtype, and passes if every part matches to `quick_rtol` (None: never); otherwise it is
    repeated in float64 against `rtol`.
    """

    def __init__(
        self,
        inputs: Sequence[torch.Tensor],
        reference: object = None,
        rtol: float = 1e-5,
        fresh: int = FRESH_INPUTS,
        quick_rtol: float | None = QUICK_PART_RTOL,
    ) -> None:
        super().__init__()
        self.inputs = tuple(inputs)
        self.reference = reference
        self.rtol = rtol
        self.fresh = fresh
        self.quick_rtol = quick_rtol

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        if isinstance(self.reference, nn.Module):  # the runs of both models below check every value
            try:
                self._compare_models(graph_module, self.reference)
            except VerificationError as exc:
                self._name_the_node(graph_module, exc)
                raise
            return PassResult(graph_module, False)
        try:
            out = record_values(graph_module, self.inputs)
        except TraceError as exc:
            raise VerificationError(f"rewritten graph does not run: {exc}") from None
        leaves = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(not torch.isfinite(t).all() for t in leaves if t.is_floating_point()):
            raise VerificationError("rewritten graph produces non-finite values")
        if self.reference is not None:
            self._fail_on(mismatch(out, self.reference, self.rtol), "the example inputs")
        return PassResult(graph_module, False)

    def _name_the_node(self, gm: fx.GraphModule, exc: VerificationError) -> None:
        """Where the rewrite does not even run on the example inputs, say at which node (a shape run)."""
        try:
            record_values(gm, self.inputs, shapes_only=True)
        except TraceError as where:
            raise VerificationError(f"rewritten graph does not run: {where}") from exc

    def _compare_models(self, gm: nn.Module, reference: nn.Module) -> None:
        """[example; fresh] in one batch, in the models' own dtype against `quick_rtol`, then (unless that
        matched) in float64; if the model only takes the example batch size, on fresh inputs and the
        example separately; if it cannot run in float64, the same in its own dtype (where rounding allows
        only a looser per-part tolerance, beside the usual whole-tensor one)."""
        candidates = []
        if self.fresh and any(t.ndim for t in self.inputs):
            joined = with_fresh(self.inputs, self.fresh)
            candidates.append(
                (joined, f"the example inputs with {self.fresh} fresh " + "ones"[: 3 + (self.fresh > 1)])
            )
        candidates.append((fresh_inputs(self.inputs), "fresh inputs of the example batch size"))
        candidates.append((self.inputs, "the example inputs"))
        if self.quick_rtol is not None and self._matches_quickly(gm, reference, candidates[0]):
            return
        for wide in (True, False):
            ctx = float64 if wide else _same_dtype
            checked = 0
            for inputs, what in candidates:
                if wide:
                    inputs = tuple(t.double() if t.is_floating_point() else t for t in inputs)
                with ctx(reference), ctx(gm):
                    pair = _run_pair(gm, reference, inputs, what)
                if pair is None:  # the reference does not take these inputs: next ones
                    continue
                got, expected = pair
                floats = [
                    t for t in tree_leaves(expected) if isinstance(t, torch.Tensor) and t.is_floating_point()
                ]
                if wide and all(t.dtype == torch.float64 for t in floats):
                    self._fail_on(mismatch(got, expected, self.rtol), what)
                else:  # computed in (or cast back to) a narrower dtype somewhere
                    self._fail_on(mismatch(got, expected, max(self.rtol, NARROW_PART_RTOL)), what)
                    if max_rel_error(got, expected) > self.rtol:
                        self._fail_on(f"relative error {max_rel_error(got, expected):.3g}", what)
                checked += 1
                if checked == 2 or what.startswith("the example inputs with"):
                    return
            if checked:
                return
        raise VerificationError("the reference model runs on none of the inputs")

    def _matches_quickly(
        self, gm: nn.Module, reference: nn.Module, candidate: tuple[tuple[torch.Tensor, ...], str]
    ) -> bool:
        """Both models in their own dtype on `candidate`: True if every part matches to `quick_rtol`."""
        pair = _run_pair(gm, reference, *candidate)
        assert self.quick_rtol is not None
        return pair is not None and mismatch(*pair, self.quick_rtol) is None

    def _fail_on(self, why: str | None, inputs: str) -> None:
        if why is not None:
            raise VerificationError(f"rewritten graph differs from its reference on {inputs}: {why}")

    def __call__(self, graph_module: fx.GraphModule) -> PassResult:
        return self.call(graph_module)

"""Verify: shape propagation on example inputs plus a numerical check. It only checks, never rewrites."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult
from torch.utils._pytree import tree_leaves

from graphprune.errors import TraceError, VerificationError
from graphprune.trace import record_values


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


class Verify(PassBase):
    """Runs the graph on the inputs (every node's shape is re-derived); optionally compares to `reference`."""

    def __init__(self, inputs: Sequence[torch.Tensor], reference: object = None, rtol: float = 1e-5) -> None:
        super().__init__()
        self.inputs = tuple(inputs)
        self.reference = reference
        self.rtol = rtol

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        try:
            out = record_values(graph_module, self.inputs)
        except TraceError as exc:
            raise VerificationError(f"rewritten graph does not run: {exc}") from None
        leaves = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(not torch.isfinite(t).all() for t in leaves if t.is_floating_point()):
            raise VerificationError("rewritten graph produces non-finite values")
        if self.reference is not None:
            err = max_rel_error(out, self.reference)
            if err > self.rtol:
                raise VerificationError(
                    f"rewritten graph differs from its reference: relative error {err:.3g}"
                )
        return PassResult(graph_module, False)

    def __call__(self, graph_module: fx.GraphModule) -> PassResult:
        return self.call(graph_module)

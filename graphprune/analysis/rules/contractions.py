"""Contractions (matmul, bmm, einsum): prunable when both operands carry the same channels on the
contracted dim (`q^T k`); every other channel layout pins.

A channel zeroed in either operand adds 0 to every sum of products, so removing it from both is exact: the
two operands' channels are coupled position by position and each gets a REDUCE site (the reference zeroes
the removed channels; the op itself needs no rewrite). The result has no channels.
"""

from __future__ import annotations

import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.rules.base import new_tensor, op_name, unknown
from graphprune.analysis.rules.reductions import reduce_site


def _contract(dg: DependencyGraph, node: fx.Node, operands: list[tuple[fx.Node, int]]) -> None:
    """`operands`: each tensor operand with the dim the op contracts it over (-1: none)."""
    infos: list[TensorInfo] = []
    for a, dim in operands:
        info = dg.info(a)
        if info is None or not info.size:
            continue
        if dim < 0 or info.cdims != (dim,):
            unknown(dg, node, f"{op_name(node, dg)} does not contract over the channels of {a.name}")
            return
        infos.append(info)
    if not infos:
        new_tensor(dg, node, ())
        return
    if len(infos) != 2 or infos[0].size != infos[1].size:
        unknown(dg, node, f"{op_name(node, dg)} contracts channels of only one operand")
        return
    if infos[0].key != infos[1].key:
        dg.identity(infos[0].key, infos[1].key, node.name)
    for info in infos:
        reduce_site(dg, node, info)
    new_tensor(dg, node, ())


def matmul(dg: DependencyGraph, node: fx.Node) -> None:
    """matmul / bmm / `@`: a (..., n, k) @ b (..., k, m) contracts a's last dim with b's second-to-last
    (a 1-d operand: its only dim)."""
    a, b = node.args[0], node.args[1]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        unknown(dg, node, f"{op_name(node, dg)} with a constant operand")
        return
    na, nb = len(dg.spec(a).shape), len(dg.spec(b).shape)
    _contract(dg, node, [(a, na - 1), (b, max(nb - 2, 0))])


def einsum(dg: DependencyGraph, node: fx.Node) -> None:
    """einsum with an explicit output (`'bci,bcj->bij'`): contracted letters are those not in the output;
    a letter repeated within an operand (a diagonal) or an ellipsis pins."""
    equation = dg.value(node.args[0])
    rest = list(node.args[1:])
    tensors = list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
    if not isinstance(equation, str) or "->" not in equation or "." in equation:
        unknown(dg, node, f"einsum '{equation}' without an explicit output or with an ellipsis")
        return
    lhs, out = equation.replace(" ", "").split("->")
    subscripts = lhs.split(",")
    nodes = [t for t in tensors if isinstance(t, fx.Node)]
    if len(subscripts) != len(tensors) or len(nodes) != len(tensors):
        unknown(dg, node, f"einsum '{equation}' with a constant operand")
        return
    operands: list[tuple[fx.Node, int]] = []
    for t, sub in zip(nodes, subscripts, strict=True):
        info = dg.info(t)
        cdim = info.cdims[0] if info is not None and len(info.cdims) == 1 else -1
        letter = sub[cdim] if 0 <= cdim < len(sub) else ""
        contracted = letter and letter not in out and sub.count(letter) == 1
        operands.append((t, cdim if contracted else -1))
    letters = {sub[d] for (_, d), sub in zip(operands, subscripts, strict=True) if d >= 0}
    if len(letters) > 1:
        unknown(dg, node, f"einsum '{equation}' contracts its operands' channels over different letters")
        return
    _contract(dg, node, operands)

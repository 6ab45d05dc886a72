"""Block gates (ABP): `y = s(x) + m(x) * f(x)` with a learned per-sample mark m in [0, 1] on every block.

InsertBlockGates puts a `BlockGate` on each block; RemoveBlockGates takes them out again, replacing each
gate by a fixed mark that FoldScale folds into the branch's last conv / linear / BN (a mark of 1 leaves
the block as it was traced).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.blocks import Block
from graphprune.errors import PlanError
from graphprune.passes.base import GraphPass
from graphprune.passes.fold_scale import FoldScale
from graphprune.trace import META_KEY, TensorSpec

GATES = "abp_gates"  # the submodule holding every gate of a gated graph


class BlockGate(nn.Module):
    """SkipNet-style gate: global average pool -> Linear -> [BatchNorm] -> ReLU -> Linear -> sigmoid, one
    mark per sample.

    Reads the block's shortcut s(x) (the block input for identity shortcuts), returns the mark shaped to
    broadcast over f(x) and keeps it in `self.mark` (shape (N,)) for the regulariser and the vote.
    A pruned gate (`pruned` buffer set) outputs 0: the block is off but its shape is kept.
    `norm` puts a BatchNorm on the hidden layer, as ConvNet-AIG's gates have: pooled features differ
    little between samples, and without it the mark is nearly the same for every input.
    """

    pruned: torch.Tensor

    def __init__(
        self, channels: int, hidden: int = 16, init_mark: float = 0.95, block: str = "", norm: bool = False
    ) -> None:
        super().__init__()
        self.block = block  # the name of the gated block
        self.fc1 = nn.Linear(channels, hidden)
        self.norm: nn.Module = nn.BatchNorm1d(hidden) if norm else nn.Identity()
        self.fc2 = nn.Linear(hidden, 1)
        # start near "on" so a trained network is barely changed by inserting the gates
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, float(torch.logit(torch.tensor(init_mark))))
        self.register_buffer("pruned", torch.tensor(False))
        self.mark: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
        m = torch.sigmoid(self.fc2(torch.relu(self.norm(self.fc1(pooled))))).squeeze(1)
        m = torch.where(self.pruned, torch.zeros_like(m), m)
        self.mark = m
        return m.reshape(-1, *([1] * (x.dim() - 1)))


def gate_name(block: str) -> str:
    """The attribute of a block's gate under `abp_gates` (`layer1.0` -> `layer1_0`)."""
    return block.replace(".", "_").replace("#", "_")


def gates_of(model: nn.Module) -> dict[str, BlockGate]:
    """Block name -> its gate, in graph order, for a model made by InsertBlockGates."""
    holder = getattr(model, GATES, None)
    if holder is None:
        return {}
    return {m.block or name: m for name, m in holder.named_children() if isinstance(m, BlockGate)}


def forget_marks(model: nn.Module) -> None:
    """Drop the marks the gates kept from the last forward (they may hold an autograd graph, which
    `copy.deepcopy` refuses)."""
    for gate in gates_of(model).values():
        gate.mark = None


def branch_scales(gm: fx.GraphModule) -> dict[str, nn.Parameter]:
    """Block name -> the scale (γ) of the affine BatchNorm that ends its gated branch, where one does.

    `m * BN(z)` has a flat direction: m can shrink while γ grows, so a mark need not say what the block
    is worth. ABP freezes these scales while the marks train."""
    gates = {f"{GATES}.{gate_name(name)}": name for name in gates_of(gm)}
    modules = dict(gm.named_modules())
    out: dict[str, nn.Parameter] = {}
    for node in gm.graph.nodes:
        block = gates.get(str(node.target)) if node.op == "call_module" else None
        if block is None:
            continue
        for mul in node.users:
            branch = next((a for a in mul.args if a is not node), None)
            if isinstance(branch, fx.Node) and branch.op == "call_module":
                norm = modules[str(branch.target)]
                if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.weight is not None:
                    out[block] = norm.weight
    return out


def _channels(node: fx.Node) -> int:
    spec = node.meta.get(META_KEY)
    if not isinstance(spec, TensorSpec) or len(spec.shape) < 2:
        raise PlanError(f"cannot gate the block at '{node.name}': its shortcut has no (N, C, ...) shape")
    return spec.shape[1]


class InsertBlockGates(GraphPass):
    """`add(s, f)` -> `add(s, f * gate(s))` on every block; gates live under `abp_gates`."""

    def __init__(
        self, blocks: Sequence[Block], hidden: int = 16, init_mark: float = 0.95, norm: bool = False
    ) -> None:
        super().__init__()
        self.blocks = list(blocks)
        self.hidden = hidden
        self.init_mark = init_mark
        self.norm = norm

    def requires(self, graph_module: fx.GraphModule) -> None:
        if hasattr(graph_module, GATES):
            raise PlanError(f"model already has '{GATES}': gates are inserted once")

    def call(self, gm: fx.GraphModule) -> PassResult:
        nodes = {n.name: n for n in gm.graph.nodes}
        holder = nn.Module()
        gm.add_submodule(GATES, holder)
        for b in self.blocks:
            add, branch = nodes[b.add], nodes[b.branch]
            shortcut = next(a for a in add.args if a is not branch)
            assert isinstance(shortcut, fx.Node)
            name = gate_name(b.name)
            gate = BlockGate(_channels(shortcut), self.hidden, self.init_mark, b.name, self.norm)
            ref = next(iter(gm.parameters()), None)
            if ref is not None:
                gate.to(ref.device)
            holder.add_module(name, gate)
            with gm.graph.inserting_before(add):
                mark = gm.graph.call_module(f"{GATES}.{name}", (shortcut,))
                scaled = gm.graph.call_function(operator.mul, (branch, mark))
            add.args = tuple(scaled if a is branch else a for a in add.args)
        return PassResult(gm, bool(self.blocks))


class RemoveBlockGates(GraphPass):
    """Drop every gate, fixing its block's mark: `marks[block]` (default 1) is folded into the branch.

    With every mark 1 the graph is the traced one again, so plans made for it still apply.
    """

    def __init__(self, marks: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.marks = dict(marks or {})

    def call(self, gm: fx.GraphModule) -> PassResult:
        names = {f"{GATES}.{gate_name(b)}": b for b in self.marks}
        found: set[str] = set()
        folded = False
        for node in list(gm.graph.nodes):
            if node.op != "call_module" or not str(node.target).startswith(f"{GATES}."):
                continue
            (mul,) = node.users
            branch = next(a for a in mul.args if a is not node)
            block = names.get(str(node.target))
            mark = 1.0 if block is None else float(self.marks[block])
            if block is not None:
                found.add(block)
            if mark == 1.0:
                mul.replace_all_uses_with(branch)
            else:
                folded = True
                with gm.graph.inserting_before(mul):
                    fixed = gm.graph.call_function(operator.mul, (branch, mark))
                mul.replace_all_uses_with(fixed)
            gm.graph.erase_node(mul)
            gm.graph.erase_node(node)
        missing = sorted(set(self.marks) - found)
        if missing:
            raise PlanError(f"no gate for block '{missing[0]}'")
        if hasattr(gm, GATES):
            delattr(gm, GATES)
        if folded:  # only then: FoldScale would also fold the model's own constant scales
            gm = FoldScale().run_owned(gm).graph_module
        return PassResult(gm, True)

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from graphprune.modcopy import clone_shared, deepcopy_module
from graphprune.models import get_model


class WithState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.mask = torch.ones(4)  # a plain tensor attribute (no truth value)
        self.table: dict[str, int] = {}
        self.conv.register_forward_hook(lambda m, i, o: o * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.mask.view(1, -1, 1, 1)


def test_a_copy_owns_its_tensors_and_tables_and_computes_the_same() -> None:
    model, x = WithState().eval(), torch.randn(1, 3, 4, 4)
    dup = deepcopy_module(model)
    torch.testing.assert_close(dup(x), model(x))  # the forward hook came along
    assert dup.conv.weight is not model.conv.weight and torch.equal(dup.conv.weight, model.conv.weight)
    assert dup.mask is not model.mask and dup.table is not model.table
    assert dup.conv._forward_pre_hooks is not model.conv._forward_pre_hooks
    dup.conv._forward_pre_hooks[0] = print
    assert not model.conv._forward_pre_hooks


def test_shared_tensors_are_kept() -> None:
    model = get_model("cifar_resnet20")
    shared = list(model.parameters())
    dup = deepcopy_module(model, shared)
    assert all(a is b for a, b in zip(dup.parameters(), shared, strict=True))
    assert all(a is not b for a, b in zip(dup.buffers(), model.buffers(), strict=True))


def test_clone_shared_copies_the_shared_tensors_once_and_keeps_ties() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.BatchNorm1d(3))
    model[1].weight = model[0].weight  # tied
    dup = deepcopy_module(model, list(model.parameters()) + list(model.buffers()))
    dup[1].bias = nn.Parameter(torch.zeros(3))  # replaced, as a pass would: already its own
    clone_shared(dup, list(model.parameters()) + list(model.buffers()))
    ours = {id(t) for t in list(model.parameters()) + list(model.buffers())}
    assert not any(id(t) in ours for t in list(dup.parameters()) + list(dup.buffers()))
    assert dup[1].weight is dup[0].weight and isinstance(dup[0].weight, nn.Parameter)
    assert torch.equal(dup[0].weight, model[0].weight)
    assert torch.equal(dup[2].running_var, model[2].running_var)
    assert not dup[2].num_batches_tracked.requires_grad


class Custom(nn.Module):
    """A module with its own __deepcopy__: copied by copy.deepcopy itself."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.copied = 0

    def __deepcopy__(self, memo: dict) -> Custom:
        new = Custom()
        new.lin = copy.deepcopy(self.lin, memo)
        new.copied = self.copied + 1
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Tree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        shared = nn.Linear(2, 2)
        self.a, self.b = shared, shared  # one module in two places
        self.c = Custom()
        self.items = [1, [2, 3]]  # mutable, also held by a submodule
        self.c.lin.items = self.items
        self.config = {"k": (1, "x"), "nested": {"d": [4]}}
        self.register_buffer("buf", torch.arange(3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x) + self.c(x)


def _layout(root: nn.Module) -> list[tuple[str, str, str]]:
    """Every attribute of every module as (path, name, type), with objects shared in the tree numbered."""
    seen: dict[int, int] = {}
    rows = []
    for path, m in root.named_modules(remove_duplicate=False):
        for name, value in sorted(vars(m).items()):
            tag = type(value).__name__
            if not isinstance(value, (int, float, str, bool, type(None))):
                tag += f"#{seen.setdefault(id(value), len(seen))}"
            rows.append((path, name, tag))
    return rows


def _code_later(module: nn.Module) -> nn.Module:
    copied = deepcopy_module(module, code=False)
    assert isinstance(copied, torch.fx.GraphModule)
    with pytest.raises(NotImplementedError):  # no forward until its code is generated
        copied(torch.randn(3, 2))
    copied.recompile()
    return copied


@pytest.mark.parametrize(
    ("make", "copier"),
    [(Tree, deepcopy_module), (lambda: torch.fx.symbolic_trace(Tree()), deepcopy_module)]
    + [(lambda: torch.fx.symbolic_trace(Tree()), _code_later)],
    ids=["plain", "graph", "graph-code-later"],
)
def test_deepcopy_module_is_copy_deepcopy(make, copier) -> None:
    model, x = make().eval(), torch.randn(3, 2)
    ours, theirs = copier(model), copy.deepcopy(model)
    assert _layout(ours) == _layout(theirs)  # same types, same sharing pattern
    if isinstance(model.c, Custom):  # fx keeps only what the graph calls: c.lin, in a plain container
        assert ours.c.copied == theirs.c.copied == 1  # the custom __deepcopy__ ran once
    torch.testing.assert_close(ours(x), model(x))

    def held(root: nn.Module) -> set[int]:
        immutable = (int, str, bool, type, type(None))
        return {id(v) for m in root.modules() for v in vars(m).values() if not isinstance(v, immutable)}

    assert not held(model) & held(ours)  # nothing mutable is held by both


def test_a_copy_without_code_calls_the_graph_modules_deepcopy_hooks() -> None:
    gm = torch.fx.symbolic_trace(nn.Linear(2, 2))
    copied: list[nn.Module] = []
    gm._register_deepcopy_hook(copied.append)
    theirs = copy.deepcopy(gm)
    ours = deepcopy_module(gm, code=False)
    assert copied == [theirs, ours]

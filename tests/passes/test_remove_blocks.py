"""RemoveBlocks property: removing a block whose branch output is zero changes nothing."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.lossless import check_plan_lossless
from support.strategies import Arch, architectures, plans
from torch import nn

import graphprune as gp
from graphprune.models import get_model
from graphprune.passes import EliminateDeadCode, MaskBlocks, RemoveBlocks


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures(), data=st.data())
def test_lossless_block_and_channel_removal_on_composed_architectures(
    arch: Arch, data: st.DataObject
) -> None:
    pg = gp.trace(arch.build(), arch.example())
    check_plan_lossless(pg, data.draw(plans(pg, blocks=True), label="plan"))


def test_removed_block_equals_zeroed_branch_and_drops_its_modules() -> None:
    x = torch.randn(2, 3, 32, 32)
    pg = gp.trace(get_model("cifar_resnet20"), x)
    blocks = [pg.block("layer2.0"), pg.block("layer3.2")]
    slim = EliminateDeadCode()(RemoveBlocks(blocks)(pg.gm).graph_module).graph_module
    ref = MaskBlocks(blocks)(pg.gm).graph_module
    with torch.no_grad():
        torch.testing.assert_close(slim(x), ref(x), rtol=1e-5, atol=1e-6)
    names = {n for n, _ in slim.named_modules()}
    assert "layer2.0.conv1" not in names and "layer3.2.bn2" not in names and "layer2.1.conv1" in names
    assert gp.count_params(slim) == pg.params - sum(b.params for b in blocks)


def test_blocks_of_resnet56_are_named_by_module_path() -> None:
    pg = gp.trace(get_model("cifar_resnet56"), torch.randn(1, 3, 32, 32))
    assert [b.name for b in pg.blocks] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(9)]
    assert all(b.flops > 0 and b.params > 0 for b in pg.blocks)


def test_chained_blocks_are_all_removed() -> None:
    """ConvNeXt-style blocks without an op after the add: block k's shortcut is block k-1's add."""
    from support.archs import LayerScale, ToyNet

    x = torch.randn(2, 3, 16, 16)
    pg = gp.trace(ToyNet(8, [LayerScale(8), LayerScale(8), LayerScale(8)], 8).eval(), x)
    slim = gp.apply(
        pg, gp.PruningPlan().remove_block("blocks.0").remove_block("blocks.1").remove_block("blocks.2")
    )
    assert not any(n.op == "call_module" and str(n.target).startswith("blocks") for n in slim.graph.nodes)
    assert gp.count_flops(slim, x) == pg.flops - sum(b.flops for b in pg.blocks)


class ThreeWay(nn.Module):
    """RepVGG-style `a(x) + b(x) + c(x)`: the first add is the branch of the second add's block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.a(x) + self.b(x) + self.c(x)


def test_removal_does_not_depend_on_the_order_of_blocks() -> None:
    x = torch.randn(2, 3, 8, 8)
    pg = gp.trace(ThreeWay().eval(), x)
    assert len(pg.blocks) == 2 and pg.blocks[0].add == pg.blocks[1].branch
    results = []
    for blocks in (pg.blocks, pg.blocks[::-1]):
        slim = EliminateDeadCode()(RemoveBlocks(blocks)(pg.gm).graph_module).graph_module
        ref = MaskBlocks(blocks)(pg.gm).graph_module
        with torch.no_grad():
            torch.testing.assert_close(slim(x), ref(x))
        results.append(slim(x))
    torch.testing.assert_close(results[0], results[1])


class _CheckedBranch(nn.Module):
    """`x + f(x)` where f asserts its input's rank, as timm's norm layers do (`_assert(x.ndim == 4)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.conv(x)
        torch._assert(h.ndim == 4, "expected 4D input")
        return x + h.relu()


def test_a_branch_with_a_shape_check_is_a_block_and_goes_with_its_check() -> None:
    x = torch.randn(2, 3, 8, 8)
    pg = gp.trace(_CheckedBranch(), x)
    (block,) = pg.blocks
    assert any("_assert" in c for c in block.checks)
    slim = EliminateDeadCode()(RemoveBlocks([block])(pg.gm).graph_module).graph_module
    assert "conv" not in {n for n, _ in slim.named_modules()}
    check_plan_lossless(pg, gp.PruningPlan.for_graph(pg).remove_block(block.name))

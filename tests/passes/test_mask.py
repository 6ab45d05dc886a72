from __future__ import annotations

import pytest
import torch
from torch import nn

import graphprune as gp
from graphprune.rewrite import masked_reference


class Pair(nn.Module):
    """A producer whose channels are the group, read by one consumer of the kind under test."""

    def __init__(self, consumer: nn.Module, linear: bool = False) -> None:
        super().__init__()
        self.producer = nn.Linear(5, 8) if linear else nn.Conv2d(3, 8, 3, padding=1)
        self.consumer = consumer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.consumer(self.producer(x))


CONSUMERS = {
    "conv": lambda: nn.Conv2d(8, 6, 3, padding=1),
    "grouped": lambda: nn.Conv2d(8, 6, 3, padding=1, groups=2),  # 4 inputs, 3 outputs per group
    # its outputs are coupled to its inputs: a 1x1 conv after keeps them off the model output
    # (no bias there: a removed output of it reads zeros only if its input channel is zero)
    "depthwise": lambda: nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False), nn.Conv2d(16, 4, 1)
    ),
    "transposed": lambda: nn.ConvTranspose2d(8, 6, 2, stride=2),
    "linear": lambda: nn.Linear(8, 4),
}


@pytest.mark.parametrize("kind", CONSUMERS)
def test_masking_a_consumer_equals_zeroing_what_it_reads(kind: str) -> None:
    linear = kind == "linear"
    model = Pair(CONSUMERS[kind](), linear).eval()
    x = torch.randn(2, 5) if linear else torch.randn(2, 3, 6, 6)
    pg = gp.trace(model, x)
    group = pg.group("producer")  # in a grouped consumer one index covers a channel of each group
    indices = (1, 3) if group.size == 4 else (1, 4, 5)
    ref = masked_reference(pg, gp.PruningPlan.for_graph(pg).remove_channels(group.id, indices))
    out = next(m for m in group.members if m.site.key == "producer:out")
    removed = sorted(p for k in indices for p in out.positions[k])

    def zero_removed(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, removed] = 0  # the oracle: the producer's removed channels read as zeros
        return out

    handle = model.producer.register_forward_hook(zero_removed)
    try:
        expected = model(x)
    finally:
        handle.remove()
    torch.testing.assert_close(ref(x), expected)
    assert not torch.equal(ref(x), model(x))  # the mask did something
    first = "consumer.0" if kind == "depthwise" else "consumer"
    assert model.get_submodule(first).weight is not ref.get_submodule(first).weight  # the original's kept

"""Pass infrastructure: a pass takes a GraphModule and returns a new one; a manager runs and checks them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from graphprune.errors import VerificationError
from graphprune.modcopy import deepcopy_module


class GraphPass(PassBase):
    """A PassBase that never mutates its input: called directly, `call` receives a private deep copy."""

    def __call__(self, graph_module: fx.GraphModule) -> PassResult:
        return self.run_owned(deepcopy_module(graph_module))

    def run_owned(self, gm: fx.GraphModule) -> PassResult:
        """Run on a graph module the caller hands over (no copy): requires, call, ensures."""
        self.requires(gm)
        res = self.call(gm)
        if res is None:
            raise VerificationError(f"pass {type(self).__name__} returned no result")
        self.ensures(res.graph_module)
        return res

    def ensures(self, graph_module: fx.GraphModule) -> None:
        graph_module.graph.lint()


Check = Callable[[fx.GraphModule], None]


class PassManager:
    """Runs passes in order; after each, runs every check (e.g. Verify) on the result."""

    def __init__(
        self, passes: Sequence[PassBase], checks: Sequence[Check] = (), *, share_tensors: bool = False
    ) -> None:
        self.passes = list(passes)
        self.checks = list(checks)
        self.share_tensors = share_tensors

    def __call__(self, gm: fx.GraphModule) -> fx.GraphModule:
        """A new graph module; `gm` is copied once, then each pass owns the current one.

        With `share_tensors` the copy's modules are new but its parameters and buffers are `gm`'s own
        tensors (no clone): passes replace tensors (param_surgery), they never write into them.
        """
        shared = itertools.chain(gm.parameters(), gm.buffers()) if self.share_tensors else ()
        gm = deepcopy_module(gm, shared)
        for p in self.passes:
            res = p.run_owned(gm) if isinstance(p, GraphPass) else p(gm)
            if res is None:
                raise VerificationError(f"pass {type(p).__name__} returned nothing")
            gm = res.graph_module
            for check in self.checks:
                try:
                    check(gm)
                except VerificationError as exc:
                    raise VerificationError(f"after pass {type(p).__name__}: {exc}") from None
        return gm

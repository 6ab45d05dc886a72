"""Pass infrastructure: a pass takes a GraphModule and returns a new one; a manager runs and checks them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.fx as fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from graphprune.errors import VerificationError
from graphprune.modcopy import clone_shared, deepcopy_module, shared_tensors


class GraphPass(PassBase):
    """A PassBase that never mutates its input: called directly, `call` receives a private deep copy.

    `call` edits the graph and the modules; the Python code of the result is generated once afterwards
    (`run_owned`), and once per PassManager run, not once per pass.
    """

    def __call__(self, graph_module: fx.GraphModule) -> PassResult:
        return self.run_owned(deepcopy_module(graph_module, code=False))  # run_owned generates it

    def run_owned(self, gm: fx.GraphModule, *, recompile: bool = True) -> PassResult:
        """Run on a graph module the caller hands over (no copy): requires, call, ensures, recompile."""
        self.requires(gm)
        res = self.call(gm)
        if res is None:
            raise VerificationError(f"pass {type(self).__name__} returned no result")
        self.ensures(res.graph_module)
        if recompile:
            res.graph_module.recompile()
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

        Passes replace tensors (param_surgery), they never write into them (a pass that does is reported),
        so while they run the copy's modules are new but its parameters and buffers are `gm`'s own
        tensors. The result then gets its own copy of each that survived, unless `share_tensors`. A tensor
        a pass replaced or deleted is never copied.
        """
        shared = shared_tensors(gm)
        # a copy without code where a GraphPass, which edits the graph first, runs on it first
        gm = deepcopy_module(gm, shared, code=not self.passes or not isinstance(self.passes[0], GraphPass))
        versions = [t._version for t in shared]  # bumped by every in-place write
        for i, p in enumerate(self.passes):
            # the code is generated only where something runs the module: a check, a foreign pass, the caller
            then = self.passes[i + 1] if i + 1 < len(self.passes) else None
            code = bool(self.checks) or not isinstance(then, GraphPass)
            res = p.run_owned(gm, recompile=code) if isinstance(p, GraphPass) else p(gm)
            if res is None:
                raise VerificationError(f"pass {type(p).__name__} returned nothing")
            if any(t._version != v for t, v in zip(shared, versions, strict=True)):
                raise VerificationError(
                    f"pass {type(p).__name__} wrote into a tensor of its input graph module (now changed); "
                    "a pass must replace tensors (graphprune.passes.param_surgery), not write into them"
                )
            gm = res.graph_module
            for check in self.checks:
                try:
                    check(gm)
                except VerificationError as exc:
                    raise VerificationError(f"after pass {type(p).__name__}: {exc}") from None
        if not self.share_tensors:
            clone_shared(gm, shared)
        return gm

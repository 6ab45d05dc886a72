"""Stage 4: rewrite passes. Each takes a GraphModule and returns a new one; only passes touch parameters."""

from graphprune.passes.base import GraphPass, PassManager
from graphprune.passes.dead_code import EliminateDeadCode
from graphprune.passes.fold_scale import FoldScale
from graphprune.passes.mask import MaskBlocks, MaskChannels
from graphprune.passes.prune_channels import PruneChannels
from graphprune.passes.remove_blocks import RemoveBlocks
from graphprune.passes.verify import Verify

__all__ = [
    "EliminateDeadCode",
    "FoldScale",
    "GraphPass",
    "MaskBlocks",
    "MaskChannels",
    "PassManager",
    "PruneChannels",
    "RemoveBlocks",
    "Verify",
]

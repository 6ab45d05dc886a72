"""Channel rules: how each op maps, couples, ties or pins the channels of its tensors.

A rule reads the recorded shapes of a node and writes to the DependencyGraph: the node's output tensors,
coupling edges with index maps, ties, pins and rewrite sites. An op without a rule pins every channel it
touches, with the reason: graphprune never guesses that an unknown op is elementwise.
"""

from graphprune.analysis.rules.driver import build_dependency_graph
from graphprune.analysis.rules.registry import register_channelwise_module

__all__ = ["build_dependency_graph", "register_channelwise_module"]

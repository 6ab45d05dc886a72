"""W-Gates (weight-dependent channel gates) as the `wgates` method; see method.py for the schedule."""

from graphprune.methods.base import register_method
from graphprune.methods.wgates.method import decide

register_method("wgates", decide)

__all__ = ["decide"]

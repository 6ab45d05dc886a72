"""W-Gates (weight-dependent channel gates) as the `wgates` method, and `abp+wgates` (combined.py)."""

from graphprune.methods.base import register_method
from graphprune.methods.wgates import combined
from graphprune.methods.wgates.method import decide

register_method("wgates", decide)
register_method("abp+wgates", combined.decide)

__all__ = ["decide"]

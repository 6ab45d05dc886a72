"""Sites: the places a channel removal must be written (a weight dim, a pad amount, a split size)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SiteKind(StrEnum):
    """What the rewrite does at a site."""

    CONV_OUT = "conv_out"  # conv weight dim 0 (dim 1 for ConvTranspose), bias, out_channels
    CONV_IN = "conv_in"  # conv weight input dim, in_channels, groups for depthwise convs
    LINEAR_OUT = "linear_out"  # linear weight rows, bias, out_features
    LINEAR_IN = "linear_in"  # linear weight columns, in_features
    NORM = "norm"  # per-channel parameters and buffers of BN / GN / IN / PReLU
    PARAM = "param"  # a get_attr parameter or buffer broadcast along channels (e.g. layer scale)
    PAD = "pad"  # zero channels created by F.pad on the channel dim
    SPLIT = "split"  # section sizes of split / chunk on the channel dim
    SLICE = "slice"  # bounds of a tensor[..., a:b] slice on the channel dim
    LAYER_NORM = "layer_norm"  # LayerNorm over the channels (opt-in, not lossless): affine, normalized_shape
    VIEW = "view"  # a literal size in view / reshape equal to the channel count there
    GROUP_COUNT = "group_count"  # literal num_groups / groups: info (count, channels per group, arg index)
    REDUCE = "reduce"  # an op summing over the channels (sum, norm, matmul contraction): nothing to rewrite


@dataclass(frozen=True)
class Site:
    """One rewrite location, reading the channel positions of `tensor` (a dependency-graph tensor key).

    `positions` restricts the site to some positions of the tensor (PAD: the zero channels; SLICE: the
    sliced range); None means all of them. `node` is the fx node to rewrite and `target` the module path
    or get_attr target holding the parameters. `info` carries kind-specific literals.
    """

    key: str
    kind: SiteKind
    tensor: str
    node: str
    target: str = ""
    dim: int = 0
    positions: tuple[int, ...] | None = None
    info: tuple[int, ...] = ()


@dataclass(frozen=True)
class SiteRemoval:
    """The positions of `site.tensor` to remove at one site (sorted, unique)."""

    site: Site
    removed: tuple[int, ...]

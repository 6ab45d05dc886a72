"""Channel groups: the maximal sets of channels that must be removed together, derived from the depgraph.

Channels joined by coupling edges or ties form an *atom* (one removable unit). Atoms that touch exactly
the same rewrite sites form a `ChannelGroup`; index k of a group is its k-th atom, ordered by position in
the group's first site, so for a layer whose whole output is one group, group index == channel index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.sites import Site, SiteKind

PRODUCER_KINDS = (SiteKind.CONV_OUT, SiteKind.LINEAR_OUT)


@dataclass(frozen=True)
class Member:
    """One rewrite site of a group and, for each group index, the positions it covers there."""

    site: Site
    positions: tuple[tuple[int, ...], ...]

    @property
    def kind(self) -> SiteKind:
        return self.site.kind

    @property
    def target(self) -> str:
        return self.site.target or self.site.node


@dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together. `size` atoms; `prunable` is False with the `reason` when any is pinned."""

    id: str
    size: int
    members: tuple[Member, ...]
    prunable: bool
    reason: str | None = None

    @property
    def lossless(self) -> bool:
        """False when removing channels renormalises a LayerNorm over the rest (`prune_layernorm`)."""
        return not any(m.kind == SiteKind.LAYER_NORM for m in self.members)

    def member(self, site_key: str) -> Member | None:
        return next((m for m in self.members if m.site.key == site_key), None)

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.target for m in self.members))


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label of each of `n` items joined by the pairs (a[i], b[i]): its smallest item.

    Min-label propagation along the pairs with pointer jumping, vectorised: a fixpoint has equal labels at
    both ends of every pair, and labels only travel along pairs.
    """
    labels = np.arange(n)
    while True:
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        while True:  # pointer jumping: follow labels to their own labels
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def derive_groups(dg: DependencyGraph) -> list[ChannelGroup]:
    """Union channels along coupling edges and ties, then bucket atoms by the sites they touch."""
    g = dg.g
    base: dict[str, int] = {}
    n = 0
    for key, data in g.nodes(data=True):
        if data["kind"] == "tensor" and data["size"]:
            base[key] = n
            n += data["size"]
    pairs_a: list[np.ndarray] = []
    pairs_b: list[np.ndarray] = []
    for src, dst, data in g.edges(data=True):
        if data.get("role") != "channels":
            continue
        imap = data["index_map"]
        j = np.nonzero(imap >= 0)[0]
        pairs_a.append(base[dst] + j)
        pairs_b.append(base[src] + imap[j])
    for key, data in g.nodes(data=True):
        for rows in data.get("ties", []) if key in base else []:
            pairs_a.append(base[key] + np.repeat(rows[:, 0], rows.shape[1] - 1))
            pairs_b.append(base[key] + rows[:, 1:].reshape(-1))
    empty = np.zeros(0, dtype=np.int64)
    root = connected_components(
        n,
        np.concatenate(pairs_a or [empty]).astype(np.int64),
        np.concatenate(pairs_b or [empty]).astype(np.int64),
    ).tolist()
    pinned: dict[int, str] = {}
    for key, data in g.nodes(data=True):
        if key not in base:
            continue
        for pos, reason in data["pins"]:
            for p in pos.tolist():
                pinned.setdefault(root[base[key] + p], f"{reason} (at {key})")

    # atom -> site index -> positions
    touches: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for si, site in enumerate(dg.sites):
        b = base.get(site.tensor)
        if b is None:
            continue
        size = g.nodes[site.tensor]["size"]
        for p in site.positions if site.positions is not None else range(size):
            touches[root[b + p]][si].append(p)

    buckets: dict[tuple[tuple[int, ...], str | None], list[int]] = defaultdict(list)
    for atom, by_site in touches.items():
        atom_reason = next((pinned[a] for a in [atom] if a in pinned), None)
        buckets[(tuple(sorted(by_site)), atom_reason)].append(atom)

    groups: list[tuple[int, ChannelGroup]] = []
    used_ids: dict[str, int] = defaultdict(int)
    ordered = sorted(
        buckets.items(), key=lambda kv: (kv[0][0][0], min(touches[a][kv[0][0][0]][0] for a in kv[1]))
    )
    for (site_ids, reason), atoms in ordered:
        first = site_ids[0]
        atoms.sort(key=lambda a: min(touches[a][first]))
        members = tuple(
            Member(dg.sites[si], tuple(tuple(sorted(touches[a][si])) for a in atoms)) for si in site_ids
        )
        producer = next((dg.sites[si] for si in site_ids if dg.sites[si].kind in PRODUCER_KINDS), None)
        if producer is not None:
            name = producer.target or producer.node
        else:  # channels nobody in the graph produces (model input): named by their first reader
            name = f"{dg.sites[first].target or dg.sites[first].node}:{dg.sites[first].kind.value}"
        k = used_ids[name]
        used_ids[name] += 1
        gid = name if k == 0 else f"{name}#{k}"
        groups.append((first, ChannelGroup(gid, len(atoms), members, reason is None, reason)))
    return [grp for _, grp in groups]

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

    def member(self, site_key: str) -> Member | None:
        return next((m for m in self.members if m.site.key == site_key), None)

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.target for m in self.members))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def derive_groups(dg: DependencyGraph) -> list[ChannelGroup]:
    """Union channels along coupling edges and ties, then bucket atoms by the sites they touch."""
    g = dg.g
    base: dict[str, int] = {}
    n = 0
    for key, data in g.nodes(data=True):
        if data["kind"] == "tensor" and data["size"]:
            base[key] = n
            n += data["size"]
    uf = _UnionFind(n)
    for src, dst, data in g.edges(data=True):
        if data.get("role") != "channels":
            continue
        imap = data["index_map"]
        bs, bd = base[src], base[dst]
        for j in np.nonzero(imap >= 0)[0].tolist():
            uf.union(bd + j, bs + int(imap[j]))
    pinned: dict[int, str] = {}
    for key, data in g.nodes(data=True):
        if key not in base:
            continue
        for rows in data["ties"]:
            for row in rows.tolist():
                for p in row[1:]:
                    uf.union(base[key] + row[0], base[key] + p)
    for key, data in g.nodes(data=True):
        if key not in base:
            continue
        for pos, reason in data["pins"]:
            for p in pos.tolist():
                pinned.setdefault(uf.find(base[key] + p), f"{reason} (at {key})")

    # atom -> site index -> positions
    touches: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for si, site in enumerate(dg.sites):
        b = base.get(site.tensor)
        if b is None:
            continue
        size = g.nodes[site.tensor]["size"]
        for p in site.positions if site.positions is not None else range(size):
            touches[uf.find(b + p)][si].append(p)

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

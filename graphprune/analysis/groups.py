"""Channel groups: the maximal sets of channels that must be removed together, derived from the depgraph.

Channels joined by coupling edges or ties form an *atom* (one removable unit). Two tensors whose kept
counts must stay equal (`DependencyGraph.same_counts`) need nothing more where they hold the same atoms
equally often; otherwise they are coupled position by position. Atoms that touch exactly
the same rewrite sites form a `ChannelGroup`; index k of a group is its k-th atom, ordered by position in
the group's first site, so for a layer whose whole output is one group, group index == channel index.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix, csgraph

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

    @property
    def is_residual_stream(self) -> bool:
        """Whether several convs / linears write these channels (their outputs are added): a residual
        stream, which every block along it reads. A depthwise conv, which reads the channels it writes,
        does not count as a second writer."""
        readers = {m.target for m in self.members if m.kind == SiteKind.CONV_IN}
        writers = {m.target for m in self.members if m.kind in PRODUCER_KINDS} - readers
        return len(writers) > 1


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label of each of `n` items joined by the pairs (a[i], b[i]): its smallest item."""
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, label = csgraph.connected_components(graph, directed=False)
    smallest = np.full(int(label.max(initial=-1)) + 1, n, dtype=np.int64)
    np.minimum.at(smallest, label, np.arange(n))
    return smallest[label]


def _atoms(n: int, pairs_a: list[np.ndarray], pairs_b: list[np.ndarray]) -> np.ndarray:
    """The atom (component label) of each of `n` channel positions joined by the pairs."""
    empty = np.zeros(0, dtype=np.int64)
    a = np.concatenate(pairs_a or [empty]).astype(np.int64)
    return connected_components(n, a, np.concatenate(pairs_b or [empty]).astype(np.int64))


def _same_atoms(root_arr: np.ndarray, a: int, b: int, size: int) -> bool:
    """Whether the `size` positions from `a` and those from `b` hold each atom equally often: then any
    removal keeps their counts equal."""
    return bool(np.array_equal(np.sort(root_arr[a : a + size]), np.sort(root_arr[b : b + size])))


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
    root_arr = _atoms(n, pairs_a, pairs_b)
    # counts that must stay equal (src, dst, size); merging atoms never breaks one that holds
    pending = [(base[src], base[dst], g.nodes[dst]["size"]) for src, dst, _ in dg.same_counts]
    while pending := [c for c in pending if not _same_atoms(root_arr, *c)]:
        at_src, at_dst, count = pending.pop(0)  # coupled position by position, then the rest checked again
        pairs_a.append(at_dst + np.arange(count))
        pairs_b.append(at_src + np.arange(count))
        root_arr = _atoms(n, pairs_a, pairs_b)
    # pins: the first reason (in graph order) that reaches an atom is its reason
    pins = [
        (base[key] + pos, f"{reason} (at {key})")
        for key, data in g.nodes(data=True)
        if key in base
        for pos, reason in data["pins"]
    ]
    reasons = list(dict.fromkeys(r for _, r in pins))
    reason_id = {r: i for i, r in enumerate(reasons)}
    reason_of_root = np.full(n, -1, dtype=np.int64)
    for at, reason in reversed(pins):  # earlier pins written last: they win
        reason_of_root[root_arr[at]] = reason_id[reason]

    # Every (atom, site, position) touch as flat arrays, sorted by atom, then site, then position.
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for si, site in enumerate(dg.sites):
        b = base.get(site.tensor)
        if b is None:
            continue
        size = g.nodes[site.tensor]["size"]
        pos = np.arange(size) if site.positions is None else np.asarray(site.positions, dtype=np.int64)
        chunks.append((root_arr[b + pos], np.full(len(pos), si, dtype=np.int64), pos))
    if not chunks:
        return []
    atom_of, site_of, pos_of = (np.concatenate(c) for c in zip(*chunks, strict=True))
    n_sites, n_pos = len(dg.sites), int(pos_of.max()) + 1
    if n * n_sites * n_pos < 2**62:  # one int64 key per touch: a stable argsort, fast on its sorted runs
        order = np.argsort((atom_of * n_sites + site_of) * n_pos + pos_of, kind="stable")
    else:
        order = np.lexsort((pos_of, site_of, atom_of))
    atom_of, site_of, pos_of = atom_of[order], site_of[order], pos_of[order]
    # runs of equal (atom, site): one per member position tuple
    new_pair = np.ones(len(atom_of), dtype=bool)
    new_pair[1:] = (atom_of[1:] != atom_of[:-1]) | (site_of[1:] != site_of[:-1])
    pair_start = np.nonzero(new_pair)[0]
    pair_end = np.append(pair_start[1:], len(atom_of))
    pair_atom, pair_site = atom_of[pair_start], site_of[pair_start]
    # runs of equal atom over the pairs: the atom's sorted site tuple is its bucket key
    new_atom = np.ones(len(pair_atom), dtype=bool)
    new_atom[1:] = pair_atom[1:] != pair_atom[:-1]
    atom_start = np.nonzero(new_atom)[0]
    atom_end = np.append(atom_start[1:], len(pair_atom))

    buckets = _buckets(pair_site, atom_start, atom_end, reason_of_root[pair_atom[atom_start]], reasons)
    first_pos = pos_of[pair_start[atom_start]]  # per atom: its smallest position at its first site
    pos_list = pos_of.tolist()
    singles = [(p,) for p in range(int(pos_of.max(initial=-1)) + 1)]  # one shared 1-tuple per position

    one_each = pair_end - pair_start == 1

    def positions(pairs: np.ndarray) -> list[tuple[tuple[int, ...], ...]]:
        """Per row of `pairs` (a member: one pair per group index), the positions of each index."""
        if one_each[pairs].all():  # one position per index at every member (most groups)
            return [tuple(map(singles.__getitem__, row)) for row in pos_of[pair_start[pairs]].tolist()]
        return [
            tuple(tuple(pos_list[a:b]) for a, b in zip(lo, hi, strict=True))
            for lo, hi in zip(pair_start[pairs].tolist(), pair_end[pairs].tolist(), strict=True)
        ]

    groups: list[tuple[int, ChannelGroup]] = []
    used_ids: dict[str, int] = defaultdict(int)
    ordered = sorted(buckets.items(), key=lambda kv: (kv[0][0][0], int(first_pos[kv[1]].min())))
    for (site_ids, reason), atom_ks in ordered:
        first = site_ids[0]
        ks = np.asarray(atom_ks, dtype=np.int64)
        ks = ks[np.argsort(first_pos[ks], kind="stable")]
        rows = positions(atom_start[ks] + np.arange(len(site_ids))[:, None])
        members = tuple(Member(dg.sites[si], row) for si, row in zip(site_ids, rows, strict=True))
        producer = next((dg.sites[si] for si in site_ids if dg.sites[si].kind in PRODUCER_KINDS), None)
        if producer is not None:
            name = producer.target or producer.node
        else:  # channels nobody in the graph produces (model input): named by their first reader
            name = f"{dg.sites[first].target or dg.sites[first].node}:{dg.sites[first].kind.value}"
        k = used_ids[name]
        used_ids[name] += 1
        gid = name if k == 0 else f"{name}#{k}"
        groups.append((first, ChannelGroup(gid, len(ks), members, reason is None, reason)))
    return [grp for _, grp in groups]


def _buckets(
    pair_site: np.ndarray,
    atom_start: np.ndarray,
    atom_end: np.ndarray,
    atom_reason: np.ndarray,
    reasons: list[str],
) -> dict[tuple[tuple[int, ...], str | None], list[int]]:
    """Atoms (k: their runs atom_start[k]:atom_end[k] of sorted site ids) bucketed by (site ids, pin
    reason: reasons[atom_reason[k]], or none where -1), each bucket in increasing k. Atoms with the same
    number of sites form one table (a row per atom: its site ids, then its reason id), grouped by a
    stable lexsort: work in proportion to the touches, not to atoms x the longest run."""
    lengths = atom_end - atom_start
    out: dict[tuple[tuple[int, ...], str | None], list[int]] = {}
    for n_sites in np.unique(lengths).tolist():
        ks = np.nonzero(lengths == n_sites)[0]
        table = np.empty((len(ks), n_sites + 1), dtype=np.int64)
        table[:, :n_sites] = pair_site[atom_start[ks][:, None] + np.arange(n_sites)]
        table[:, n_sites] = atom_reason[ks]
        by_row = np.lexsort(table.T[::-1])  # stable: equal rows keep increasing k
        ordered = table[by_row]
        new_row = np.ones(len(ks), dtype=bool)
        new_row[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        starts = np.nonzero(new_row)[0].tolist()
        for lo, hi in zip(starts, [*starts[1:], len(ks)], strict=True):
            *site_ids, reason = ordered[lo].tolist()
            out[(tuple(site_ids), reasons[reason] if reason >= 0 else None)] = ks[by_row[lo:hi]].tolist()
    return out

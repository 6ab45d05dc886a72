"""Numerical probe of the channel rules: every claimed index map is checked on real values.

For each op of a small traced graph and each free (unpinned) channel position p of one of its inputs, the
probe zeroes, then randomises, channel p and re-runs the op alone. Every output position that changes must
be one the rule maps from p. Output positions the rule leaves uncoupled, or maps from another input channel,
must not move. Producer sites (conv/linear rows, norm and parameter slices) are probed the same way: changing
the slice of position q may only change output position q. An op that sums over the channels of an operand
(a REDUCE site: `(h * h).sum(1)`, `q^T k`) must give the same result with position p zeroed in that operand
as with p's atom removed from all of its summed operands (and from its output, where the op keeps the
channels: F.normalize): the pruned op equals the masked one. Pins set by a
rule make their channels exempt: a pinned channel is never removed. Only the boundary pins ("model input",
"model output") are ignored, so that a one-op graph is probed at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from graphprune.analysis.depgraph import DependencyGraph, TensorInfo
from graphprune.analysis.groups import connected_components
from graphprune.analysis.rules import build_dependency_graph
from graphprune.analysis.sites import SiteKind
from graphprune.trace import record_values, symbolic_trace

BOUNDARY_PINS = ("model input", "model output")
UNDEFINED_VALUES = frozenset({torch.empty_like})  # ops whose output values are arbitrary


@dataclass(frozen=True)
class Lie:
    """A rule claim the values contradict."""

    node: str
    what: str

    def __str__(self) -> str:
        return f"{self.node}: {self.what}"


def atoms(dg: DependencyGraph) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """For each channel tensor: the atom of each position (channels removed together), and which
    positions sit in an atom no rule pinned (boundary pins ignored)."""
    base: dict[str, int] = {}
    n = 0
    for key, info in dg.tensors.items():
        if info.size:
            base[key] = n
            n += info.size
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    for src, dst, data in dg.g.edges(data=True):
        if data.get("role") == "channels":
            j = np.nonzero(data["index_map"] >= 0)[0]
            a.append(base[dst] + j)
            b.append(base[src] + data["index_map"][j])
    for key in base:
        for rows in dg.g.nodes[key]["ties"]:
            a.append(base[key] + np.repeat(rows[:, 0], rows.shape[1] - 1))
            b.append(base[key] + rows[:, 1:].reshape(-1))
    empty = np.zeros(0, dtype=np.int64)
    root = connected_components(n, np.concatenate(a or [empty]), np.concatenate(b or [empty]))
    pinned = np.zeros(n, dtype=bool)
    for key in base:
        for pos, reason in dg.g.nodes[key]["pins"]:
            if not reason.startswith(BOUNDARY_PINS):
                pinned[root[base[key] + pos]] = True
    sl = {k: root[o : o + dg.tensors[k].size] for k, o in base.items()}
    return sl, {k: ~pinned[r] for k, r in sl.items()}


def _channel_rows(value: torch.Tensor, info: TensorInfo) -> torch.Tensor:
    """The tensor as (channel position, everything else)."""
    rest = [d for d in range(value.ndim) if d not in info.cdims]
    return value.permute(*info.cdims, *rest).reshape(info.size, -1)


def _set_channel(value: torch.Tensor, info: TensorInfo, p: int, fill: torch.Tensor | None) -> torch.Tensor:
    out = value.clone()
    rows = _channel_rows(out, info)  # a view of `out` only when contiguous: write back explicitly
    rows = rows.clone()
    rows[p] = 0 if fill is None else fill.reshape(-1)[: rows.shape[1]]
    rest = [d for d in range(value.ndim) if d not in info.cdims]
    perm = [*info.cdims, *rest]
    shaped = rows.reshape([value.shape[d] for d in perm])
    return shaped.permute(*np.argsort(perm).tolist()).contiguous()


def _changed(before: torch.Tensor, after: torch.Tensor, info: TensorInfo) -> set[int]:
    """Channel positions whose values differ (position -1: the whole tensor, when it has no channels)."""
    if before.shape != after.shape:
        return {-1}
    same = torch.isclose(after, before, rtol=0, atol=0, equal_nan=True)
    if not info.size:
        return set() if bool(same.all()) else {-1}
    return set(np.nonzero(~_channel_rows(same, info).all(1).numpy())[0].tolist())


def _tensors(dg: DependencyGraph, node: fx.Node) -> list[tuple[int | None, TensorInfo]]:
    """The channel tensors a node produces: (index in a tuple output or None, info)."""
    t = dg.node_tensors.get(node.name)
    if isinstance(t, TensorInfo):
        return [(None, t)]
    if isinstance(t, tuple):
        return [(i, x) for i, x in enumerate(t) if isinstance(x, TensorInfo)]
    return []


def _pick(value: Any, i: int | None) -> torch.Tensor:
    return value if i is None else value[i]


def _replace(value: Any, i: int | None, new: torch.Tensor) -> Any:
    if i is None:
        return new
    items = list(value)
    items[i] = new
    return type(value)(items)


class _Env(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=False)

    def rerun(self, node: fx.Node, override: dict[fx.Node, Any]) -> Any:
        """Run `node` alone on the recorded values, some replaced; in-place ops see copies."""
        saved = dict(self.env)
        try:
            for n in node.all_input_nodes:
                v = override.get(n, self.env[n])
                self.env[n] = _clone(v)
            torch.manual_seed(0)
            return self.run_node(node)
        finally:
            self.env = saved


def _clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, (tuple, list)):
        return type(v)(_clone(x) for x in v)
    return v


def _claims(dg: DependencyGraph, src: str, dst: str) -> np.ndarray | None:
    """The index map src -> dst (merged over parallel edges), or None when they are not coupled."""
    maps = [
        d["index_map"] for _, t, d in dg.g.out_edges(src, data=True) if t == dst and d["role"] == "channels"
    ]
    if not maps:
        return None
    merged = np.full(dg.tensors[dst].size, -1)
    for m in maps:
        merged = np.where(m >= 0, m, merged)
    return merged


def _fills(shape: torch.Size, gen: torch.Generator) -> Iterator[torch.Tensor | None]:
    yield None  # zero the channel
    yield torch.randn(shape, generator=gen) * 3 + 1  # move it far away


def probe_rules(model: nn.Module, *inputs: torch.Tensor) -> tuple[list[Lie], int]:
    """Trace `model` on `inputs`, build its dependency graph and probe every op's claims on values.

    Returns the contradictions found and how many (position, output) claims were checked.
    """
    model = model.eval()
    gm = symbolic_trace(model)
    record_values(gm, tuple(inputs))
    dg = build_dependency_graph(gm)
    atom, free = atoms(dg)
    env = _Env(gm)
    with torch.no_grad():
        torch.manual_seed(0)
        env.run(*inputs)
    gen = torch.Generator().manual_seed(0)
    lies: list[Lie] = []
    checked = 0
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op not in ("call_function", "call_method", "call_module"):
                continue
            ref = env.rerun(node, {})
            outs = _tensors(dg, node)
            summed = _reduce_sites(dg, node)
            for a in node.all_input_nodes:
                for i, src in _tensors(dg, a):
                    if not src.size or src.key not in free or src.key in summed:
                        continue
                    value = _pick(env.env[a], i)
                    for p in np.nonzero(free[src.key])[0].tolist():
                        for fill in _fills(value.shape, gen):
                            new = _replace(env.env[a], i, _set_channel(value, src, p, fill))
                            with _input_site_removed(dg, node, src, p):
                                base = env.rerun(node, {})
                                got = env.rerun(node, {a: new})
                            for j, dst in outs:
                                moved = _changed(_pick(base, j), _pick(got, j), dst)
                                imap = _claims(dg, src.key, dst.key)
                                claimed = set() if imap is None else set(np.nonzero(imap == p)[0].tolist())
                                if dst.key in atom:  # channels removed together with p may see it
                                    claimed |= set(np.nonzero(atom[dst.key] == atom[src.key][p])[0].tolist())
                                if node.target in UNDEFINED_VALUES:
                                    moved = set()
                                checked += 1
                                if moved - claimed:
                                    lies.append(
                                        Lie(
                                            node.name,
                                            f"channel {p} of {src.key} reaches {dst.key} at "
                                            f"{sorted(moved - claimed)[:6]}, "
                                            f"rule claims {sorted(claimed)[:6]}",
                                        )
                                    )
            checked += _probe_producer_sites(dg, node, env, ref, free, lies, gen)
            checked += _probe_reductions(dg, node, env, atom, free, lies)
            checked += _probe_operands(dg, node, free, lies)
            checked += _probe_metadata(dg, node, env, ref, free, lies)
    return lies, checked


def _reduce_sites(dg: DependencyGraph, node: fx.Node) -> dict[str, Any]:
    """The operands `node` sums over the channels of: tensor key -> its REDUCE site."""
    return {s.tensor: s for s in dg.g.nodes[f"op:{node.name}"]["sites"] if s.kind == SiteKind.REDUCE}


def _probe_reductions(
    dg: DependencyGraph,
    node: fx.Node,
    env: _Env,
    atom: dict[str, np.ndarray],
    free: dict[str, np.ndarray],
    lies: list[Lie],
) -> int:
    """Zeroing position p of one summed operand (the reference) equals removing p's atom from every summed
    operand (the pruned op)."""
    sites = _reduce_sites(dg, node)
    by_name = {a.name: a for a in node.all_input_nodes}
    checked = 0
    for key in sites:
        info = dg.tensors[key]
        a = by_name[key]
        for p in np.nonzero(free[key])[0].tolist():
            value = env.env[a]
            for q in np.nonzero(atom[key] == atom[key][p])[0].tolist():  # p and channels removed with it
                value = _set_channel(value, info, q, None)
            zeroed = env.rerun(node, {a: value})
            removed: dict[fx.Node, Any] = {}
            for other, s in sites.items():
                gone = set(np.nonzero(atom[other] == atom[key][p])[0].tolist())
                keep = torch.tensor([c for c in range(dg.tensors[other].size) if c not in gone])
                removed[by_name[other]] = env.env[by_name[other]].index_select(s.dim, keep)
            pruned = env.rerun(node, removed)
            for j, dst in _tensors(dg, node):  # an op keeping the channels (normalize): p's atom goes there
                if dst.size and len(dst.cdims) == 1:
                    gone_out = atom[dst.key] == atom[key][p]
                    keep_out = torch.tensor(np.nonzero(~gone_out)[0].tolist())
                    zeroed = _replace(zeroed, j, _pick(zeroed, j).index_select(dst.cdims[0], keep_out))
            checked += 1
            scale = float(zeroed.abs().max()) if zeroed.numel() else 0.0
            if pruned.shape != zeroed.shape or not torch.allclose(
                pruned, zeroed, rtol=1e-5, atol=1e-5 * scale
            ):
                lies.append(Lie(node.name, f"removing channel {p} of {key} is not zeroing it"))
    return checked


def _in_weight_slice(m: nn.Module, p: int) -> tuple[Any, ...] | None:
    """The weight index read by input channel p of a conv or linear (None: not a consumer module)."""
    if isinstance(m, nn.Linear):
        return (slice(None), p)
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed:
            return (p,)
        cin_g = m.in_channels // m.groups
        cout_g = m.out_channels // m.groups
        g = p // cin_g
        return (slice(g * cout_g, (g + 1) * cout_g), p % cin_g)
    return None


@contextmanager
def _input_site_removed(dg: DependencyGraph, node: fx.Node, src: TensorInfo, p: int) -> Iterator[None]:
    """Zero the weights that read input channel p while inside, when the rule put an input site there."""
    kinds = {s.kind for s in dg.g.nodes[f"op:{node.name}"]["sites"] if s.tensor == src.key}
    if not kinds & {SiteKind.CONV_IN, SiteKind.LINEAR_IN}:
        yield
        return
    m = dg.modules[str(node.target)]
    idx = _in_weight_slice(m, p)
    assert idx is not None
    w = m.weight
    assert isinstance(w, torch.Tensor)
    saved = w.detach().clone()
    try:
        w.data[idx] = 0
        yield
    finally:
        w.data.copy_(saved)


def _site_tensors(dg: DependencyGraph, node: fx.Node, site: Any) -> list[tuple[torch.Tensor, int]]:
    """Parameter tensors of a producer site and the dim that indexes the site's positions."""
    if site.kind in (SiteKind.CONV_OUT, SiteKind.LINEAR_OUT):
        m = dg.modules[site.target]
        wdim = 1 if getattr(m, "transposed", False) else 0
        out = [(m.weight, wdim)]
        if getattr(m, "bias", None) is not None:
            out.append((m.bias, 0))
        return out
    if site.kind == SiteKind.NORM:
        m = dg.modules[site.target]
        names = ("weight", "bias", "running_mean", "running_var")
        return [(t, 0) for n in names if isinstance(t := getattr(m, n, None), torch.Tensor) and t.ndim]
    if site.kind == SiteKind.PARAM:
        path, _, name = site.target.rpartition(".")
        owner = dg.gm.get_submodule(path) if path else dg.gm
        return [(getattr(owner, name), site.dim)]
    return []


def _probe_producer_sites(
    dg: DependencyGraph,
    node: fx.Node,
    env: _Env,
    ref: Any,
    free: dict[str, np.ndarray],
    lies: list[Lie],
    gen: torch.Generator,
) -> int:
    """Changing the parameters of position q at a producer site may only change output position q."""
    checked = 0
    outs = dict((dst.key, (j, dst)) for j, dst in _tensors(dg, node))
    for site in dg.g.nodes[f"op:{node.name}"]["sites"]:
        if site.tensor not in outs or site.kind not in (
            SiteKind.CONV_OUT,
            SiteKind.LINEAR_OUT,
            SiteKind.NORM,
            SiteKind.PARAM,
        ):
            continue
        j, dst = outs[site.tensor]
        for t, dim in _site_tensors(dg, node, site):
            if t.shape[dim] != dst.size:
                lies.append(Lie(node.name, f"{site.key} has {t.shape[dim]} slices for {dst.size} channels"))
                continue
            for q in np.nonzero(free.get(dst.key, np.ones(dst.size, bool)))[0].tolist():
                saved = t.detach().clone()
                try:
                    t.data.index_fill_(dim, torch.tensor([q]), 0.0)
                    t.data.index_add_(
                        dim, torch.tensor([q]), torch.randn(t.data.narrow(dim, q, 1).shape, generator=gen) + 2
                    )
                    got = env.rerun(node, {})
                finally:
                    t.data.copy_(saved)
                moved = _changed(_pick(ref, j), _pick(got, j), dst) - {q}
                checked += 1
                if moved:
                    lies.append(
                        Lie(node.name, f"slice {q} of {site.key} changes channels {sorted(moved)[:6]}")
                    )
    return checked


def _probe_operands(dg: DependencyGraph, node: fx.Node, free: dict[str, np.ndarray], lies: list[Lie]) -> int:
    """A parameter or buffer that varies along free output channels must be a site of this op, sliced with
    them, and read nowhere else."""
    checked = 0
    sites = {s.target for s in dg.g.nodes[f"op:{node.name}"]["sites"] if s.kind == SiteKind.PARAM}
    for _, out in _tensors(dg, node):
        if not out.size or not free.get(out.key, np.zeros(0, bool)).any():
            continue
        nd = len(out.shape)
        for a in node.all_input_nodes:
            if a.op != "get_attr":
                continue
            t = dg.spec(a).shape
            shift = nd - len(t)
            varies = any(d - shift >= 0 and t[d - shift] > 1 for d in out.cdims)
            checked += 1
            if varies and str(a.target) not in sites:
                lies.append(Lie(node.name, f"per-channel operand {a.target} is not sliced with {out.key}"))
            elif varies and any(u is not node and not _has_param_site(dg, u, str(a.target)) for u in a.users):
                lies.append(
                    Lie(node.name, f"per-channel operand {a.target} is sliced but also read elsewhere")
                )
    return checked


def _has_param_site(dg: DependencyGraph, node: fx.Node, target: str) -> bool:
    return any(
        s.kind == SiteKind.PARAM and s.target == target for s in dg.g.nodes[f"op:{node.name}"]["sites"]
    )


def _probe_metadata(
    dg: DependencyGraph, node: fx.Node, env: _Env, ref: Any, free: dict[str, np.ndarray], lies: list[Lie]
) -> int:
    """An op with no channel output (shape, size, numel...) must not see a free channel go away: the values
    it hands on (through getitem and the like) must stay the same with one channel removed."""
    if _tensors(dg, node) or isinstance(ref, torch.Tensor):
        return 0
    chain = [node]
    for n in node.graph.nodes:  # graph order: every non-tensor value computed from this one
        if n is not node and n.op == "call_function" and any(u in chain for u in n.all_input_nodes):
            if not isinstance(env.env.get(n), torch.Tensor):
                chain.append(n)
    handed_on = [n for n in chain if any(u not in chain for u in n.users)]
    checked = 0
    for a in node.all_input_nodes:
        for i, src in _tensors(dg, a):
            if len(src.cdims) != 1 or not free.get(src.key, np.zeros(0, bool)).any():
                continue
            value = _pick(env.env[a], i)
            p = int(np.nonzero(free[src.key])[0][0])
            keep = torch.tensor([c for c in range(src.size) if c != p])
            saved = dict(env.env)
            try:
                env.env[a] = _replace(env.env[a], i, value.index_select(src.cdims[0], keep))
                for n in chain:
                    env.env[n] = env.run_node(n)
                got = [env.env[n] for n in handed_on]
            except Exception:  # noqa: BLE001 - cannot run on fewer channels: not a metadata read
                continue
            finally:
                env.env = saved
            checked += 1
            for n, g in zip(handed_on, got, strict=True):
                if not _same(saved[n], g):
                    lies.append(Lie(n.name, f"reads the channel count of {src.key} ({saved[n]!r} -> {g!r})"))
    return checked


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
    return bool(a == b)

"""Stage 3: the PruningPlan, the IR between deciding and rewriting. Plain JSON, human-editable, validated.

Example file:
    {"format": "graphprune.plan", "version": 1, "arch_hash": "sha256:...", "input_shapes": [[1, 3, 32, 32]],
     "blocks": ["layer2.3"], "channels": {"layer1.0.conv1": [3, 7]}, "meta": {"criterion": "l1"}}
`channels` maps a channel-group id (see `graphprune inspect`) to the group indices to remove.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from graphprune.analysis.blocks import Block
from graphprune.analysis.groups import ChannelGroup
from graphprune.errors import PlanError
from graphprune.fileio import write_text


class PlanTarget(Protocol):
    """What a plan is made for and checked against: a traced model's groups and blocks (a PrunableGraph).

    A protocol, so that the plan (the IR) does not import the graph that builds it."""

    @property
    def arch_hash(self) -> str: ...

    @property
    def input_shapes(self) -> list[list[int]]: ...

    def group(self, group_id: str) -> ChannelGroup: ...

    def block(self, name: str) -> Block: ...


FORMAT = "graphprune.plan"
VERSION = 1


@dataclass
class PruningPlan:
    """Blocks to remove and, per channel group, the indices to remove. Builder methods return self."""

    channels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    arch_hash: str | None = None
    input_shapes: list[list[int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_graph(cls, pg: PlanTarget) -> PruningPlan:
        """An empty plan bound to `pg`'s architecture (its hash and input shapes are recorded)."""
        return cls(arch_hash=pg.arch_hash, input_shapes=pg.input_shapes)

    # ----- building
    def remove_channels(self, group_id: str, indices: Any) -> PruningPlan:
        idx = [int(i) for i in indices]
        if any(i < 0 for i in idx):
            raise PlanError(f"group '{group_id}': negative channel index in {sorted(idx)}")
        merged = set(self.channels.get(group_id, ())) | set(idx)
        if merged:
            self.channels[group_id] = tuple(sorted(merged))
        return self

    def remove_block(self, name: str) -> PruningPlan:
        if name not in self.blocks:
            self.blocks.append(name)
        return self

    # ----- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "arch_hash": self.arch_hash,
            "input_shapes": self.input_shapes,
            "blocks": list(self.blocks),
            "channels": {k: list(v) for k, v in self.channels.items()},
            "meta": self.meta,
        }

    def to_json(self) -> str:
        """JSON with one line per field and per channel group (groups in natural module order)."""
        d = self.to_dict()
        channels = d.pop("channels")
        meta = d.pop("meta")
        rows = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items()]
        rows.append(f'  "meta": {_object_lines(meta, list(meta))}')
        rows.append(f'  "channels": {_object_lines(channels, sorted(channels, key=_natural_key))}')
        return "{\n" + ",\n".join(rows) + "\n}\n"

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "plan") -> PruningPlan:
        if not isinstance(d, dict):
            raise PlanError(f"{source}: a plan must be a JSON object")
        if d.get("format") != FORMAT:
            raise PlanError(
                f"{source}: not a graphprune plan (format is {d.get('format')!r}, expected {FORMAT!r})"
            )
        if d.get("version") != VERSION:
            raise PlanError(
                f"{source}: unsupported plan version {d.get('version')!r} (this graphprune reads {VERSION})"
            )
        blocks = d.get("blocks", [])
        channels = d.get("channels", {})
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise PlanError(f"{source}: 'blocks' must be a list of block names")
        if not isinstance(channels, dict):
            raise PlanError(f"{source}: 'channels' must map group ids to index lists")
        meta = d.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise PlanError(f"{source}: 'meta' must be a JSON object, got {type(meta).__name__}")
        plan = cls(arch_hash=d.get("arch_hash"), input_shapes=d.get("input_shapes"), meta=dict(meta or {}))
        for gid, idx in channels.items():
            if not isinstance(idx, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in idx
            ):
                raise PlanError(f"{source}: channels of group '{gid}' must be a list of integers")
            try:
                plan.remove_channels(gid, idx)
            except PlanError as exc:
                raise PlanError(f"{source}: {exc}") from None
        for b in blocks:
            plan.remove_block(b)
        shapes = plan.input_shapes
        if shapes is not None and not (
            isinstance(shapes, list)
            and all(isinstance(s, list) and all(isinstance(x, int) for x in s) for s in shapes)
        ):
            raise PlanError(f"{source}: 'input_shapes' must be a list of integer lists")
        return plan

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> PruningPlan:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{source}: corrupt plan, invalid JSON at line {exc.lineno}: {exc.msg}") from None
        return cls.from_dict(d, source=source)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"cannot read plan {p}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.from_json(text, source=str(p))

    # ----- checking
    def validate(self, pg: PlanTarget) -> None:
        """Raise PlanError naming every way this plan does not fit `pg`."""
        problems: list[str] = []
        if self.arch_hash is not None and self.arch_hash != pg.arch_hash:
            problems.append(f"plan was made for architecture {self.arch_hash}, this model is {pg.arch_hash}")
        for gid, idx in self.channels.items():
            try:
                g = pg.group(gid)
            except PlanError as exc:
                problems.append(str(exc))
                continue
            if not g.prunable:
                problems.append(f"group '{gid}' is not prunable: {g.reason}")
            bad = [i for i in idx if i >= g.size]
            if bad:
                problems.append(f"group '{gid}' has {g.size} channels; index {bad[0]} is out of range")
            elif len(set(idx)) >= g.size:
                problems.append(f"plan removes all {g.size} channels of group '{gid}'")
        for b in self.blocks:
            try:
                pg.block(b)
            except PlanError as exc:
                problems.append(str(exc))
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise PlanError("; ".join(problems[:3]) + more)


def _object_lines(d: dict[str, Any], keys: list[str]) -> str:
    """A JSON object nested one level deep, one line per key."""
    body = ",\n".join(f"    {json.dumps(k)}: {json.dumps(d[k])}" for k in keys)
    return "{\n" + body + "\n  }" if body else "{}"


def _natural_key(name: str) -> list[object]:
    """'layer2.10.conv1' after 'layer2.9.conv1'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

"""ABP voting: on a calibration set, each sample votes for the blocks whose gate marks are lowest."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from graphprune.passes.block_gates import gates_of


@dataclass(frozen=True)
class Vote:
    """Per-block vote counts and mark statistics; `ranking` lists the candidates, first = prune first."""

    blocks: tuple[str, ...]  # block names, graph order
    votes: tuple[int, ...]
    mean_mark: tuple[float, ...]
    std_mark: tuple[float, ...]
    samples: int
    ranking: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "ranking": list(self.ranking),
            "blocks": {
                b: {"votes": v, "mean_mark": round(m, 4), "std_mark": round(s, 4)}
                for b, v, m, s in zip(self.blocks, self.votes, self.mean_mark, self.std_mark, strict=True)
            },
        }


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """Block names and their gates' marks on every calibration sample, shape (samples, blocks). Eval mode."""
    gates = gates_of(model)
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    try:
        for x in batches:
            model(x)
            rows.append(torch.stack([g.mark for g in gates.values() if g.mark is not None], dim=1).cpu())
    finally:
        model.train(was_training)
    marks = torch.cat(rows) if rows else torch.zeros(0, len(gates))
    return list(gates), marks


def vote(names: Sequence[str], marks: torch.Tensor, k: int, exclude: Iterable[str] = ()) -> Vote:
    """Each sample gives one vote to each of its `k` lowest-marked candidate blocks (those not excluded).

    Ranked by votes (most first), ties by mean mark (lowest first), then by graph order.
    """
    skip = set(exclude)
    cand = [i for i, n in enumerate(names) if n not in skip]
    votes = torch.zeros(len(names), dtype=torch.long)
    k = max(0, min(k, len(cand)))
    if k and marks.shape[0] and cand:
        sub = marks[:, cand]
        lowest = sub.topk(k, dim=1, largest=False).indices
        counts = torch.bincount(lowest.reshape(-1), minlength=len(cand))
        votes[cand] = counts
    mean = marks.mean(0) if marks.shape[0] else torch.zeros(len(names))
    std = marks.std(0, correction=0) if marks.shape[0] else torch.zeros(len(names))
    order = sorted(cand, key=lambda i: (-int(votes[i]), float(mean[i]), i))
    return Vote(
        blocks=tuple(names),
        votes=tuple(int(v) for v in votes),
        mean_mark=tuple(float(m) for m in mean),
        std_mark=tuple(float(s) for s in std),
        samples=int(marks.shape[0]),
        ranking=tuple(names[i] for i in order),
    )

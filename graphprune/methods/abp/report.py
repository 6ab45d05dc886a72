"""What ABP adds to report.md: a plot of the gate marks per block, the vote counts, the removed blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphprune.fileio import atomic_path


def plot_marks(vote: dict[str, Any], removed: set[str], path: Path) -> Path:
    """Mean gate mark per block with its spread (one std) over the calibration set; removed in red.

    `vote` is a `Vote.to_dict()`: the first pruning step's shows the stage-1 network, every block on.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(vote["blocks"])
    x = list(range(len(blocks)))
    mean = [vote["blocks"][b]["mean_mark"] for b in blocks]
    std = [vote["blocks"][b]["std_mark"] for b in blocks]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(x)), 3.6))
    colors = ["tab:red" if b in removed else "tab:blue" for b in blocks]
    ax.bar(x, mean, yerr=std, color=colors, capsize=2)
    ax.set_xticks(x, blocks, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("gate mark (mean ± std)")
    ax.set_title(  # two short lines: the figure of a 9-block net is 6 inches wide
        f"ABP gate marks after stage 1\n{vote['samples']} calibration samples; red: removed", fontsize=9
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

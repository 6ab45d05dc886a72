"""What ABP adds to report.md: a plot of the gate marks per block, the vote counts, the removed blocks."""

from __future__ import annotations

from pathlib import Path

from graphprune.fileio import atomic_path
from graphprune.methods.abp.voting import Vote


def plot_marks(vote: Vote, removed: set[str], path: Path) -> Path:
    """Mean gate mark per block with its spread (one std) over the calibration set; removed in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(vote.blocks)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(x)), 3.6))
    colors = ["tab:red" if b in removed else "tab:blue" for b in vote.blocks]
    ax.bar(x, vote.mean_mark, yerr=vote.std_mark, color=colors, capsize=2)
    ax.set_xticks(x, vote.blocks, rotation=90, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("gate mark (mean ± std)")
    ax.set_title(f"ABP gate marks over {vote.samples} calibration samples (red: removed)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

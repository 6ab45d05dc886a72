"""`report.md` of a run: original vs pruned (accuracy, FLOPs, params, ONNX size, latency) and PNG plots.

Every number comes from the run's own measurements, passed in as a dict; nothing is computed here
but formatting and plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphprune.fileio import atomic_path, write_text

CURVES_PNG = "training_curves.png"
CHANNELS_PNG = "kept_channels.png"


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value:.2f}%"
    if kind == "mmacs":
        return f"{value / 1e6:.2f} M"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "kb":
        return f"{value / 1024:.1f} KiB"
    if kind == "ms":
        return f"{value:.3f}"
    return str(value)


def _ratio(after: Any, before: Any) -> str:
    if isinstance(after, (int, float)) and isinstance(before, (int, float)) and before:
        return f"{after / before:.3f}"
    return "-"


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write `fig` as a PNG at `path` atomically and free it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    return path


def plot_training_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train loss and accuracy over epochs (every logged step, so one epoch still shows a curve) and test
    top-1 per epoch, stages one after another; None if nothing was logged."""
    rows = [r for r in history if r.get("kind") in ("step", "epoch") and "train_loss" in r]
    if not rows:
        return None
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    offset = 0.0
    for stage in stages:
        steps = [r for r in rows if r["stage"] == stage and r["kind"] == "step"]
        epochs = [r for r in rows if r["stage"] == stage and r["kind"] == "epoch"]
        curve = steps or epochs
        xs = [offset + float(r["epoch"]) for r in curve]
        (line,) = loss_ax.plot(xs, [r["train_loss"] for r in curve], lw=1.2, label=f"{stage} train")
        acc_ax.plot(
            xs, [r["train_acc"] for r in curve], lw=1.2, color=line.get_color(), label=f"{stage} train"
        )
        tested = [r for r in epochs if "eval_top1" in r]
        if tested:
            acc_ax.plot(
                [offset + float(r["epoch"]) for r in tested], [r["eval_top1"] for r in tested],
                "s", color=line.get_color(), label=f"{stage} {tested[-1].get('eval_split', 'test')} top-1",
            )  # fmt: skip
        offset += max(float(r["epoch"]) for r in curve)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_kept_channels(channels: list[tuple[str, int, int, bool]], path: Path) -> Path | None:
    """Bars of kept vs original channels per prunable group, labelled by its first layer
    (`(layer, size, kept, removed)`); groups inside removed blocks are drawn hatched as removed."""
    if not channels:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(channels)), 4.2))
    xs = list(range(len(channels)))
    ax.bar(xs, [c[1] for c in channels], color="#ddd", label="original")
    ax.bar(xs, [c[2] for c in channels], color="#3a7", label="kept")
    removed = [x for x, c in zip(xs, channels, strict=True) if c[3]]
    if removed:
        ax.bar(removed, [channels[x][1] for x in removed], color="none", edgecolor="#c33", hatch="//",
               label="removed block")  # fmt: skip
    ax.set_xticks(xs, [c[0] for c in channels], rotation=90, fontsize=7)
    ax.set(ylabel="channels", title="kept channels per layer")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_report_md(run_dir: Path, report: dict[str, Any], plots: list[Path]) -> Path:
    """The markdown report of `report` (the dict written as report.json)."""
    orig, pruned = report["original"], report["pruned"]
    rows: list[tuple[str, str, str]] = [
        ("test top-1", "top1", "pct"),
        ("test top-5", "top5", "pct"),
        ("FLOPs (MACs)", "flops", "mmacs"),
        ("params", "params", "int"),
        ("ONNX size", "onnx_bytes", "kb"),
    ]
    for batch in (1, 32):
        for q in ("p50", "p90"):
            rows.append((f"onnxruntime latency batch {batch} {q} (ms)", f"latency_b{batch}_{q}_ms", "ms"))
    lines = [
        f"# {report['model']}: {report.get('method') or 'no pruning'}",
        "",
        f"Data: `{report.get('data')}`. Budget: {report.get('budget')}. "
        f"Fine-tuning: {report.get('finetune_summary', 'none')}.",
        "",
        "| metric | original | pruned | pruned / original |",
        "|---|---:|---:|---:|",
    ]
    for label, key, kind in rows:
        lines.append(f"| {label} | {_fmt(orig.get(key), kind)} | {_fmt(pruned.get(key), kind)} | "
                     f"{_ratio(pruned.get(key), orig.get(key))} |")  # fmt: skip
    if report.get("lossless_note"):
        lines += ["", f"**{report['lossless_note'][0].upper()}{report['lossless_note'][1:]}.**"]
    method_numbers = report.get("method_report") or {}
    if method_numbers:
        lines += ["", "## Method", ""] + [f"- {k}: {v}" for k, v in method_numbers.items()]
    lines += [
        "",
        "Latency: onnxruntime on this machine, 1 intra-op thread, median (p50) and 90th percentile of "
        "timed runs after warm-up. Accuracy: the run's own evaluation of the test split.",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = run_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path

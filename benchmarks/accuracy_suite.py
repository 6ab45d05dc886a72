"""Suite 1: top-1 against FLOPs on CIFAR-10 JPEG, graphprune methods against Torch-Pruning, equal fine-tuning.

    python benchmarks/accuracy_suite.py --smoke   # a few steps on a few images (CI)
    python benchmarks/accuracy_suite.py --quick   # ResNet-20, 1 seed, short schedule (< 30 min on 2 cores)
    python benchmarks/accuracy_suite.py --full    # ResNet-56, 2 seeds; resumable, CUDA when present

Every arm starts from the shared JPEG baseline (`cifar10jpeg_resnet{20,56}.th`), is pruned to the same
FLOPs target, then fine-tuned by the same `graphprune.train.fit` with the same TrainConfig and knowledge
distillation from the unpruned baseline. Arms: the graphprune methods abp, wgates, abp+wgates and l1 from
the methods registry (a method that is not registered is recorded as "not available", never faked), and
Torch-Pruning's MagnitudeImportance (L1) and GroupNormImportance (group L2), each global and per layer,
pruned to the same FLOPs (`tp_arms`). The unpruned control is fine-tuned with the same budget. Each arm's
result is written atomically to OUT/accuracy_arms/<mode>/ as soon as it finishes and skipped on re-runs;
accuracy.json, accuracy.md and accuracy.png are rebuilt from those files at the end.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import run_meta
import torch
import tp_arms
from torch import nn

import graphprune as gp
from graphprune import shared
from graphprune.export import export_onnx
from graphprune.fileio import write_text
from graphprune.latency import paired_latency
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
GP_METHODS = ("abp", "wgates", "abp+wgates", "l1")
TP_ARMS = {
    "tp-magnitude-global": ("magnitude", True),
    "tp-magnitude-layer": ("magnitude", False),
    "tp-groupnorm-global": ("groupnorm", True),
    "tp-groupnorm-layer": ("groupnorm", False),
}
CONTROL = "unpruned"


@dataclass(frozen=True)
class Mode:
    """One way to run the suite: model, seeds, targets (FLOPs reductions) and the shared training budget."""

    name: str
    model: str
    weights: str
    seeds: tuple[int, ...]
    reductions: tuple[float, ...]
    finetune: dict[str, Any]
    """TrainConfig fields of the fine-tuning every arm (and the control) gets."""
    method_options: dict[str, Any]
    """Options handed to learned methods for their own stages, which train with the fine-tuning
    TrainConfig (its max_steps included): `epochs` (abp stages 1 and 2), `stage_epochs` (wgates)."""
    data_limit: int | None = None
    eval_batches: int | None = None
    pre_eval_batches: int | None = 4
    """Batches (of 512) for the top-1 right after pruning, before fine-tuning: an indication only."""
    latency_rounds: int = 5
    tp_arms: tuple[str, ...] = tuple(TP_ARMS)


MODES = {
    "smoke": Mode(
        "smoke",
        "graphprune:cifar_resnet20",
        "cifar10jpeg_resnet20.th",
        (0,),
        (0.5,),
        {"epochs": 1, "max_steps": 2, "batch_size": 32, "log_every": 1, "verbose": False},
        {"epochs": [1, 1], "stage_epochs": [1]},
        data_limit=256,
        eval_batches=1,
        pre_eval_batches=1,
        latency_rounds=1,
        tp_arms=("tp-magnitude-layer",),
    ),
    "quick": Mode(
        "quick",
        "graphprune:cifar_resnet20",
        "cifar10jpeg_resnet20.th",
        (0,),
        (0.4, 0.5, 0.6),
        {"epochs": 1, "max_steps": 48, "batch_size": 128, "lr": 0.01, "eval_every_epoch": False},
        {"epochs": [1, 1], "stage_epochs": [1]},
    ),
    "full": Mode(
        "full",
        "graphprune:cifar_resnet56",
        "cifar10jpeg_resnet56.th",
        (0, 1),
        (0.4, 0.5, 0.6),
        {"epochs": 15, "batch_size": 128, "lr": 0.02},
        {"epochs": [2, 2], "stage_epochs": [3]},
    ),
}


class NotRegistered(LookupError):
    """A graphprune arm whose method no branch has registered yet: recorded as not available."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def arm_names(mode: Mode | None = None) -> list[str]:
    """Every arm of the suite (the smoke mode runs one Torch-Pruning arm)."""
    return [*GP_METHODS, *(mode.tp_arms if mode else TP_ARMS)]


def prune(
    arm: str,
    model: nn.Module,
    x: tuple[torch.Tensor, ...],
    keep: float,
    data: Any,
    cfg: Any,
    mode: Mode,
    run_dir: Path,
) -> tuple[nn.Module, dict[str, Any]]:
    """The pruned (not yet fine-tuned) model of `arm` and notes on how it was made.

    Raises NotRegistered when a graphprune method is not in the registry.
    """
    if arm in TP_ARMS:
        importance, global_pruning = TP_ARMS[arm]
        notes: dict[str, Any] = {"round_to": 8, "global": global_pruning}
        kwargs: dict[str, Any] = {"importance": importance, "global_pruning": global_pruning}
        try:
            res = tp_arms.tp_prune_to_flops(model, x, keep, **kwargs)
        except tp_arms.BrokenModelError as exc:
            # Torch-Pruning couples the zero-padded option-A shortcut wrongly: keep it off the residual stream
            ignored = tuple(tp_arms.coupled_convs(model, x))
            notes.update(first_attempt=str(exc), ignored_residual_convs=len(ignored))
            res = tp_arms.tp_prune_to_flops(model, x, keep, ignored=ignored, **kwargs)
        notes.update(pruning_ratio=res.pruning_ratio, matched=res.matched)
        return res.model, notes

    from graphprune.methods import Budget, MethodContext, get_method, method_names

    if arm not in method_names():
        raise NotRegistered(f"method {arm!r} is not registered (registered: {', '.join(method_names())})")
    method = get_method(arm)
    pg = gp.trace(model, x)
    ctx = MethodContext(
        model=model,
        example_inputs=x,
        pg=pg,
        budget=Budget(target_flops=keep),
        data=data,
        train_cfg=cfg,
        teacher=model,
        run_dir=run_dir / "method",
        resume=True,
        options=dict(mode.method_options),
    )
    result = method(ctx)
    slim = gp.apply(gp.trace(result.model, x), result.plan)
    report = {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}
    return slim, {"method_report": report, "method_options": mode.method_options}


def run_arm(
    arm: str, reduction: float | None, seed: int, mode: Mode, data: Any, work: Path, original_onnx: Path
) -> dict[str, Any]:
    """Prune, fine-tune (KD from the baseline), evaluate, export and time one arm; never raises."""
    from graphprune.train import TrainConfig, evaluate, fit

    resolved = resolve_model(mode.model)
    baseline = load_weights(resolved.model, shared.weights_file(mode.weights)).eval()
    x = resolved.example_inputs
    base_flops = gp.count_flops(baseline, x)
    cfg = TrainConfig(**{**mode.finetune, "seed": seed})
    run_dir = (
        work / f"{arm}@{reduction:g}" / f"seed{seed}" if reduction is not None else work / arm / f"seed{seed}"
    )
    out: dict[str, Any] = {"arm": arm, "reduction": reduction, "seed": seed, "finetune": cfg.to_dict()}
    start = time.perf_counter()
    try:
        torch.manual_seed(seed)
        if reduction is None:
            slim, notes = copy.deepcopy(baseline), {}
        else:
            slim, notes = prune(arm, baseline, x, 1.0 - reduction, data, cfg, mode, run_dir)
        out["notes"] = notes
        out["flops"] = gp.count_flops(slim, x)
        out["flops_ratio"] = out["flops"] / base_flops
        out["params"] = gp.count_params(slim)
        out["top1_pruned"] = evaluate(slim, data, max_batches=mode.pre_eval_batches).top1
        fit(slim, data, cfg, teacher=baseline, run_dir=run_dir, stage="finetune", resume=True)
        slim = slim.cpu().eval()
        result = evaluate(slim, data, max_batches=mode.eval_batches)
        out.update(top1=result.top1, top5=result.top5, test_images=result.n)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "arm.onnx"
            export_onnx(slim, x, path)
            t = paired_latency(original_onnx, path, x[0].shape, rounds=mode.latency_rounds, runs=5)
        out.update(
            latency_ms=t["candidate_ms"], original_latency_ms=t["baseline_ms"], latency_ratio=t["ratio"]
        )
        out["status"] = "ok"
    except NotRegistered as exc:
        out.update(status="not available", error=str(exc))
    except Exception as exc:  # recorded as this arm's failure, shown in the table
        out.update(status="failed", error=_one_line(exc), traceback=traceback.format_exc(limit=4))
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def aggregate(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, target): top-1 mean and half-range over seeds, FLOPs, params, latency."""
    keys = sorted({(a["arm"], a["reduction"]) for a in arms}, key=lambda k: (k[0], k[1] or 0.0))
    rows = []
    for arm, reduction in keys:
        runs = [a for a in arms if a["arm"] == arm and a["reduction"] == reduction]
        ok = [a for a in runs if a["status"] == "ok"]
        row: dict[str, Any] = {"arm": arm, "reduction": reduction, "seeds": len(runs), "ok": len(ok)}
        if not ok:
            row.update(status=runs[0]["status"], error=runs[0].get("error", ""))
        else:
            top1 = np.array([a["top1"] for a in ok])
            row.update(
                status="ok",
                top1_mean=float(top1.mean()),
                top1_spread=float((top1.max() - top1.min()) / 2),
                top1_pruned_mean=float(np.mean([a["top1_pruned"] for a in ok])),
                flops_ratio=float(np.mean([a["flops_ratio"] for a in ok])),
                flops=int(np.mean([a["flops"] for a in ok])),
                params=int(np.mean([a["params"] for a in ok])),
                latency_ratio=float(np.median([a["latency_ratio"] for a in ok])),
                latency_ms=float(np.median([a["latency_ms"] for a in ok])),
            )
        rows.append(row)
    return rows


def markdown(data: dict[str, Any]) -> str:
    """accuracy.md: every number from accuracy.json."""
    meta, mode = data["meta"], data["mode"]
    lines = [
        "# Accuracy against FLOPs on CIFAR-10 JPEG (suite 1)",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['mode']} mode); {mode['model']} from "
        f"`{mode['weights']}`, seeds {mode['seeds']}; every arm fine-tuned with the same TrainConfig "
        f"{mode['finetune']} and KD from the baseline. Top-1 on the JPEG test split "
        f"({'first ' + str(mode['eval_batches']) + ' batch(es)' if mode['eval_batches'] else 'all images'}).",
        "Top-1 is mean ± half-range over seeds; latency is onnxruntime batch 1, 1 thread, pruned / original "
        "(interleaved rounds).",
        f"Learned methods (abp, wgates) also train in their own stages before that fine-tuning, with "
        f"options {mode['method_options']}; the other arms are pruned without training.",
        "",
        "| arm | target reduction | FLOPs kept | params | top-1 pruned (subset) | top-1 | latency ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        target = "—" if r["reduction"] is None else f"{r['reduction']:.0%}"
        if r["status"] != "ok":
            lines.append(f"| {r['arm']} | {target} | {r['status']}: {r.get('error', '')} | | | | |")
            continue
        lines.append(
            f"| {r['arm']} | {target} | {r['flops_ratio']:.3f} | {r['params']:,} | "
            f"{r['top1_pruned_mean']:.2f} | {r['top1_mean']:.2f} ± {r['top1_spread']:.2f} | "
            f"{r['latency_ratio']:.3f} |"
        )
    lines += [""] + verdicts(data["rows"])
    lines += (
        [
            "- Where the learned arms keep far more accuracy right after pruning but end level with or",
            "  below Torch-Pruning, the fine-tuning budget decides: this mode's is short (see TrainConfig",
            "  above), and the full mode's longer one is the test of which start is better.",
        ]
        if meta["mode"] != "full"
        else []
    )
    seconds = sum(float(a.get("seconds", 0.0)) for a in data["arms"])
    lines += [f"- Summed time of the arms (each timed as it ran): {seconds / 60:.0f} min."]
    if any("first_attempt" in a.get("notes", {}) for a in data["arms"]):
        lines += [
            "",
            "Torch-Pruning's first pruned model did not run (it couples the zero-padded option-A shortcut",
            "as if elementwise), so its residual-stream convs were passed as `ignored_layers`: its arms",
            "prune only the convs inside the blocks. That is the peer's documented way round it, and it",
            "limits where it can take FLOPs from.",
        ]
    lines += ["", "Per-seed results, with the Torch-Pruning ratio search and method reports, are in "]
    lines[-1] += "`accuracy.json` (`arms`).\n"
    return "\n".join(lines)


BUDGET_SLACK = 0.02
"""An arm meets a target if it keeps at most (1 - reduction) + this share of the FLOPs."""


def targets(rows: list[dict[str, Any]]) -> list[float]:
    """The FLOPs reductions the finished arms were pruned to, in order."""
    return sorted({r["reduction"] for r in rows if r["status"] == "ok" and r["reduction"] is not None})


def best_within_budget(
    rows: list[dict[str, Any]], reduction: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """(best graphprune arm, best Torch-Pruning arm, the arms that missed the budget) at `reduction`.

    Only arms keeping at most (1 - reduction) + BUDGET_SLACK of the FLOPs compete: one that kept more had
    an easier task."""
    at = [r for r in rows if r["status"] == "ok" and r["reduction"] == reduction]
    met = [r for r in at if r["flops_ratio"] <= 1 - reduction + BUDGET_SLACK]
    gp_rows = [r for r in met if r["arm"] in GP_METHODS]
    tp_rows = [r for r in met if r["arm"] in TP_ARMS]
    best_gp = max(gp_rows, key=lambda r: r["top1_mean"], default=None)
    best_tp = max(tp_rows, key=lambda r: r["top1_mean"], default=None)
    return best_gp, best_tp, [r for r in at if r not in met]


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per target: the best graphprune arm against the best Torch-Pruning arm, among the arms that met the
    FLOPs budget (an arm that kept more FLOPs had an easier task), whichever wins; then the arms that
    missed it."""
    out = []
    for t in targets(rows):
        g, p, missed = best_within_budget(rows, t)
        if g and p:
            diff = g["top1_mean"] - p["top1_mean"]
            who = "graphprune wins" if diff > 0 else "graphprune loses" if diff < 0 else "tie"
            out.append(
                f"- -{t:.0%} FLOPs: best graphprune arm {g['arm']} {g['top1_mean']:.2f}% (FLOPs kept "
                f"{g['flops_ratio']:.3f}) vs best Torch-Pruning arm {p['arm']} {p['top1_mean']:.2f}% "
                f"(FLOPs kept {p['flops_ratio']:.3f}): {who} by {abs(diff):.2f} points."
            )
            out.append(
                f"  Right after pruning, before fine-tuning (subset): {g['arm']} "
                f"{g['top1_pruned_mean']:.2f}%, {p['arm']} {p['top1_pruned_mean']:.2f}%."
            )
        elif g or p:
            out.append(f"- -{t:.0%} FLOPs: only {'graphprune' if g else 'Torch-Pruning'} arms met it.")
        if missed:
            names = ", ".join(f"{r['arm']} ({r['flops_ratio']:.4f})" for r in missed)
            limit = 1 - t + BUDGET_SLACK
            out.append(f"  Missed the budget (kept over {limit:.3f} of the FLOPs; not compared): {names}.")
    return out


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (FLOPs, top-1) points no other point beats on both (fewer FLOPs and higher top-1), by FLOPs."""
    front: list[tuple[float, float]] = []
    for f, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or a > front[-1][1]:
            front.append((f, a))
    return front


def plot(data: dict[str, Any], path: Path) -> None:
    """Top-1 against FLOPs kept, one colour per arm, its Pareto line, the unpruned control dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for arm in arm_names():
        rows = [r for r in data["rows"] if r["arm"] == arm and r["status"] == "ok"]
        if not rows:
            continue
        pts = [(r["flops_ratio"], r["top1_mean"]) for r in rows]
        err = [r["top1_spread"] for r in rows]
        peer = arm in TP_ARMS  # Torch-Pruning: squares and dashed Pareto lines
        line = ax.errorbar(*zip(*pts, strict=True), yerr=err, fmt="s" if peer else "o", ms=4, label=arm)
        front = pareto(pts)
        ax.plot(*zip(*front, strict=True), "--" if peer else "-", color=line.lines[0].get_color(), lw=1)
    control = [r for r in data["rows"] if r["arm"] == CONTROL and r["status"] == "ok"]
    if control:
        ax.axhline(control[0]["top1_mean"], color="k", ls="--", lw=0.8, label="unpruned, same epochs")
    ax.set_xlabel("FLOPs kept (of the original)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{data['mode']['model']}, CIFAR-10 JPEG ({data['meta']['mode']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command()
@click.option("--smoke", "mode_name", flag_value="smoke", help="A few steps on a few images (CI).")
@click.option("--quick", "mode_name", flag_value="quick", help="ResNet-20, 1 seed, short schedule.")
@click.option("--full", "mode_name", flag_value="full", default=True, help="ResNet-56, 2 seeds (default).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Checkpoints of the runs (default: a temporary folder for --smoke, ./runs/accuracy-<mode>).",
)
@click.option("--arm", "only", multiple=True, help="Run only these arms (repeatable; 'unpruned' too).")
@click.option("--device", default="auto", show_default=True, help="Training device (auto: CUDA if present).")
@click.option("--max-steps", type=int, default=None, help="Override the fine-tuning (and stage) step limit.")
def main(
    mode_name: str,
    out: Path,
    work_dir: Path | None,
    only: tuple[str, ...],
    device: str,
    max_steps: int | None,
) -> None:
    """Run (or resume) the accuracy suite and rebuild accuracy.json, accuracy.md and accuracy.png."""
    from graphprune.train import TrainConfig, load_data

    mode = MODES[mode_name]
    unknown = sorted(set(only) - {CONTROL, *arm_names()})
    if unknown:
        choices = ", ".join([CONTROL, *arm_names()])
        raise click.BadParameter(f"unknown arm {unknown[0]!r} (choose from {choices})", param_hint="--arm")
    finetune = {**mode.finetune, "device": device}
    if max_steps is not None:
        finetune["max_steps"] = max_steps
    mode = replace(mode, finetune=finetune)
    current = TrainConfig(**finetune).to_dict()
    arms_dir = out / "accuracy_arms" / mode.name
    with tempfile.TemporaryDirectory() as tmp:
        work = work_dir or (Path(tmp) if mode.name == "smoke" else ROOT / "runs" / f"accuracy-{mode.name}")
        data = load_data("cifar10:", limit=mode.data_limit)
        resolved = resolve_model(mode.model)
        baseline = load_weights(resolved.model, shared.weights_file(mode.weights)).eval()
        original_onnx = Path(tmp) / "original.onnx"
        export_onnx(baseline, resolved.example_inputs, original_onnx)
        jobs: list[tuple[str, float | None, int]] = [(CONTROL, None, s) for s in mode.seeds]
        jobs += [(a, r, s) for r in mode.reductions for a in arm_names(mode) for s in mode.seeds]
        for arm, reduction, seed in jobs:
            if only and arm not in only:
                continue
            name = f"{arm}@{reduction:g}-seed{seed}" if reduction is not None else f"{arm}-seed{seed}"
            path = arms_dir / f"{name.replace('+', '_')}.json"
            if path.exists():
                earlier = json.loads(path.read_text()).get("finetune", {})
                keys = ("epochs", "max_steps", "lr", "batch_size")
                changed = [k for k in keys if earlier.get(k) != current[k]]
                note = f" (with other {', '.join(changed)}: delete it to re-run)" if changed else ""
                click.echo(f"{name}: done earlier ({path}), skipped{note}")
                continue
            result = run_arm(arm, reduction, seed, mode, data, work, original_onnx)
            write_text(path, json.dumps(result, indent=1) + "\n")
            click.echo(f"{name}: {result['status']} top-1 {result.get('top1')} ({result['seconds']} s)")
    arms = [json.loads(p.read_text()) for p in sorted(arms_dir.glob("*.json"))]
    summary = {
        "meta": run_meta.describe_run(mode.name),
        "mode": {
            "model": mode.model,
            "weights": mode.weights,
            "seeds": list(mode.seeds),
            "reductions": list(mode.reductions),
            "finetune": mode.finetune,
            "method_options": mode.method_options,
            "data_limit": mode.data_limit,
            "eval_batches": mode.eval_batches,
            "pre_eval_batches": mode.pre_eval_batches,
        },
        "rows": aggregate(arms),
        "arms": arms,
    }
    write_text(out / "accuracy.json", json.dumps(summary, indent=1) + "\n")
    write_text(out / "accuracy.md", markdown(summary))
    plot(summary, out / "accuracy.png")
    click.echo(f"wrote {out / 'accuracy.json'}, accuracy.md, accuracy.png")


if __name__ == "__main__":
    main()

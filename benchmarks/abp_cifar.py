"""ABP vs L1 channel pruning at the same FLOPs vs the unpruned control, all trained for the same epochs.

    python benchmarks/abp_cifar.py --smoke            # seconds: tiny data, 2 steps per stage (CI)
    python benchmarks/abp_cifar.py --quick            # ResNet-20, 10k training images, 1+1+1 epochs
    python benchmarks/abp_cifar.py                    # ResNet-56, -40% and -60% FLOPs, 5+5+10 epochs

Each arm stores its JSON under `--runs/<mode>/` when done and is skipped on a re-run; an interrupted arm
resumes inside its training stage. CUDA is used when present. Writes docs/results/abp_cifar_<mode>.{json,md}
(`--out` elsewhere). Arms: `abp-<t>` (ABP stages 1+2, then fine-tune = stage 3), `l1-<t>` (L1 channels
to ABP's measured FLOPs, fine-tuned for all epochs), `control` (unpruned, trained for all epochs);
every fine-tune distils from the original (CE + KD). Latency: onnxruntime CPU, 1 thread, batch 1 and 32,
interleaved medians (graphprune.latency.paired_latency).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import click
import torch
from gp_arms import jpeg_baseline
from trained_arms import control, distil, measure

import graphprune as gp
from graphprune import shared
from graphprune.fileio import write_text
from graphprune.latency import paired_latency
from graphprune.methods import Budget, MethodContext, get_method
from graphprune.train import TrainConfig, load_data

ROOT = Path(__file__).resolve().parents[1]

MODES: dict[str, dict[str, Any]] = {
    "full": {"model": "cifar_resnet56", "targets": (0.6, 0.4), "epochs": (5, 5, 10), "limit": None,
             "max_steps": None, "rounds": 9, "control_latency": True},
    "quick": {"model": "cifar_resnet20", "targets": (0.6, 0.4), "epochs": (1, 1, 1), "limit": 10000,
              "max_steps": None, "rounds": 7, "control_latency": True},
    "smoke": {"model": "cifar_resnet20", "targets": (0.6,), "epochs": (1, 1, 1), "limit": 64,
              "max_steps": 2, "rounds": 1, "control_latency": False},
}  # fmt: skip


def run_arm(
    arm: str, mode: dict[str, Any], data: Any, cfg: TrainConfig, run: Path, done: dict[str, Any]
) -> dict[str, Any]:
    """Train and measure one arm; `done` holds the arms finished before (L1 reads ABP's FLOPs)."""
    original = jpeg_baseline(mode["model"])
    x = torch.randn(1, *data.input_shape)
    pg = gp.trace(original, x)
    e1, e2, e3 = mode["epochs"]
    total = e1 + e2 + e3
    run.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"arm": arm, "epochs": total}

    if arm == "original":
        return {**record, "epochs": 0, **measure(original, data, x, None, cfg)}
    if arm == "control":
        onnx = run / "model.onnx" if mode["control_latency"] else None
        return {**record, **control(original, data, x, cfg, total, run, onnx)}
    method, target = arm.split("-")
    if method == "abp":
        ctx = MethodContext(
            model=original, example_inputs=(x,), pg=pg, budget=Budget(target_flops=float(target)), data=data,
            train_cfg=cfg, run_dir=run, resume=True, options={"epochs": [e1, e2]},
        )  # fmt: skip
        res = get_method("abp")(ctx)
        plan, start, ft_epochs = res.plan, res.model, e3
        record["removed_blocks"] = plan.blocks
        record["predicted_flops"] = res.report["predicted_flops"]
    else:  # l1 at the FLOPs ABP reached for the same target
        flops = done[f"abp-{target}"]["flops"] / pg.flops
        plan = gp.criteria.plan_by_criterion(pg, "l1", target_flops=flops, scope="global", round_to=1)
        start, ft_epochs = original, total
        record["target_flops_ratio"] = flops
    slim = gp.apply(gp.trace(start, x), plan)
    distil(slim, original, data, cfg, ft_epochs, run)
    return {**record, **measure(slim, data, x, run / "model.onnx", cfg)}


def latency_rows(
    results: dict[str, Any], runs: Path, targets: tuple[float, ...], rounds: int, control: bool = True
) -> list[dict[str, Any]]:
    """ABP vs L1 (equal FLOPs) and each vs the control, batch 1 and 32, interleaved medians."""
    rows = []
    pairs = [(f"l1-{t}", f"abp-{t}") for t in targets]
    if control:
        pairs += [("control", f"{m}-{t}") for t in targets for m in ("abp", "l1")]
    for base, cand in pairs:
        for batch in (1, 32):
            t = paired_latency(
                runs / base / "model.onnx", runs / cand / "model.onnx", (batch, 3, 32, 32), rounds=rounds
            )
            rows.append({"baseline": base, "candidate": cand, "batch": batch, **t})
    return rows


def markdown(
    mode_name: str, mode: dict[str, Any], results: dict[str, Any], latency: list[dict[str, Any]]
) -> str:
    e = mode["epochs"]
    control = results["control"]
    flag = "" if mode_name == "full" else f" --{mode_name}"
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    steps = f"; at most {mode['max_steps']} steps per stage" if mode["max_steps"] else ""
    lines = [
        f"# ABP on CIFAR-10 JPEG ({mode_name} mode)",
        "",
        f"Generated by `python benchmarks/abp_cifar.py{flag}` on {platform.machine()} / {device}.",
        f"Model {mode['model']} from the shared JPEG baseline; training images: {mode['limit'] or 'all'};",
        f"every trained arm gets {sum(e)} epochs (ABP: {e[0]} gated + {e[1]} pruning + {e[2]} fine-tune;",
        f"L1 and control: {sum(e)} fine-tune), every fine-tune distils from the original{steps}.",
        "",
        "| arm | top-1 % | vs control (pt) | MFLOPs (MACs) | FLOPs reduction | params | removed blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    base_flops = results["original"]["flops"]
    for arm, r in results.items():
        lines.append(
            f"| {arm} | {r['top1']:.2f} | {r['top1'] - control['top1']:+.2f} | {r['flops'] / 1e6:.1f} | "
            f"{1 - r['flops'] / base_flops:.1%} | {r['params']:,} | {len(r.get('removed_blocks', []))} |"
        )
    lines += [
        "",
        "onnxruntime CPU latency, 1 thread, interleaved medians (ratio < 1: candidate faster):",
        "",
        "| baseline | candidate | batch | baseline ms | candidate ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in latency:
        times = f"{r['baseline_ms']:.3f} | {r['candidate_ms']:.3f}"
        lines.append(f"| {r['baseline']} | {r['candidate']} | {r['batch']} | {times} | {r['ratio']:.3f} |")
    verdicts = []
    for t in mode["targets"]:
        rs = [r for r in latency if r["baseline"] == f"l1-{t}" and r["candidate"] == f"abp-{t}"]
        faster = all(r["ratio"] < 1 for r in rs)
        ratios = ", ".join(f"{r['ratio']:.3f} @ batch {r['batch']}" for r in rs)
        verdict = "faster" if faster else "not faster"
        verdicts.append(f"- target {t:g}: ABP's export is {verdict} than L1's at equal FLOPs ({ratios}).")
    for t in mode["targets"]:
        gap = results[f"abp-{t}"]["top1"] - control["top1"]
        l1_gap = results[f"l1-{t}"]["top1"] - control["top1"]
        aim = "within" if gap >= -0.3 else "short of"
        verdicts.append(
            f"- target {t:g}: ABP is {gap:+.2f} pt from the unpruned control ({aim} the 0.3 pt aim); "
            f"L1 at the same FLOPs is {l1_gap:+.2f} pt."
        )
    lines += ["", *verdicts, ""]
    return "\n".join(lines)


@click.command()
@click.option("--quick", "mode_name", flag_value="quick", help="ResNet-20, short (< 30 min on 2 CPU cores).")
@click.option("--smoke", "mode_name", flag_value="smoke", help="Seconds: a few images and steps (CI).")
@click.option(
    "--full", "mode_name", flag_value="full", default=True, help="ResNet-56 at -40% and -60% FLOPs."
)
@click.option("--epochs", default=None, help="Per-stage epochs e1,e2,e3 (overrides the mode's).")
@click.option(
    "--runs", type=click.Path(path_type=Path), default=ROOT / "runs" / "abp_cifar", show_default=True
)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results", show_default=True)
def main(mode_name: str, epochs: str | None, runs: Path, out: Path) -> None:
    mode = dict(MODES[mode_name])
    if epochs:
        mode["epochs"] = tuple(int(e) for e in epochs.split(","))
    runs = runs / mode_name
    data = load_data(f"cifar10:{shared.cifar10_jpeg_zip()}", limit=mode["limit"])
    cfg = TrainConfig(epochs=1, max_steps=mode["max_steps"], verbose=mode_name != "smoke",
                      batch_size=128 if mode["limit"] is None or mode["limit"] >= 1000 else 16)  # fmt: skip
    arms = ["original", "control"] + [f"{m}-{t}" for t in mode["targets"] for m in ("abp", "l1")]
    results: dict[str, Any] = {}
    for arm in arms:
        path = runs / f"{arm}.json"
        if path.is_file():
            results[arm] = json.loads(path.read_text())
            click.echo(f"{arm}: done before, skipped ({path})")
            continue
        click.echo(f"{arm}: running")
        results[arm] = run_arm(arm, mode, data, cfg, runs / arm, results)
        write_text(path, json.dumps(results[arm], indent=1) + "\n")
    latency = latency_rows(results, runs, mode["targets"], mode["rounds"], mode["control_latency"])
    summary = {
        "mode": mode_name,
        "config": {k: v for k, v in mode.items()},
        "arms": results,
        "latency": latency,
    }
    write_text(out / f"abp_cifar_{mode_name}.json", json.dumps(summary, indent=1) + "\n")
    page = markdown(mode_name, mode, results, latency)
    write_text(out / f"abp_cifar_{mode_name}.md", page)
    click.echo(page)


if __name__ == "__main__":
    main()

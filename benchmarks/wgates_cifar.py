"""W-Gates and ABP+W-Gates vs L1 channel pruning at 50% FLOPs vs the unpruned control, same total epochs.

    python benchmarks/wgates_cifar.py --smoke     # seconds: tiny data, 2 steps per stage (CI)
    python benchmarks/wgates_cifar.py --quick     # ResNet-20, 10k training images, 4 epochs per arm
    python benchmarks/wgates_cifar.py             # ResNet-56, all images, 20 epochs per arm

Each arm stores its JSON under `--runs/<mode>/` when done and is skipped on a re-run; an interrupted
arm resumes inside its training stage. CUDA is used when present. Writes
docs/results/wgates_cifar_<mode>.{json,md} (`--out` elsewhere). Every arm trains for the same total
epochs and every fine-tune distils from the original. Arms: `wgates-<t>` (gate stage, then fine-tune),
`abp+wgates-<t>` (ABP stages 1 and 2, gate stage, fine-tune), `l1-<t>` (L1 channels to target t,
fine-tune for all epochs), `control` (unpruned, all epochs). In quick and full mode `wgates-lat-<r>`
gates toward a latency ratio r (onnxruntime, 1 thread) and records the measured latency against its
target. Latency columns: onnxruntime CPU, 1 thread, batch 1, interleaved with the control
(graphprune.latency.paired_latency).
"""

from __future__ import annotations

import copy
import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch
from gp_arms import jpeg_baseline

import graphprune as gp
from graphprune import shared
from graphprune.export import export_onnx
from graphprune.fileio import write_text
from graphprune.latency import paired_latency
from graphprune.methods import Budget, MethodContext, get_method
from graphprune.train import TrainConfig, evaluate, fit, load_data

ROOT = Path(__file__).resolve().parents[1]

# epochs: (abp stage 1, abp stage 2, gate stage, fine-tune); every arm trains sum(epochs) in total
MODES: dict[str, dict[str, Any]] = {
    "full": {"model": "cifar_resnet56", "target": 0.5, "epochs": (4, 4, 4, 8), "limit": None,
             "max_steps": None, "rounds": 9, "latency_ratio": 0.6},
    "quick": {"model": "cifar_resnet20", "target": 0.5, "epochs": (1, 1, 1, 1), "limit": 10000,
              "max_steps": None, "rounds": 7, "latency_ratio": 0.6},
    "smoke": {"model": "cifar_resnet20", "target": 0.5, "epochs": (1, 1, 1, 1), "limit": 64,
              "max_steps": 2, "rounds": 1, "latency_ratio": None},
}  # fmt: skip


def _measure(
    model: torch.nn.Module, data: Any, x: torch.Tensor, onnx: Path, cfg: TrainConfig
) -> dict[str, Any]:
    model = model.cpu().eval()
    export_onnx(model, x, onnx)
    test = evaluate(model, data, "test", batch_size=cfg.eval_batch_size)
    return {"top1": test.top1, "flops": int(gp.count_flops(model, x)), "params": int(gp.count_params(model))}


def run_arm(arm: str, mode: dict[str, Any], data: Any, cfg: TrainConfig, run: Path) -> dict[str, Any]:
    original = jpeg_baseline(mode["model"])
    x = torch.randn(1, *data.input_shape)
    pg = gp.trace(original, x)
    e1, e2, eg, eft = mode["epochs"]
    total = e1 + e2 + eg + eft
    run.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"arm": arm, "epochs": total}
    if arm == "original":
        return {**record, "epochs": 0, **_measure(original, data, x, run / "model.onnx", cfg)}
    if arm == "control":
        model = copy.deepcopy(original)
        fit(
            model,
            data,
            replace(cfg, epochs=total),
            teacher=original,
            run_dir=run,
            stage="finetune",
            resume=True,
        )
        return {**record, **_measure(model, data, x, run / "model.onnx", cfg)}
    method, _, target = arm.rpartition("-")
    if method == "l1":
        plan = gp.criteria.plan_by_criterion(pg, "l1", target_flops=float(target), scope="global", round_to=1)
        start, ft_epochs = original, total
    else:
        name = "abp+wgates" if method == "abp+wgates" else "wgates"
        if method == "wgates-lat":
            budget, epochs, ft_epochs = Budget(target_latency_ratio=float(target)), [e1 + e2 + eg], eft
        elif method == "wgates":
            budget, epochs, ft_epochs = Budget(target_flops=float(target)), [e1 + e2 + eg], eft
        else:
            budget, epochs, ft_epochs = Budget(target_flops=float(target)), [e1, e2, eg], eft
        ctx = MethodContext(
            model=original, example_inputs=(x,), pg=pg, budget=budget, data=data, train_cfg=cfg,
            teacher=original, run_dir=run, resume=True,
            options={"epochs": epochs, "latency_cache": str(run.parent / "latency_cache")},
        )  # fmt: skip
        res = get_method(name)(ctx)
        plan, start = res.plan, res.model
        record["method_report"] = {
            k: v for k, v in res.report.items() if isinstance(v, (int, float, str, list))
        }
    slim = gp.apply(gp.trace(start, x), plan)
    fit(
        slim,
        data,
        replace(cfg, epochs=ft_epochs),
        teacher=original,
        run_dir=run,
        stage="finetune",
        resume=True,
    )
    record["removed_blocks"] = list(plan.blocks)
    return {**record, **_measure(slim, data, x, run / "model.onnx", cfg)}


def markdown(mode_name: str, mode: dict[str, Any], results: dict[str, Any]) -> str:
    e = mode["epochs"]
    control = results["control"]
    flag = "" if mode_name == "full" else f" --{mode_name}"
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    steps = f"; at most {mode['max_steps']} steps per stage" if mode["max_steps"] else ""
    lines = [
        f"# W-Gates on CIFAR-10 JPEG ({mode_name} mode)",
        "",
        f"Generated by `python benchmarks/wgates_cifar.py{flag}` on {platform.machine()} / {device}.",
        f"Model {mode['model']} from the shared JPEG baseline; training images: {mode['limit'] or 'all'};",
        f"every trained arm gets {sum(e)} epochs (abp+wgates: {e[0]} + {e[1]} ABP + {e[2]} gates + {e[3]}",
        f"fine-tune; wgates: {e[0] + e[1] + e[2]} gates + {e[3]} fine-tune; L1 and control: {sum(e)}",
        "fine-tune),",
        f"every fine-tune distils from the original{steps}.",
        "",
        "| arm | top-1 % | vs control (pt) | MFLOPs (MACs) | FLOPs kept | params | removed blocks "
        "| latency vs control (batch 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = results["original"]["flops"]
    for arm, r in results.items():
        lat = f"{r['latency_ratio']:.3f}" if "latency_ratio" in r else "-"
        lines.append(
            f"| {arm} | {r['top1']:.2f} | {r['top1'] - control['top1']:+.2f} | {r['flops'] / 1e6:.1f} | "
            f"{r['flops'] / base:.3f} | {r['params']:,} | {len(r.get('removed_blocks', []))} | {lat} |"
        )
    lat_arms = [r for a, r in results.items() if a.startswith("wgates-lat-")]
    for r in lat_arms:
        m = r["method_report"]
        lines += [
            "",
            f"Latency budget ({r['arm']}): target {m['budget']}; measured after repair "
            f"{m['measured_cost']:.3f} ms ({m['measured_cost'] / m['budget_target']:.3f} of the target).",
        ]
    lines.append("")
    return "\n".join(lines)


@click.command()
@click.option("--quick", "mode_name", flag_value="quick", help="ResNet-20, short.")
@click.option("--smoke", "mode_name", flag_value="smoke", help="Seconds: a few images and steps (CI).")
@click.option("--full", "mode_name", flag_value="full", default=True, help="ResNet-56 at 50% FLOPs.")
@click.option(
    "--runs", type=click.Path(path_type=Path), default=ROOT / "runs" / "wgates_cifar", show_default=True
)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results", show_default=True)
def main(mode_name: str, runs: Path, out: Path) -> None:
    mode = dict(MODES[mode_name])
    runs = runs / mode_name
    data = load_data(f"cifar10:{shared.cifar10_jpeg_zip()}", limit=mode["limit"])
    cfg = TrainConfig(epochs=1, max_steps=mode["max_steps"], verbose=mode_name != "smoke",
                      batch_size=128 if mode["limit"] is None or mode["limit"] >= 1000 else 16)  # fmt: skip
    t = mode["target"]
    arms = ["original", "control", f"wgates-{t}", f"abp+wgates-{t}", f"l1-{t}"]
    if mode["latency_ratio"]:
        arms.append(f"wgates-lat-{mode['latency_ratio']}")
    results: dict[str, Any] = {}
    for arm in arms:
        path = runs / f"{arm}.json"
        if path.is_file():
            results[arm] = json.loads(path.read_text())
            click.echo(f"{arm}: done before, skipped ({path})")
            continue
        click.echo(f"{arm}: running")
        results[arm] = run_arm(arm, mode, data, cfg, runs / arm)
        if arm not in ("original", "control"):
            lat = paired_latency(runs / "control" / "model.onnx", runs / arm / "model.onnx", (1, 3, 32, 32),
                                 rounds=mode["rounds"])  # fmt: skip
            results[arm]["latency_ratio"] = lat["ratio"]
        write_text(path, json.dumps(results[arm], indent=1) + "\n")
    summary = {"mode": mode_name, "config": dict(mode), "arms": results}
    write_text(out / f"wgates_cifar_{mode_name}.json", json.dumps(summary, indent=1) + "\n")
    page = markdown(mode_name, mode, results)
    write_text(out / f"wgates_cifar_{mode_name}.md", page)
    click.echo(page)


if __name__ == "__main__":
    main()

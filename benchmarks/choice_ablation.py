"""Which part of a learned method earns its place: its choice of channels, or the weights it trains.

    python benchmarks/choice_ablation.py                  # ResNet-20 at -60%, the standard gate stage
    python benchmarks/choice_ablation.py --smoke --out D  # a few images and steps (CI)
    python benchmarks/choice_ablation.py --model graphprune:cifar_resnet56 --arm l1 --arm l1-stream

Every arm's plan is applied to the *original* weights, so only the choice differs; the fast number
(validation top-1 right after pruning, raw and after BatchNorm recalibration on 1,024 training images)
then scores the choice alone. For the learned arms the same plan on the method's own trained weights is
shown beside it: the difference is what the method's training stage bought, not its choice.

Arms: `l1` (data-free, global), `l1-stream` (the same with the residual streams left whole, as
Torch-Pruning must leave the option-A ones), `wgates-prior` (W-Gates read off its untrained gates: the
filter-norm prior), `wgates` (gates trained for `--gate-steps`, the standard mode's gate stage). The
validation split is the seeded 5,000-image split held out from the training images, as in the accuracy
suite; the test split is not used. Writes choice_ablation.{json,md} under --out (docs/results by
default; for another --model, choice_ablation_<model>.{json,md}).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import run_meta
import torch

import graphprune as gp
from graphprune import shared
from graphprune.fileio import write_text
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "graphprune:cifar_resnet20": "cifar10jpeg_resnet20.th",
    "graphprune:cifar_resnet56": "cifar10jpeg_resnet56.th",
}
ARMS = ("l1", "l1-stream", "wgates-prior", "wgates")


def output_stem(model: str) -> str:
    """choice_ablation for ResNet-20 (the first one run), choice_ablation_<model> for the others."""
    return (
        "choice_ablation"
        if model == "graphprune:cifar_resnet20"
        else f"choice_ablation_{model.split(':')[-1]}"
    )


def fast_number(model: torch.nn.Module, data: Any, recal_images: int, seed: int) -> tuple[float, float]:
    """Validation top-1 raw and after BatchNorm recalibration (on a copy)."""
    from graphprune.train import evaluate, recalibrate_bn

    model = copy.deepcopy(model).cpu().eval()
    raw = evaluate(model, data, "val").top1
    recalibrate_bn(model, data, images=recal_images, seed=seed)
    return raw, evaluate(model, data, "val").top1


def run(
    model: str, arms: tuple[str, ...], keep: float, gate_steps: int, limit: int | None, val_images: int,
    recal: int, seed: int,
) -> dict:  # fmt: skip
    from graphprune.methods import Budget, MethodContext, get_method
    from graphprune.train import TrainConfig, load_data

    data = load_data("cifar10:", limit=limit, val_split=val_images, val_seed=0)
    resolved = resolve_model(model)
    original = load_weights(resolved.model, shared.weights_file(MODELS[model])).eval()
    x = resolved.example_inputs
    pg = gp.trace(original, x)
    base = gp.count_flops(original, x)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.02, seed=seed, threads=torch.get_num_threads(),
                      eval_every_epoch=False, verbose=False)  # fmt: skip
    rows = []
    plans: dict[str, tuple[gp.PruningPlan, torch.nn.Module | None]] = {}
    if "l1" in arms:
        plans["l1"] = (gp.criteria.plan_by_criterion(pg, "l1", keep, "global"), None)
    if "l1-stream" in arms:  # the residual streams left whole, as Torch-Pruning must leave option-A ones
        streams = [g.id for g in pg.prunable_groups if g.is_residual_stream]
        plans["l1-stream"] = (
            gp.criteria.plan_by_criterion(pg, "l1", keep, "global", keep_whole=streams),
            None,
        )
    per_epoch = max(1, len(data.train) // cfg.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        for arm, steps in (("wgates-prior", 0), ("wgates", gate_steps)):
            if arm not in arms:
                continue
            epochs = max(1, -(-steps // per_epoch)) if steps else 0
            ctx = MethodContext(
                model=original, example_inputs=x, pg=pg, budget=Budget(target_flops=keep), data=data,
                train_cfg=cfg, teacher=original, run_dir=Path(tmp) / arm,
                options={"epochs": [epochs], "stage_steps": [steps]} if steps else {"epochs": [0]},
            )  # fmt: skip
            res = get_method("wgates")(ctx)
            plans[arm] = (res.plan, res.model if steps else None)
    for arm, (plan, trained) in plans.items():
        start = time.perf_counter()
        slim = gp.apply(gp.trace(original, x), plan)
        raw, recal_top1 = fast_number(slim, data, recal, seed)
        row: dict[str, Any] = {
            "arm": arm, "flops_ratio": gp.count_flops(slim, x) / base,
            "kept": {gid: pg.group(gid).size - len(idx) for gid, idx in sorted(plan.channels.items())},
            "original_weights_raw": raw, "original_weights_bnrecal": recal_top1,
        }  # fmt: skip
        if trained is not None:
            own = gp.apply(gp.trace(trained, x), plan)
            row["own_weights_raw"], row["own_weights_bnrecal"] = fast_number(own, data, recal, seed)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        click.echo(
            f"{arm}: {row['flops_ratio']:.3f} of the FLOPs, val {raw:.2f} raw / {recal_top1:.2f} recal"
        )
    return {"model": model, "weights": MODELS[model], "keep": keep, "gate_steps": gate_steps, "seed": seed,
            "val_images": val_images, "recal_images": recal, "rows": rows}  # fmt: skip


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# Which part of W-Gates earns its place: the choice or the trained weights",
        "",
        f"Command: `{meta['command']}` on {meta['date']}; {meta['machine']['cpu']}, "
        f"{meta['machine']['cores']} cores, load average at start {meta['load_average']}.",
        "",
        f"{data['model']} from `{data['weights']}` at {data['keep']:.2f} of the FLOPs, seed {data['seed']}. "
        "Each plan is applied to the original weights, so only the choice of channels differs. Validation "
        f"top-1 on the {data['val_images']} held-out training images, raw and after BatchNorm "
        f"recalibration on {data['recal_images']} training images. `wgates` trained its gates (and the "
        f"backbone) for {data['gate_steps']} steps; its plan on its own trained weights is shown beside.",
        "",
        "| arm | FLOPs kept | original weights: raw | original weights: BN-recal | own weights: raw "
        "| own weights: BN-recal |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        own = (
            f"{r['own_weights_raw']:.2f} | {r['own_weights_bnrecal']:.2f}"
            if "own_weights_raw" in r
            else "— | —"
        )
        lines.append(
            f"| {r['arm']} | {r['flops_ratio']:.3f} | {r['original_weights_raw']:.2f} | "
            f"{r['original_weights_bnrecal']:.2f} | {own} |"
        )
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--smoke", is_flag=True, help="A few images and steps (CI).")
@click.option("--keep", type=float, default=0.4, show_default=True, help="FLOPs kept (0.4 = -60%).")
@click.option("--gate-steps", type=int, default=526, show_default=True,
              help="W-Gates' gate stage (526 = the standard mode's 25% of 2,106 steps).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option(
    "--model", type=click.Choice(sorted(MODELS)), default="graphprune:cifar_resnet20", show_default=True
)
@click.option("--arm", "arms", multiple=True, type=click.Choice(ARMS), help="Only these arms (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
def main(
    smoke: bool, keep: float, gate_steps: int, seed: int, threads: int, model: str, arms: tuple[str, ...],
    out: Path,
) -> None:  # fmt: skip
    """Score each arm's choice of channels on the original weights; write choice_ablation*.{json,md}."""
    torch.set_num_threads(threads)
    arms = arms or ARMS
    if smoke:
        result = run(model, arms, keep, 2, limit=300, val_images=100, recal=64, seed=seed)
    else:
        result = run(model, arms, keep, gate_steps, limit=None, val_images=5000, recal=1024, seed=seed)
    data = {"meta": run_meta.describe_run("smoke" if smoke else "full"), **result}
    out.mkdir(parents=True, exist_ok=True)
    stem = output_stem(model)
    write_text(out / f"{stem}.json", json.dumps(data, indent=1) + "\n")
    write_text(out / f"{stem}.md", markdown(data))
    click.echo(markdown(data))


if __name__ == "__main__":
    main()

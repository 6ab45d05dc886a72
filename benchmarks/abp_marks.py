"""Do ABP's marks follow the input, and does the vote choose better blocks than the mean mark?

    python benchmarks/abp_marks.py                  # ResNet-20 at -60%, the standard mode's stage 1
    python benchmarks/abp_marks.py --smoke --out D  # a few images and steps (CI)

For each gate variant (`plain`: the default gate; `norm`: a BatchNorm on its hidden layer, the
`gate_norm` option) ABP's stage 1 trains gates and backbone for `--steps` steps. On that one gated
network the calibration marks give each block's per-sample spread, and three rankings each choose the
blocks that meet the budget: the paper's vote, the mean mark, and the measured removal cost (ABP's
default). The fast number scores each choice on the same weights: validation top-1 of the gated network
with the chosen blocks switched off, BatchNorm recalibrated on 1,024 training images. The validation
split is the accuracy suite's seeded 5,000 held-out training images; the test split is not used.
Writes abp_marks.{json,md} under --out (docs/results by default).
"""

from __future__ import annotations

import copy
import json
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
MODEL, WEIGHTS = "graphprune:cifar_resnet20", "cifar10jpeg_resnet20.th"
VARIANTS = {"plain": False, "norm": True}
RANKINGS = ("vote", "mean mark", "measured")


def rankings(
    gated: torch.nn.Module, pg: gp.PrunableGraph, data: Any, budget: Any, abp: Any
) -> dict[str, Any]:
    """Per-sample spread of every block's mark, and each ranking's removal set for the budget."""
    from graphprune.methods.abp.budget import block_shares, removal_for_budget
    from graphprune.methods.abp.schedule import calibration_batches, removal_losses
    from graphprune.methods.abp.voting import calibrate, vote

    names, marks = calibrate(gated, calibration_batches(gated, data, abp))
    mean = dict(zip(names, marks.mean(0).tolist(), strict=True))
    needed = len(removal_for_budget(pg, names, budget).blocks)
    v = vote(names, marks, k=max(1, needed))
    losses = removal_losses(gated, data, names, abp)
    shares = block_shares(pg)
    order = {
        "vote": list(v.ranking),
        "mean mark": sorted(names, key=lambda b: (mean[b], names.index(b))),
        "measured": sorted(names, key=lambda b: (losses[b] / max(shares[b], 1e-12), names.index(b))),
    }
    return {
        "samples": int(marks.shape[0]),
        "blocks": {
            b: {"mean": mean[b], "std": float(s), "votes": int(n)}
            for b, s, n in zip(names, marks.std(0, correction=0), v.votes, strict=True)
        },
        "removed": {k: list(removal_for_budget(pg, r, budget).blocks) for k, r in order.items()},
    }


def fast_number(gated: torch.nn.Module, blocks: list[str], data: Any, recal: int, seed: int) -> float:
    """Validation top-1 of the gated network with `blocks` off, BatchNorm recalibrated (on a copy)."""
    from graphprune.passes.block_gates import forget_marks, gates_of
    from graphprune.train import evaluate, recalibrate_bn

    probe = copy.deepcopy(gated)
    gates = gates_of(probe)
    for b in blocks:
        gates[b].pruned.fill_(True)
    recalibrate_bn(probe, data, images=recal, seed=seed)
    top1 = evaluate(probe.eval(), data, "val").top1
    forget_marks(probe)
    return top1


def run(keep: float, steps: int, limit: int | None, val_images: int, recal: int, seed: int) -> dict:
    from graphprune.methods.abp.budget import BlockBudget
    from graphprune.methods.abp.schedule import AbpConfig, run_abp
    from graphprune.passes.block_gates import forget_marks, gates_of
    from graphprune.train import TrainConfig, load_data

    data = load_data("cifar10:", limit=limit, val_split=val_images, val_seed=0)
    resolved = resolve_model(MODEL)
    original = load_weights(resolved.model, shared.weights_file(WEIGHTS)).eval()
    pg = gp.trace(original, resolved.example_inputs)
    train = TrainConfig(epochs=1, batch_size=128, lr=0.01, seed=seed, threads=torch.get_num_threads(),
                        eval_every_epoch=False, verbose=False)  # fmt: skip
    budget = BlockBudget(target_flops=keep)
    rows = []
    for variant, norm in VARIANTS.items():
        start = time.perf_counter()
        abp = AbpConfig(
            epochs=(1, 0), stage_steps=(steps, 1), gate_norm=norm, measure_images=recal, recal_images=recal
        )
        gated = run_abp(pg, data, train, budget, abp, teacher=original).gated
        for g in gates_of(gated).values():  # stage 1 only: score every choice from the unpruned gated net
            g.pruned.fill_(False)
        forget_marks(gated)
        row: dict[str, Any] = {"variant": variant, **rankings(gated, pg, data, budget, abp)}
        row["fast"] = {k: fast_number(gated, row["removed"][k], data, recal, seed) for k in RANKINGS}
        row["max_std"] = max(b["std"] for b in row["blocks"].values())
        row["split_votes"] = sum(0 < b["votes"] < row["samples"] for b in row["blocks"].values())
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        click.echo(f"{variant}: max std {row['max_std']:.3f}, fast number {row['fast']}")
    return {"model": MODEL, "weights": WEIGHTS, "keep": keep, "steps": steps, "seed": seed,
            "val_images": val_images, "recal_images": recal, "rows": rows}  # fmt: skip


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# ABP's marks: do they follow the input, and does the vote choose better blocks?",
        "",
        f"Command: `{meta['command']}` on {meta['date']}; {meta['machine']['cpu']}, "
        f"{meta['machine']['cores']} cores, load average at start {meta['load_average']}.",
        "",
        f"{data['model']} from `{data['weights']}`, budget {data['keep']:.2f} of the FLOPs, ABP stage 1 for "
        f"{data['steps']} steps, seed {data['seed']}. Per variant, one gated network; every ranking's "
        f"removal set is scored on it: validation top-1 ({data['val_images']} held-out training images) "
        f"with those blocks off, BatchNorm recalibrated on {data['recal_images']} training images.",
        "",
        "| gate | largest per-sample std of a mark | blocks with split votes | "
        + " | ".join(f"{k}: blocks removed | {k}: val top-1" for k in RANKINGS)
        + " |",
        "|---|---:|---:|" + "---|---:|" * len(RANKINGS),
    ]
    for r in data["rows"]:
        cells = " | ".join(f"{', '.join(r['removed'][k])} | {r['fast'][k]:.2f}" for k in RANKINGS)
        lines.append(
            f"| {r['variant']} | {r['max_std']:.3f} | {r['split_votes']} of {len(r['blocks'])} | {cells} |"
        )
    lines += ["", "Per block (mean mark ± per-sample std, votes):", ""]
    for r in data["rows"]:
        blocks = ", ".join(
            f"{b} {s['mean']:.2f} ± {s['std']:.3f} ({s['votes']})" for b, s in r["blocks"].items()
        )
        lines.append(f"- {r['variant']}: {blocks}")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--smoke", is_flag=True, help="A few images and steps (CI).")
@click.option("--keep", type=float, default=0.4, show_default=True, help="FLOPs kept (0.4 = -60%).")
@click.option("--steps", type=int, default=211, show_default=True,
              help="Stage 1's steps (211 = the standard mode's abp+wgates share of 2,106).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
def main(smoke: bool, keep: float, steps: int, seed: int, threads: int, out: Path) -> None:
    """Train ABP's stage 1 with each gate variant; write abp_marks.{json,md}."""
    torch.set_num_threads(threads)
    if smoke:
        result = run(keep, 2, limit=300, val_images=100, recal=64, seed=seed)
    else:
        result = run(keep, steps, limit=None, val_images=5000, recal=1024, seed=seed)
    data = {"meta": run_meta.describe_run("smoke" if smoke else "full"), **result}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "abp_marks.json", json.dumps(data, indent=1) + "\n")
    write_text(out / "abp_marks.md", markdown(data))
    click.echo(markdown(data))


if __name__ == "__main__":
    main()

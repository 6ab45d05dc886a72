"""The accuracy suite's verdicts again, with a validation split that the baselines never saw.

    python benchmarks/clean_split.py                      # standard mode, runs/accuracy-standard
    python benchmarks/clean_split.py --mode quick --work-dir runs/accuracy-quick

The suite's validation split is 5,000 training images, which the shared baselines were trained on, so
validation favours the arms that keep more of the pre-training. Here the test set is split instead, per
class and by a seeded permutation: one half chooses the best arm of each kind (as the suite's validation
does), the other half judges the choice. Nothing is trained; every finished arm is evaluated once, from
its run folder (`--work-dir`):

- `final.onnx` where the arm left one;
- otherwise its architecture rebuilt from the record (arm_latency.rebuild) with the fine-tune's weights
  (`stages/finetune/best.safetensors`) loaded strictly, then exported.

Either way the file's top-1 on the whole test set must equal the record's (within 0.05 points), or the
arm is left out as "does not match its record". Margins on the judging half come with the standard error
of the paired per-image difference. Writes clean_split.{json,md} under --out (docs/results by default).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import accuracy_suite
import accuracy_verdicts
import arm_latency
import click
import run_meta
import torch
from safetensors.torch import load_file

from graphprune import shared
from graphprune.export import export_onnx, ort_session
from graphprune.fileio import write_text
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
MATCH = 0.05
"""Largest |top-1 of the artifact on the whole test set - the record's test_top1| accepted (points)."""
WEIGHTS = Path("stages") / "finetune" / "best.safetensors"


def halves(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Test indices split per class by a seeded permutation: (choosing half, judging half)."""
    gen = torch.Generator().manual_seed(seed)
    choose, judge = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        choose.append(idx[: len(idx) // 2])
        judge.append(idx[len(idx) // 2 :])
    return torch.cat(choose).sort().values, torch.cat(judge).sort().values


def test_set(data: Any, batch_size: int = 500) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split as (images, labels) batches, in file order."""
    return list(data.loader("test", batch_size, shuffle=False, augment=False, drop_last=False))


def correct(path: Path, batches: list[tuple[torch.Tensor, torch.Tensor]], threads: int) -> torch.Tensor:
    """Per test image: does the ONNX file's top-1 class equal the label (bool, file order)."""
    session = ort_session(path, threads=threads)
    name = session.get_inputs()[0].name
    hits = [torch.from_numpy(session.run(None, {name: x.numpy()})[0]).argmax(1) == y for x, y in batches]
    return torch.cat(hits)


def artifact(record: dict[str, Any], work: Path, tmp: Path, original: torch.nn.Module, x: Any) -> Path:
    """The arm's finished model as an ONNX file: its final.onnx, or rebuilt with its fine-tuned weights."""
    folder = accuracy_suite.run_folder(
        work, record["model"], record["arm"], record["reduction"], record["seed"]
    )
    final = folder / accuracy_suite.FINAL_ONNX
    if final.is_file():
        return final
    if record["kind"] not in ("control", "l1"):  # the record lists kept counts, not which channels: the
        # option-A shortcuts' channel maps would differ, so the weights would not fit the function
        raise ValueError(
            f"no {accuracy_suite.FINAL_ONNX}, and the record does not pin which channels it kept"
        )
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no {accuracy_suite.FINAL_ONNX} or {WEIGHTS} in {folder}")
    slim = arm_latency.rebuild(record, original, x)
    slim.load_state_dict(load_file(str(weights)), strict=True)
    path = tmp / f"{record['arm'].replace('+', '_')}-{record['seed']}.onnx"
    export_onnx(slim.eval(), x, path)
    return path


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Top-1 difference a - b in points on the same images, and its standard error."""
    d = a.double() - b.double()
    return 100 * d.mean().item(), 100 * d.std().item() / math.sqrt(len(d))


def cell_verdict(rows: list[dict[str, Any]], hits: dict[str, torch.Tensor], judge: torch.Tensor) -> dict:
    """Best arm of each kind by the choosing half (and, for comparison, by the suite's validation split);
    the learned arm's margins over the best L1 and Torch-Pruning arms on the judging half."""
    out: dict[str, Any] = {}
    for key in ("choose_top1", "val_top1"):
        best = {}
        for kind in accuracy_verdicts.KINDS:
            pool = [r for r in rows if r["kind"] == kind and r.get("budget_met", True)]
            top = max(pool, key=lambda r: r[key], default=None)
            best[kind] = top["arm"] if top else None
        out["best_by_" + key.removesuffix("_top1")] = best
    best = out["best_by_choose"]
    margins = {}
    if best["learned"]:
        for kind in ("l1", "torch_pruning", "control"):
            if best[kind]:
                m, se = paired(hits[best["learned"]][judge], hits[best[kind]][judge])
                margins[kind] = {"rival": best[kind], "margin": m, "se": se}
    out["margins_on_judge"] = margins
    strict = {}  # the strictest reading: each peer kind at its best on the judging half itself
    if best["learned"]:
        for kind in ("l1", "torch_pruning"):
            pool = [r for r in rows if r["kind"] == kind and r.get("budget_met", True)]
            if pool:
                rival = max(pool, key=lambda r: r["judge_top1"])["arm"]
                m, se = paired(hits[best["learned"]][judge], hits[rival][judge])
                strict[kind] = {"rival": rival, "margin": m, "se": se}
    out["margins_against_best_on_judge"] = strict
    out["met"] = (
        all(margins[k]["margin"] >= accuracy_verdicts.MARGIN for k in ("l1", "torch_pruning"))
        if {"l1", "torch_pruning"} <= set(margins)
        else None
    )
    return out


def run(out: Path, work: Path, mode: str, threads: int, seed: int) -> dict[str, Any]:
    from graphprune.train import load_data

    torch.set_num_threads(threads)
    records = [r for r in accuracy_suite.load_records(out, mode) if r.get("status") == "ok"]
    if not records:
        raise click.ClickException(f"no finished arm records under {out / 'accuracy_arms' / mode}")
    data = load_data("cifar10:", val_split=5000, val_seed=0)
    batches = test_set(data)
    labels = torch.cat([y for _, y in batches])
    choose, judge = halves(labels, seed)
    cells: dict[tuple[str, float, int], list[dict[str, Any]]] = defaultdict(list)
    hits: dict[tuple[str, float, int], dict[str, torch.Tensor]] = defaultdict(dict)
    skipped = []
    by_model = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    with tempfile.TemporaryDirectory() as tmp:
        for model, members in sorted(by_model.items()):
            resolved = resolve_model(model)
            original = load_weights(resolved.model, shared.weights_file(members[0]["weights"])).eval()
            x = resolved.example_inputs
            reductions = sorted({r["reduction"] for r in members if r["reduction"] is not None})
            for r in members:
                try:
                    path = artifact(r, work, Path(tmp), original, x)
                    c = correct(path, batches, threads)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    skipped.append(
                        {"arm": r["arm"], "model": model, "seed": r["seed"], "why": str(exc)[:200]}
                    )
                    continue
                full = 100 * c.double().mean().item()
                if abs(full - r["test_top1"]) > MATCH:
                    why = f"test top-1 {full:.2f} from the file, {r['test_top1']:.2f} in the record"
                    skipped.append({"arm": r["arm"], "model": model, "seed": r["seed"], "why": why})
                    continue
                row = {
                    "arm": r["arm"], "kind": r["kind"], "seed": r["seed"], "flops_ratio": r["flops_ratio"],
                    "source": "final.onnx" if path.name == accuracy_suite.FINAL_ONNX else "rebuilt",
                    "test_top1": full, "record_test_top1": r["test_top1"], "val_top1": r["val_top1"],
                    "choose_top1": 100 * c[choose].double().mean().item(),
                    "judge_top1": 100 * c[judge].double().mean().item(),
                }  # fmt: skip
                # the control belongs to every cell of its model
                for t in reductions if r["reduction"] is None else [r["reduction"]]:
                    cap = 1 - t + accuracy_verdicts.BUDGET_SLACK
                    cells[(model, t, r["seed"])].append({**row, "budget_met": row["flops_ratio"] <= cap})
                    hits[(model, t, r["seed"])][r["arm"]] = c
                click.echo(f"{model} {r['arm']} seed {r['seed']}: test {full:.2f}, halves "
                           f"{row['choose_top1']:.2f} / {row['judge_top1']:.2f}")  # fmt: skip
    out_cells: list[dict[str, Any]] = []
    for (model, t, s), rows in sorted(cells.items()):
        if not any(r["kind"] != "control" for r in rows):
            continue
        rows.sort(key=lambda r: r["arm"])
        out_cells.append({"model": model, "reduction": t, "seed": s, "rows": rows,
                          "verdict": cell_verdict(rows, hits[(model, t, s)], judge)})  # fmt: skip
    flat = [r | {"model": c["model"], "reduction": c["reduction"]} for c in out_cells for r in c["rows"]]
    return {
        "meta": run_meta.describe_run(mode),
        "split_seed": seed,
        "choose_images": len(choose),
        "judge_images": len(judge),
        "cells": out_cells,
        "rows": flat,
        "skipped": skipped,
    }


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# The verdicts with a validation split the baselines never saw",
        "",
        f"Command: `{meta['command']}` on {meta['date']}; load average at start {meta.get('load_average')}.",
        "",
        f"The test set split per class by a seeded permutation (seed {data['split_seed']}): "
        f"{data['choose_images']} images choose the best arm of each kind, the other {data['judge_images']} "
        "judge it. The suite's own validation split (5,000 training images the baselines were trained on) is "
        "shown beside. Each arm's file reproduces its record's test top-1 on all 10,000 images (within "
        f"{MATCH} points) or is left out. Margin ± the standard error of the paired per-image difference.",
        "",
    ]
    for c in data["cells"]:
        v = c["verdict"]
        lines += [
            f"## {c['model']} at −{c['reduction']:.0%}, seed {c['seed']}",
            "",
            "| arm | kind | FLOPs kept | suite validation | choosing half | judging half | whole test "
            "| file |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in c["rows"]:
            lines.append(
                f"| {r['arm']} | {r['kind']} | {r['flops_ratio']:.3f} | {r['val_top1']:.2f} | "
                f"{r['choose_top1']:.2f} | {r['judge_top1']:.2f} | {r['test_top1']:.2f} | {r['source']} |"
            )
        lines.append("")
        missing = [k for k in accuracy_verdicts.KINDS if not v["best_by_choose"][k]]
        if v["met"] is None:
            lines.append(f"- Incomplete: no {', '.join(missing)} arm has a file here, so no verdict.")
        elif missing:
            lines.append(f"- No {', '.join(missing)} arm has a file here (the margins do not need it).")
        for key, label in (("best_by_choose", "choosing half"), ("best_by_val", "suite validation")):
            picks = ", ".join(f"{k} {a}" for k, a in v[key].items() if a)
            lines.append(f"- Best of each kind by the {label}: {picks}.")
        for kind, m in v["margins_on_judge"].items():
            lines.append(
                f"- {v['best_by_choose']['learned']} − {m['rival']} ({kind}) on the judging half: "
                f"{m['margin']:+.2f} ± {m['se']:.2f}"
            )
        if v["met"] is not None:
            lines.append(
                f"- Margin target (≥ {accuracy_verdicts.MARGIN} over both L1 and Torch-Pruning, each chosen "
                "on the choosing half): " + ("met" if v["met"] else "**not met**")
            )
        for kind, m in v.get("margins_against_best_on_judge", {}).items():
            lines.append(
                f"- Strictest reading, against the {kind} arm best on the judging half itself "
                f"({m['rival']}): {m['margin']:+.2f} ± {m['se']:.2f}"
            )
        lines.append("")
    if data["skipped"]:
        lines += ["## Left out", ""]
        lines += [f"- {s['model']} {s['arm']} seed {s['seed']}: {s['why']}" for s in data["skipped"]]
        lines.append("")
    return "\n".join(lines)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--mode", type=click.Choice(["standard", "quick"]), default="standard", show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The suite's run folders (default: runs/accuracy-<mode>).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=ROOT / "docs" / "results")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the per-class split.")
def main(mode: str, work_dir: Path | None, out: Path, threads: int, split_seed: int) -> None:
    data = run(out, work_dir or Path("runs") / f"accuracy-{mode}", mode, threads, split_seed)
    name = "clean_split" if mode == "standard" else f"clean_split_{mode}"
    write_text(out / f"{name}.json", json.dumps(data, indent=1) + "\n")
    write_text(out / f"{name}.md", markdown(data))
    click.echo(
        f"wrote {out / name}.json and .md ({len(data['cells'])} cells, {len(data['skipped'])} left out)"
    )


if __name__ == "__main__":
    main()

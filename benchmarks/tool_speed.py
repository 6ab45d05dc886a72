"""Tool speed: graphprune's trace + plan + apply against Torch-Pruning's build + step, at the same FLOPs.

    python benchmarks/tool_speed.py            # 10 torchvision models, 3 interleaved rounds (~30 min here)
    python benchmarks/tool_speed.py --smoke --out DIR  # resnet18 at 64x64, 1 round, no memory (CI)

Per model and round, in one process, alternating which tool goes first:
- Torch-Pruning 1.6, set up as its README says: `MagnitudeImportance(p=1)`, the classifier ignored, the
  same example input; timed: `MagnitudePruner(...)` (its `DependencyGraph().build_dependency` and the
  forward inside it) plus `pruner.step()` on a fresh copy of the model (the copy is not timed).
- graphprune, at the FLOPs Torch-Pruning reached: `gp.trace` + `plan_by_criterion("l1")` + `gp.apply`,
  timed once without verification (analysis + apply) and once with it (the default path).
Each timed call starts after a full collection (not timed). Times are medians over rounds
(pytest-benchmark's timer); ratios are graphprune / Torch-Pruning from the same run. Also timed: the two
forwards of the default verification alone (the floor of its cost). Peak memory is the growth of the
process's peak RSS over a run of each tool alone, in a fresh subprocess. Graph size is fx nodes x channels
(the sum of every channel group's size).
Writes docs/results/tool_speed.{json,md,png}.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import torch
from pytest_benchmark.timers import default_timer

import graphprune as gp
from graphprune.criteria import plan_by_criterion
from graphprune.errors import first_line
from graphprune.fileio import atomic_path, write_text
from graphprune.passes.verify import FRESH_INPUTS, QUICK_PART_RTOL, with_fresh
from graphprune.rewrite import masked_reference
from graphprune.torchvision_compat import import_torchvision

ROOT = Path(__file__).resolve().parents[1]
MODELS = [
    "resnet18",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet201",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_16gf",
    "vit_b_16",
]
TP_RATIO = 0.3  # Torch-Pruning's per-layer pruning ratio; graphprune then targets the FLOPs it reached
BROKEN_TP_TARGET = 0.6  # graphprune's FLOPs target where Torch-Pruning's pruned model does not run


def build(name: str, size: int = 224) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = import_torchvision().models.get_model(name, weights=None).eval()
    return model, torch.randn(1, 3, size, size)


def classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The last Linear: Torch-Pruning's README leaves the classifier out."""
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def run_tp(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Torch-Pruning's documented MagnitudePruner, built and stepped once; prunes `model` in place."""
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=TP_RATIO,
        ignored_layers=[classifier(model)],
    )
    pruner.step()
    return model


def run_gp(model: torch.nn.Module, x: torch.Tensor, target: float, verify: bool) -> torch.nn.Module:
    """graphprune's default path: trace, L1 plan at the target FLOPs, apply."""
    pg = gp.trace(model, x)
    plan = plan_by_criterion(pg, "l1", target)
    return gp.apply(pg, plan, verify=verify)


def timed(fn: Any) -> tuple[float, Any]:
    """Seconds `fn()` takes, from a settled heap: a full collection before (not timed), so that the one a
    previous call left due (0.2 s here with torch and torchvision loaded) lands on neither tool."""
    gc.collect()
    start = default_timer()
    out = fn()
    return default_timer() - start, out


def measure(name: str, rounds: int, size: int = 224) -> dict[str, Any]:
    """Interleaved timings of both tools on one model, and its graph size."""
    model, x = build(name, size)
    tp_model = run_tp(copy.deepcopy(model), x)
    tp_broken = None
    try:
        target = gp.count_flops(tp_model, x) / gp.count_flops(model, x)
    except gp.GraphpruneError as exc:  # its time still counts; graphprune then aims at a fixed target
        tp_broken, target = first_line(exc), BROKEN_TP_TARGET
    pg = gp.trace(model, x)
    forwards = verification_forwards(pg, target)
    times: dict[str, list[float]] = {"tp": [], "gp": [], "gp_verify": [], "forwards": []}
    runs = {
        "tp": lambda fresh: run_tp(fresh, x),
        "gp": lambda _: run_gp(model, x, target, verify=False),
        "gp_verify": lambda _: run_gp(model, x, target, verify=True),
        "forwards": lambda _: forwards(),
    }
    for r in range(rounds):
        order = ["tp", "gp", "gp_verify", "forwards"] if r % 2 == 0 else ["forwards", "gp_verify", "gp", "tp"]
        for tool in order:
            fresh = copy.deepcopy(model) if tool == "tp" else None  # TP prunes in place; not timed
            seconds, made = timed(lambda run=runs[tool], m=fresh: run(m))
            times[tool].append(seconds)
            if tool == "gp_verify":
                slim = made
    med = {k: statistics.median(v) for k, v in times.items()}
    channels = sum(g.size for g in pg.groups)
    return {
        "model": name,
        "nodes": len(pg.gm.graph.nodes),
        "channels": channels,
        "graph_size": len(pg.gm.graph.nodes) * channels,
        "flops": pg.flops,
        "tp_flops": None if tp_broken else int(target * pg.flops),
        "tp_broken": tp_broken,
        "target": target,
        "gp_flops": gp.count_flops(slim, x),
        "rounds": rounds,
        "seconds": times,
        "median_s": med,
        "ratio_analysis_apply": med["gp"] / med["tp"],
        "ratio_with_verify": med["gp_verify"] / med["tp"],
        "ratio_forwards": med["forwards"] / med["tp"],
    }


def verification_forwards(pg: gp.PrunableGraph, target: float) -> Any:
    """The two real forwards the default verification runs, alone: the masked reference and the pruned
    model on the batch `Verify` runs (the floor of its cost)."""
    plan = plan_by_criterion(pg, "l1", target)
    slim, ref = gp.apply(pg, plan, verify=False), masked_reference(pg, plan)
    joined = with_fresh(pg.example_inputs)

    def run() -> None:
        with torch.no_grad():
            ref(*joined), slim(*joined)

    return run


def peak_rss_mb(name: str, tool: str, target: float) -> float:
    """Peak RSS (MiB) of a fresh process that builds `name` and runs `tool` once (at `target` FLOPs).

    Absolute, not growth: building the model can peak higher than pruning it, which made growth 0. Read
    from VmHWM, which belongs to the process's own memory map: Linux carries `ru_maxrss` across fork and
    exec, so there it would be at least this (large) benchmark process's size.
    """
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import benchmarks.tool_speed as b;"
        "m, x = b.build(sys.argv[2]);"
        "b.run_tp(m, x) if sys.argv[3] == 'tp' else b.run_gp(m, x, float(sys.argv[4]), True);"
        "hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:'));"
        "print(int(hwm.split()[1]) / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), name, tool, repr(target)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def environment() -> dict[str, str]:
    import torch_pruning as tp

    tv = import_torchvision()
    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{resource.getpagesize()}-byte pages, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": tv.__version__,
        "torch_pruning": tp.__version__,
        "graphprune": gp.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = sorted((r for r in results if "error" not in r), key=lambda r: r["graph_size"])
    sizes = [r["graph_size"] for r in rows]
    for key, label in (("tp", "Torch-Pruning build + step"), ("gp", "graphprune trace + plan + apply")):
        ax.plot(sizes, [r["median_s"][key] for r in rows], "o-", label=label)
    ax.plot(sizes, [r["median_s"]["gp_verify"] for r in rows], "s--", label="graphprune, verified apply")
    for r in rows:
        ax.annotate(r["model"], (r["graph_size"], r["median_s"]["gp"]), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="graph size (fx nodes x channels)", ylabel="seconds (median)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def load_note(results: list[dict[str, Any]]) -> list[str]:
    """The machine's 1-minute load average when each model's measurement began, as recorded."""
    loads = [r["load_average"][0] for r in results if "load_average" in r]
    if not loads:
        return ["- The load average was not recorded in this run."]
    return [
        f"- Load average (1 min) at the start of each model: {min(loads):.2f} to {max(loads):.2f}. "
        "Absolute times follow the load; the ratios come from the same process with the tools interleaved.",
    ]


def markdown(results: list[dict[str, Any]], env: dict[str, str], command: str) -> str:
    lines = [
        "# Tool speed: graphprune vs Torch-Pruning",
        "",
        f"Generated by `{command}` (do not edit by hand) on {env['date']}.",
        f"Machine: {env['machine']}. Python {env['python']}, torch {env['torch']}, torchvision "
        f"{env['torchvision']}, Torch-Pruning {env['torch_pruning']}, graphprune {env['graphprune']}.",
        "",
        "Torch-Pruning: `MagnitudePruner` (its dependency graph build, forward included) + `step()`,",
        f"pruning ratio {TP_RATIO}, classifier ignored. graphprune: `trace` + L1 `plan_by_criterion` at the",
        "FLOPs Torch-Pruning reached + `apply`, without and with verification. Input 1x3x224x224, random",
        "weights. Medians of interleaved rounds in one run; ratio = graphprune / Torch-Pruning (< 1 faster).",
        "Each timed call starts after a full garbage collection (not timed): none pays for an earlier one.",
        "Peak memory: peak RSS of a fresh process building the model and running one tool once.",
        "",
        "| model | nodes x channels | TP (s) | gp (s) | gp verified (s) | gp / TP | gp verified / TP |"
        " its 2 forwards / TP | GMACs after TP / gp | peak MiB TP / gp |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | not measured: {r['error'].splitlines()[0]} |" + " |" * 8)
            continue
        m = r["median_s"]
        lines.append(
            f"| {r['model']} | {r['nodes']} x {r['channels']} | {m['tp']:.2f} | {m['gp']:.2f} | "
            f"{m['gp_verify']:.2f} | {r['ratio_analysis_apply']:.2f} | {r['ratio_with_verify']:.2f} | "
            f"{format(r['ratio_forwards'], '.2f') if 'ratio_forwards' in r else 'n/a'} | "
            f"{'does not run' if r.get('tp_broken') else format(r['tp_flops'] / 1e9, '.2f')} / "
            f"{r['gp_flops'] / 1e9:.2f} | "
            f"{r.get('peak_mb_tp', float('nan')):.0f} / {r.get('peak_mb_gp', float('nan')):.0f} |"
        )
    results = [r for r in results if "error" not in r]
    slower = [r["model"] for r in results if r["ratio_with_verify"] > 1.0]
    lost = [r["model"] for r in results if r["ratio_analysis_apply"] > 0.5]
    lines += [
        "",
        "## Notes",
        "",
        f"- Analysis + apply above 0.5x Torch-Pruning: {', '.join(lost) or 'none'}.",
        *[
            f"- {r['model']}: Torch-Pruning's pruned model does not run ({r['tp_broken']}); its build + step"
            f" is still timed, and graphprune aims at {BROKEN_TP_TARGET} of the FLOPs."
            for r in results
            if r.get("tp_broken")
        ],
        f"- Verified path slower than Torch-Pruning: {', '.join(slower) or 'none'}.",
        "  Verification runs two real forwards (the masked original and the pruned model) where",
        "  Torch-Pruning runs one, and the analysis itself none (values are recorded on the meta device).",
        f"  Both run on the example batch plus {FRESH_INPUTS} fresh input(s), in the model's own dtype",
        f"  (float32); only where a part misses {QUICK_PART_RTOL:g} is the check repeated in float64.",
        "  'its 2 forwards' times those two forwards alone (models built beforehand): the floor of the",
        "  verified path's cost, which the analysis and the rewrite then add to.",
        *(
            [
                "- Where the two forwards alone take longer than Torch-Pruning's whole run: "
                + ", ".join(r["model"] for r in results if r.get("ratio_forwards", 0) > 1.0)
                + "."
            ]
            if any(r.get("ratio_forwards", 0) > 1.0 for r in results)
            else []
        ),
        *(
            [
                "- Peak memory of this run is not usable: it was measured as growth over the model build's",
                "  own peak, which was higher (0 everywhere). The script now records the absolute peak.",
            ]
            if all(r.get("peak_mb_tp") == 0 and r.get("peak_mb_gp") == 0 for r in results)
            else []
        ),
        *load_note(results),
        "",
        "![time vs graph size](tool_speed.png)",
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.argument("names", nargs=-1)
@click.option("--rounds", default=3, show_default=True, help="Interleaved rounds per model.")
@click.option("--smoke", is_flag=True, help="resnet18 at 64x64, 1 round, no memory subprocesses.")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results")
@click.option("--update", is_flag=True, help="Measure NAMES and merge them into OUT/tool_speed.json.")
@click.option("--render", is_flag=True, help="Only re-render the page and plot from OUT/tool_speed.json.")
def main(names: tuple[str, ...], rounds: int, smoke: bool, out: Path, update: bool, render: bool) -> None:
    """Time both tools on every model and write tool_speed.{json,md,png} under OUT."""
    if render:
        data = json.loads((out / "tool_speed.json").read_text())
        write_text(out / "tool_speed.md", markdown(data["results"], data["env"], data["command"]))
        write_plot(data["results"], out / "tool_speed.png")
        return
    todo = ["resnet18"] if smoke else list(names) or MODELS
    rounds = 1 if smoke else rounds
    results: list[dict[str, Any]] = []
    if update:
        results = [
            r for r in json.loads((out / "tool_speed.json").read_text())["results"] if r["model"] not in todo
        ]
    for name in todo:
        t0, load = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
        r = {**measure(name, rounds, 64 if smoke else 224), "load_average": load}
        if "error" in r:
            results.append(r)
            click.echo(f"{name}: {r['error']}")
            write_outputs(results, out)
            continue
        if not smoke:
            target = r["target"]
            r["peak_mb_tp"], r["peak_mb_gp"] = peak_rss_mb(name, "tp", 0.0), peak_rss_mb(name, "gp", target)
        results.append(r)
        click.echo(
            f"{name}: gp/TP {r['ratio_analysis_apply']:.2f}, verified {r['ratio_with_verify']:.2f} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        write_outputs(results, out)  # after every model: a long run cut short keeps what it measured


def write_outputs(results: list[dict[str, Any]], out: Path) -> None:
    command = "python benchmarks/tool_speed.py " + " ".join(sys.argv[1:])
    env = environment()
    payload = {"env": env, "command": command.strip(), "results": results}
    write_text(out / "tool_speed.json", json.dumps(payload, indent=1) + "\n")
    write_text(out / "tool_speed.md", markdown(results, env, command.strip()))
    write_plot(results, out / "tool_speed.png")


if __name__ == "__main__":
    main()

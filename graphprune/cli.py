"""The `graphprune` command line: inspect, prune, apply, export and demo.

Errors graphprune expects (GraphpruneError) print as one `error: ...` line with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from graphprune.errors import GraphpruneError, OutputError, PlanError

if TYPE_CHECKING:
    from torch import nn

    from graphprune.modelspec import ResolvedModel

F = TypeVar("F", bound=Callable[..., Any])

DEMO_MODEL = "graphprune:cifar_resnet56"
DEMO_WEIGHTS = "cifar10_resnet56-4bfd9763.th"
DEFAULT_GROUP_ROWS = 25
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
LEAF_MODULES_KEY = "graphprune.leaf_modules"


def _version() -> str:
    import graphprune

    version = getattr(graphprune, "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    try:
        return metadata.version("graphprune")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# --- error handling --------------------------------------------------------------------------


class _OneLineError(click.ClickException):
    """A GraphpruneError as click shows it: `error: <message>` on stderr, exit code 2."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or "failed"


class _Cli(click.Group):
    """A click group that turns GraphpruneError into one line and Ctrl-C into a quiet exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraphpruneError as exc:
            raise _OneLineError(_one_line(str(exc))) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


# --- consoles and progress -------------------------------------------------------------------


def _stdout() -> Console:
    """Tables go to stdout; 120 columns when it is not a terminal (logs, pipes, tests)."""
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if wide else 120, highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def _step(message: str) -> Iterator[None]:
    """Show a spinner on stderr while the block runs, then a done line with its duration."""
    err = _stderr()
    start = time.perf_counter()
    with err.status(f"{escape(message)}..."):
        yield
    err.print(f"[green]done[/] {escape(message)} [dim]({time.perf_counter() - start:.1f}s)[/]")


def _note(message: str) -> None:
    _stderr().print(f"[yellow]note:[/] {escape(message)}")


# --- shared building blocks ------------------------------------------------------------------


def _writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove a file can be written in it (before any expensive work)."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".graphprune-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output directory {path} is not writable: {exc.strerror or exc}") from None
    return path


def _writable_file(path: Path) -> Path:
    if path.is_dir():
        raise OutputError(f"output file {path} is a directory")
    _writable_dir(path.parent if str(path.parent) else Path("."))
    return path


def _load_plan(path: Path) -> Any:
    import graphprune as gp

    if not path.is_file():
        raise PlanError(f"plan file {path} {'is a directory' if path.is_dir() else 'not found'}")
    return gp.PruningPlan.load(str(path))


def _resolve(model: str, weights: Path | None, input_shape: str | None, plan: Any = None) -> ResolvedModel:
    """Build MODEL; without --input-shape, a plan's single recorded input shape is the default."""
    from graphprune.modelspec import parse_input_shape, resolve_model

    shape = parse_input_shape(input_shape) if input_shape is not None else None
    recorded = getattr(plan, "input_shapes", None)
    if shape is None and isinstance(recorded, list) and len(recorded) == 1:
        shape = parse_input_shape(recorded[0])
    with _step(f"Building {model}"):
        return resolve_model(model, weights=str(weights) if weights is not None else None, input_shape=shape)


def _trace(rm: ResolvedModel) -> Any:
    import graphprune as gp

    with _step(f"Tracing {rm.name} on input {_shape_text(rm.input_shape)}"):
        leaf = click.get_current_context().meta.get(LEAF_MODULES_KEY, ())
        return gp.trace(rm.model, rm.example_inputs, leaf_modules=leaf)


def _shape_text(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def _mmacs(flops: float) -> str:
    return f"{flops / 1e6:,.2f}"


def _ratio(after: float | None, before: float | None) -> str:
    if after is None or not before:
        return "-"
    return f"{after / before:.3f}"


def _export_dict(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = dict(report.to_dict())
    if "path" in data:
        data["path"] = str(data["path"]) if data["path"] is not None else None
    return data


def _run_pipeline(
    rm: ResolvedModel,
    pg: Any,
    plan: Any,
    out_dir: Path,
    *,
    export: bool,
    plan_source: dict[str, Any],
) -> dict[str, Any]:
    """Apply `plan`, write model.pt, plan.json, model.onnx, report.json into `out_dir`; return the report."""
    import graphprune as gp
    from graphprune.fileio import write_text

    with _step("Applying the plan"):
        slim = gp.apply(pg, plan)
    with _step(f"Saving {out_dir / 'model.pt'} and plan.json"):
        gp.checkpoint.save_pruned(out_dir, slim, plan, pg)
    with _step("Counting pruned FLOPs and parameters"):
        pruned_flops = int(gp.count_flops(slim, rm.example_inputs))
        pruned_params = int(gp.count_params(slim))

    original_export: dict[str, Any] | None = None
    pruned_export: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None
    if export:
        from graphprune.export import export_onnx

        with tempfile.TemporaryDirectory(prefix="graphprune-") as tmp:
            original_onnx = Path(tmp) / "original.onnx"
            with _step("Exporting the original model to ONNX (for comparison)"):
                original_export = _export_dict(export_onnx(rm.model, rm.example_inputs, str(original_onnx)))
                original_export["path"] = None
            with _step(f"Exporting the pruned model to {out_dir / 'model.onnx'}"):
                pruned_export = _export_dict(
                    export_onnx(slim, rm.example_inputs, str(out_dir / "model.onnx"))
                )
            from graphprune.latency import paired_latency

            with _step("Timing both ONNX files with onnxruntime (1 thread, interleaved rounds)"):
                timing = paired_latency(original_onnx, out_dir / "model.onnx", rm.input_shape)
    elif (out_dir / "model.onnx").is_file():
        (out_dir / "model.onnx").unlink()
        _note(f"removed {out_dir / 'model.onnx'} from an earlier run: it would not match model.pt")

    original_nodes = original_export.get("nodes") if original_export else None
    pruned_nodes = pruned_export.get("nodes") if pruned_export else None
    report: dict[str, Any] = {
        "graphprune_version": _version(),
        "model": rm.name,
        "input_shape": list(rm.input_shape),
        "plan": plan_source,
        "original": {"flops": int(pg.flops), "params": int(pg.params), "onnx_nodes": original_nodes},
        "pruned": {"flops": pruned_flops, "params": pruned_params, "onnx_nodes": pruned_nodes},
        "ratios": {
            "flops": pruned_flops / pg.flops if pg.flops else None,
            "params": pruned_params / pg.params if pg.params else None,
            "onnx_nodes": pruned_nodes / original_nodes
            if pruned_nodes is not None and original_nodes
            else None,
        },
        "files": {
            "state_dict": "model.pt",
            "plan": "plan.json",
            "onnx": "model.onnx" if export else None,
            "report": "report.json",
        },
        "export": pruned_export,
        "original_export": original_export,
        "onnxruntime_latency": timing,
    }
    write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def _print_before_after(report: dict[str, Any], out_dir: Path) -> None:
    before, after = report["original"], report["pruned"]
    exp_before = report["original_export"] or {}
    exp_after = report["export"] or {}
    table = _table(f"{escape(report['model'])}: original vs pruned")
    table.add_column("metric")
    table.add_column("original", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("pruned / original", justify="right")
    metrics: list[tuple[str, str, Callable[[Any], str]]] = [
        ("FLOPs (MMACs)", "flops", _mmacs),
        ("params", "params", lambda v: f"{v:,}"),
    ]
    if report["export"] is not None:
        metrics.append(("ONNX nodes", "onnx_nodes", str))
    for label, key, fmt in metrics:
        table.add_row(label, fmt(before[key]), fmt(after[key]), _ratio(after[key], before[key]))
    if report["export"] is not None:
        table.add_row(
            "ONNX vs PyTorch max abs error",
            _error_text(exp_before.get("max_abs_error")),
            _error_text(exp_after.get("max_abs_error")),
            "-",
        )
    timing = report.get("onnxruntime_latency")
    if timing:
        table.add_row(
            "ONNX Runtime latency (ms, median, 1 thread)",
            f"{timing['baseline_ms']:.3f}",
            f"{timing['candidate_ms']:.3f}",
            f"{timing['ratio']:.3f}",
        )
    out = _stdout()
    out.print(table)
    files = [name for name in report["files"].values() if name is not None]
    out.print(f"wrote {escape(str(out_dir))}/{{{', '.join(files)}}}")


def _table(title: str, *, show_header: bool = True) -> Table:
    """A table whose left-aligned title never wraps (the table is at least as wide as the title)."""
    return Table(title=title, title_justify="left", show_header=show_header, min_width=len(title))


def _error_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


# --- options ---------------------------------------------------------------------------------


def _model_options(fn: F) -> F:
    """MODEL argument plus --weights, --input-shape and --leaf-module, shared by every model command."""
    fn = click.option(
        "--leaf-module",
        "leaf_modules",
        multiple=True,
        metavar="PATH",
        expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(LEAF_MODULES_KEY, tuple(value)),
        help="Keep this submodule (e.g. layer2.1) as one opaque op, for code torch.fx cannot trace; its "
        "channels become unprunable. Repeatable.",
    )(fn)
    fn = click.option(
        "--input-shape",
        metavar="N,C,H,W",
        help="Example input shape (default: the model's own, e.g. 1,3,224,224 for torchvision).",
    )(fn)
    fn = click.option(
        "--weights",
        type=click.Path(path_type=Path),
        metavar="FILE",
        help="state_dict (or checkpoint) to load into MODEL before anything else.",
    )(fn)
    return click.argument("model", metavar="MODEL")(fn)


def _out_dir_option(default: str | None) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(path_type=Path),
        required=default is None,
        default=default,
        metavar="DIR",
        help="Output directory for model.pt, plan.json, model.onnx, report.json"
        + (f" (default: {default})." if default else "."),
    )


MODEL_HELP = """
MODEL is torchvision:NAME (e.g. torchvision:resnet50), graphprune:NAME (built-in, e.g.
graphprune:cifar_resnet56) or path/to/file.py:factory (a function returning an nn.Module).
"""


@click.group(
    name="graphprune",
    cls=_Cli,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  graphprune demo
  graphprune inspect graphprune:cifar_resnet56
  graphprune prune torchvision:resnet50 --criterion l1 --target-flops 0.5 --out out/r50
  graphprune apply torchvision:resnet50 --plan out/r50/plan.json --out out/r50-again
  graphprune export my_net.py:build --input-shape 1,3,64,64 --out net.onnx
""",
)
@click.version_option(_version(), "--version", prog_name="graphprune")
def cli() -> None:
    """Structured pruning for PyTorch CNNs: trace, plan, rewrite, export."""


# --- commands --------------------------------------------------------------------------------


@cli.command(
    short_help="Show channel groups, blocks and layer costs of MODEL.",
    epilog="""\b
Examples:
  graphprune inspect graphprune:cifar_resnet56
  graphprune inspect torchvision:resnet50 --all-groups
  graphprune inspect my_net.py:build --input-shape 1,3,64,64 --weights net.pt
""",
    help="Show the channel groups, blocks and costs graphprune finds in MODEL.\n" + MODEL_HELP,
)
@_model_options
@click.option(
    "--all-groups", is_flag=True, help=f"List every channel group (default: the first {DEFAULT_GROUP_ROWS})."
)
@click.option(
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Number of costliest layers to list.",
)
def inspect(model: str, weights: Path | None, input_shape: str | None, all_groups: bool, top: int) -> None:
    rm = _resolve(model, weights, input_shape)
    pg = _trace(rm)
    out = _stdout()

    prunable = sum(1 for g in pg.groups if g.prunable)
    summary = _table("model", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("model", escape(rm.name))
    summary.add_row("input shape", _shape_text(rm.input_shape))
    summary.add_row("FLOPs", f"{_mmacs(pg.flops)} MMACs")
    summary.add_row("params", f"{pg.params:,} ({pg.params / 1e6:.2f} M)")
    summary.add_row("channel groups", f"{len(pg.groups)} ({prunable} prunable)")
    summary.add_row("blocks", str(len(pg.blocks)))
    out.print(summary)

    shown = pg.groups if all_groups else pg.groups[:DEFAULT_GROUP_ROWS]
    groups = _table("channel groups")
    groups.add_column("id", overflow="fold")
    groups.add_column("size", justify="right")
    groups.add_column("prunable")
    groups.add_column("members", justify="right")
    groups.add_column("reason", overflow="fold")
    for g in shown:
        groups.add_row(
            escape(str(g.id)),
            str(g.size),
            "yes" if g.prunable else "[red]no[/]",
            str(len(g.members)),
            escape(g.reason or ""),
        )
    out.print(groups)
    if len(shown) < len(pg.groups):
        out.print(f"... {len(pg.groups) - len(shown)} more groups (--all-groups lists them)")

    blocks = _table("removable blocks")
    blocks.add_column("name", overflow="fold")
    blocks.add_column("MFLOPs (MMACs)", justify="right")
    blocks.add_column("params", justify="right")
    blocks.add_column("share of FLOPs", justify="right")
    for b in pg.blocks:
        share = b.flops / pg.flops if pg.flops else 0.0
        blocks.add_row(escape(b.name), _mmacs(b.flops), f"{b.params:,}", f"{share:.1%}")
    if pg.blocks:
        out.print(blocks)
    else:
        out.print("no removable blocks")

    if top:
        costs = _table(f"top {top} layers by FLOPs")
        costs.add_column("layer", overflow="fold")
        costs.add_column("kind")
        costs.add_column("MMACs", justify="right")
        costs.add_column("params", justify="right")
        costs.add_column("share of FLOPs", justify="right")
        for lc in sorted(pg.layer_costs, key=lambda c: c.flops, reverse=True)[:top]:
            share = lc.flops / pg.flops if pg.flops else 0.0
            costs.add_row(
                escape(lc.name), escape(lc.kind), _mmacs(lc.flops), f"{lc.params:,}", f"{share:.1%}"
            )
        out.print(costs)


def _prune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    *,
    criterion: str,
    target_flops: float,
    scope: str,
    round_to: int,
    out_dir: Path,
    export: bool,
) -> None:
    """Plan by criterion, then apply, save, export and report (shared by `prune` and `demo`)."""
    import graphprune as gp
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    _writable_dir(out_dir)
    rm = _resolve(model, weights, input_shape)
    pg = _trace(rm)
    with _step(f"Planning: {criterion} criterion, {scope} scope, target {target_flops:g} of FLOPs"):
        plan = gp.criteria.plan_by_criterion(
            pg, criterion=criterion, target_flops=target_flops, scope=scope, round_to=round_to
        )
    source = {
        "criterion": criterion,
        "target_flops": target_flops,
        "scope": scope,
        "round_to": round_to,
        "weights": _opt_str(weights),
    }
    report = _run_pipeline(rm, pg, plan, out_dir, export=export, plan_source=source)
    _print_before_after(report, out_dir)


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@cli.command(
    short_help="Prune MODEL to a FLOPs target by a criterion (l1, bn).",
    epilog="""\b
Examples:
  graphprune prune graphprune:cifar_resnet56 --criterion l1 --target-flops 0.5 --out out/r56
  graphprune prune torchvision:resnet50 --criterion bn --target-flops 0.7 --scope layer --out out/r50
  graphprune prune my_net.py:build --weights net.pt --input-shape 1,3,64,64 --out out/net
""",
    help="Prune MODEL to a FLOPs target with a ranking criterion; write model.pt, plan.json, "
    "model.onnx and report.json into DIR.\n\n"
    "--target-flops is the fraction of the original FLOPs to keep (0.5 halves them).\n" + MODEL_HELP,
)
@_model_options
@click.option(
    "--criterion",
    type=click.Choice(["l1", "bn"]),
    required=True,
    help="l1: filter weight L1 norm; bn: |BatchNorm gamma|.",
)
@click.option(
    "--target-flops",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    required=True,
    metavar="FRACTION",
    help="Fraction of the original FLOPs to keep, e.g. 0.5.",
)
@click.option(
    "--scope",
    type=click.Choice(["global", "layer"]),
    default="global",
    show_default=True,
    help="Rank channels across the whole model or within each layer.",
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Keep a multiple of this many channels per group: odd channel counts defeat vectorised "
    "kernels, so unrounded pruning can cut FLOPs without cutting latency. 1 = exact FLOPs target.",
)
@_out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def prune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    criterion: str,
    target_flops: float,
    scope: str,
    round_to: int,
    out_dir: Path,
    no_export: bool,
) -> None:
    _prune(
        model,
        weights,
        input_shape,
        criterion=criterion,
        target_flops=target_flops,
        scope=scope,
        round_to=round_to,
        out_dir=out_dir,
        export=not no_export,
    )


@cli.command(
    short_help="Apply a saved plan.json to MODEL.",
    epilog="""\b
Examples:
  graphprune apply graphprune:cifar_resnet56 --plan out/r56/plan.json --out out/r56-again
  graphprune apply torchvision:resnet50 --weights r50.pt --plan plan.json --out out/r50 --no-export
""",
    help="Apply a saved pruning plan to MODEL; write model.pt, plan.json, model.onnx and "
    "report.json into DIR.\n" + MODEL_HELP,
)
@_model_options
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="PLAN.json",
    help="A plan written by `graphprune prune` or PruningPlan.save.",
)
@_out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def apply(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    plan_path: Path,
    out_dir: Path,
    no_export: bool,
) -> None:
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    _writable_dir(out_dir)
    plan = _load_plan(plan_path)
    rm = _resolve(model, weights, input_shape, plan)
    pg = _trace(rm)
    source = {"plan_file": str(plan_path), "weights": _opt_str(weights)}
    report = _run_pipeline(rm, pg, plan, out_dir, export=not no_export, plan_source=source)
    _print_before_after(report, out_dir)


@cli.command(
    short_help="Export MODEL (optionally pruned by a plan) to ONNX.",
    epilog="""\b
Examples:
  graphprune export torchvision:resnet18 --out resnet18.onnx
  graphprune export graphprune:cifar_resnet56 --plan out/r56/plan.json --out r56-pruned.onnx
""",
    help="Export MODEL (pruned first if --plan is given) to ONNX and check it against PyTorch.\n"
    + MODEL_HELP,
)
@_model_options
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    required=True,
    metavar="FILE.onnx",
    help="Where to write the ONNX file.",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    metavar="PLAN.json",
    help="Prune with this plan before exporting.",
)
def export(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    out_path: Path,
    plan_path: Path | None,
) -> None:
    import graphprune as gp
    from graphprune.export import export_onnx
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    _writable_file(out_path)
    plan = _load_plan(plan_path) if plan_path is not None else None
    rm = _resolve(model, weights, input_shape, plan)
    module: nn.Module = rm.model
    if plan is not None:
        pg = _trace(rm)
        with _step("Applying the plan"):
            module = gp.apply(pg, plan)
    with _step(f"Exporting to {out_path}"):
        report = _export_dict(export_onnx(module, rm.example_inputs, str(out_path)))
    table = _table(f"ONNX export of {escape(rm.name)}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in report.items():
        table.add_row(escape(str(key)), escape(_value_text(key, value)))
    _stdout().print(table)


def _value_text(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if "error" in key else f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@cli.command(
    short_help="Prune CIFAR ResNet-56 to 50% FLOPs, no arguments needed.",
    epilog=f"""\b
Examples:
  graphprune demo
  graphprune demo --out /tmp/demo --no-export
\b
Pretrained weights come from the shared data directory ($GRAPHPRUNE_SHARED/weights/{DEMO_WEIGHTS});
without them the model is randomly initialised (FLOPs and params are the same, accuracy is not).
""",
)
@_out_dir_option("./graphprune-demo")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def demo(out_dir: Path, no_export: bool) -> None:
    """Prune the built-in CIFAR ResNet-56 with the l1 criterion to 50% of its FLOPs."""
    weights = _demo_weights()
    if weights is None:
        _note(f"pretrained {DEMO_WEIGHTS} not found in the shared directory; using random init")
    else:
        _note(f"pretrained weights: {weights}")
    _prune(
        DEMO_MODEL,
        weights,
        None,
        criterion="l1",
        target_flops=0.5,
        scope="global",
        round_to=8,
        out_dir=out_dir,
        export=not no_export,
    )


def _demo_weights() -> Path | None:
    from graphprune import shared

    try:
        path = Path(shared.weights_file(DEMO_WEIGHTS))
    except GraphpruneError:
        return None
    return path if path.is_file() else None


def main() -> None:
    """Console-script entry point (`graphprune = graphprune.cli:main`)."""
    cli(prog_name="graphprune")


if __name__ == "__main__":
    main()

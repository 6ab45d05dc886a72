"""`graphprune finetune`: fine-tune MODEL (pruned first by --plan) on --data with KD; export; report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from graphprune.cli.options import (
    MODEL_HELP,
    leaf_modules,
    model_options,
    out_dir_option,
    prune_layernorm,
)
from graphprune.cli.pipeline import load_plan, opt_str
from graphprune.cli.training import (
    data_loading,
    data_options,
    print_run_summary,
    run_step,
    train_config,
    train_options,
    val_split_option,
)
from graphprune.fileio import check_writable_dir


@click.command(
    short_help="Fine-tune MODEL (optionally pruned by a plan) or a run directory on a dataset, with KD.",
    epilog="""\b
Examples:
  graphprune finetune graphprune:cifar_resnet20 --weights r20.th --plan out/r20/plan.json \\
      --data cifar10:../shared/data/cifar10-jpeg.zip --epochs 2 --out runs/r20-ft
  graphprune finetune runs/r20-ft --epochs 2 --out runs/r20-ft2    (continue a run)
  graphprune finetune my_net.py:build --input-shape 1,1,28,28 --data fashion-mnist: \\
      --epochs 5 --no-kd --out runs/net
""",
    help="Fine-tune MODEL on --data and write model.safetensors, plan.json, model.json, model.onnx, "
    "metrics.jsonl and report.md into DIR. With --plan the model is pruned first and, unless --no-kd, "
    "distils from the unpruned MODEL (or --kd-from TEACHER); --weights may then hold MODEL's weights or "
    "the pruned model's (as a run writes them). MODEL may be a run directory of prune/finetune: its "
    "pruned weights are trained further (its data, plan and teacher unless given) into a new DIR.\n"
    + MODEL_HELP,
)
@model_options
@click.option(
    "--plan", "plan_path", type=click.Path(path_type=Path), metavar="PLAN.json", help="Prune first."
)
@data_options
@val_split_option
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Epochs of fine-tuning.")
@click.option(
    "--kd-from", "kd_from", metavar="TEACHER", help="Teacher MODEL spec (default: the unpruned MODEL)."
)
@click.option("--kd-weights", type=click.Path(path_type=Path), metavar="FILE", help="Weights of --kd-from.")
@click.option("--no-kd", is_flag=True, help="Plain cross-entropy, no teacher.")
@train_options
@out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def finetune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    plan_path: Path | None,
    data_spec: str | None,
    image_size: int | None,
    val_split: float | None,
    epochs: int,
    kd_from: str | None,
    kd_weights: Path | None,
    no_kd: bool,
    out_dir: Path,
    no_export: bool,
    resume: bool,
    **train_kw: Any,
) -> None:
    from graphprune.checkpoint import is_run_dir
    from graphprune.methods.pipeline import PipelineRequest, run
    from graphprune.modelspec import parse_input_shape
    from graphprune.train.data import DataError

    cfg = train_config(epochs, train_kw)
    check_writable_dir(out_dir)
    if is_run_dir(model):
        request = _continue_request(
            Path(model), weights, plan_path, input_shape, kd_from, kd_weights, no_kd, out_dir
        )
        data_spec = data_spec or request.data
    else:
        plan = load_plan(plan_path) if plan_path is not None else None
        shape = parse_input_shape(input_shape) if input_shape is not None else None
        if shape is None and plan is not None and plan.input_shapes and len(plan.input_shapes) == 1:
            shape = tuple(plan.input_shapes[0])
        request = PipelineRequest(
            model=model, out_dir=out_dir, weights=opt_str(weights), input_shape=shape, plan=plan,
            kd=not no_kd and (plan is not None or kd_from is not None), teacher=kd_from,
            teacher_weights=opt_str(kd_weights), leaf_modules=leaf_modules(),
            prune_layernorm=prune_layernorm(),
        )  # fmt: skip
        if plan is not None and weights is not None and not _fits_model(model, weights, shape):
            _as_pruned_weights(request, plan_path, no_kd)
    if data_spec is None:
        raise DataError("finetune needs --data SPEC")
    request.data, request.image_size, request.val_split = data_spec, image_size, val_split
    request.finetune, request.resume, request.export = cfg, resume, not no_export
    request.data_options = {k: v for k, v in data_loading().items() if k != "workers"}
    print_run_summary(run(request, run_step()), out_dir)


def _fits_model(model: str, weights: Path, shape: tuple[int, ...] | None) -> bool:
    """Whether --weights fit MODEL itself (else they may be MODEL pruned by the plan)."""
    from graphprune.errors import WeightsError
    from graphprune.modelspec import resolve_model
    from graphprune.weights import load_weights

    rm = resolve_model(model, input_shape=shape)
    try:
        load_weights(rm.model, str(weights))
    except WeightsError:
        return False
    return True


def _as_pruned_weights(request: Any, plan_path: Path | None, no_kd: bool) -> None:
    """--weights are the pruned model's: load them after the plan. The unpruned weights are unknown, so
    the teacher is the one recorded by the run the plan comes from, or --kd-from, or none (--no-kd)."""
    from graphprune.checkpoint import RunInfo, is_run_dir
    from graphprune.errors import WeightsError

    request.pruned_weights, request.weights = request.weights, None
    if not request.kd or request.teacher is not None:
        return
    run_dir = plan_path.parent if plan_path is not None else None
    recorded = RunInfo.load(run_dir).teacher if run_dir is not None and is_run_dir(run_dir) else None
    if recorded is None:
        raise WeightsError(
            f"{request.pruned_weights} holds pruned weights, so the unpruned teacher is unknown: "
            "give --kd-from TEACHER (--kd-weights FILE) or --no-kd"
        )
    request.teacher, request.teacher_weights = recorded.model, recorded.checked_weights("teacher")


def _continue_request(
    run_dir: Path,
    weights: Path | None,
    plan_path: Path | None,
    input_shape: str | None,
    kd_from: str | None,
    kd_weights: Path | None,
    no_kd: bool,
    out_dir: Path,
) -> Any:
    """The request that trains a run directory's pruned weights further into `out_dir`.

    MODEL, its original weights, the plan, the data and the teacher are the run's own (`model.json`),
    unless --kd-from / --no-kd / --data say otherwise."""
    import click as _click

    from graphprune.checkpoint import PLAN_FILE, RunInfo, run_weights
    from graphprune.methods.pipeline import PipelineRequest

    named = (("--weights", weights), ("--plan", plan_path), ("--input-shape", input_shape))
    given = [n for n, v in named if v]
    if given:
        raise _click.UsageError(f"{given[0]} cannot be given with a run directory: the run records it")
    if out_dir.resolve() == run_dir.resolve():
        raise _click.UsageError(f"--out must be a new directory, not the run being continued ({run_dir})")
    info = RunInfo.load(run_dir)
    teacher = None if no_kd else info.teacher
    role = "original (and teacher)" if teacher is not None and teacher == info.weights else "original"
    request = PipelineRequest(
        model=info.model, out_dir=out_dir, input_shape=info.input_shape, plan=load_plan(run_dir / PLAN_FILE),
        data=info.data, weights=info.weights.checked_weights(role) if info.weights else None,
        pruned_weights=str(run_weights(run_dir)), leaf_modules=leaf_modules(),
        prune_layernorm=info.prune_layernorm or prune_layernorm(),
        kd=not no_kd and (kd_from is not None or teacher is not None),
    )  # fmt: skip
    if not no_kd and kd_from is None and teacher is None:
        from graphprune.cli.console import note

        note(f"{run_dir} records no teacher: no distillation (--kd-from TEACHER distils)")
    if kd_from is not None:
        request.teacher, request.teacher_weights = kd_from, opt_str(kd_weights)
    elif teacher is not None and teacher != info.weights:
        request.teacher, request.teacher_weights = teacher.model, teacher.checked_weights("teacher")
    return request

"""`graphprune prune`: plan by a ranking criterion to a FLOPs target, then apply, save and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from graphprune.cli.console import step
from graphprune.cli.options import (
    MODEL_HELP,
    leaf_modules,
    model_options,
    out_dir_option,
    prune_layernorm,
    static_batch_option,
)
from graphprune.cli.pipeline import opt_str, print_before_after, resolve, run_pipeline, trace
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


def prune_by_criterion(
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
    static_batch: bool = False,
) -> None:
    """Plan by criterion, then apply, save, export and report (shared by `prune` and `demo`)."""
    import graphprune as gp
    from graphprune.modelspec import parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    check_writable_dir(out_dir)
    rm = resolve(model, weights, input_shape)
    pg = trace(rm)
    with step(f"Planning: {criterion} criterion, {scope} scope, target {target_flops:g} of FLOPs"):
        plan = gp.criteria.plan_by_criterion(
            pg,
            criterion=criterion,  # type: ignore[arg-type]
            target_flops=target_flops,
            scope=scope,  # type: ignore[arg-type]
            round_to=round_to,
        )
    source = {
        "criterion": criterion,
        "target_flops": target_flops,
        "scope": scope,
        "round_to": round_to,
        "weights": opt_str(weights),
    }
    report = run_pipeline(rm, pg, plan, out_dir, export=export, plan_source=source, static_batch=static_batch)
    print_before_after(report, out_dir)


def _epochs_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        epochs = [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"expected epochs like 2 or 2,2,3, got {text!r}", param_hint="--epochs"
        ) from None
    if any(e < 0 for e in epochs):
        raise click.BadParameter(f"epochs must be >= 0, got {text!r}", param_hint="--epochs")
    return epochs


def _budget(target_flops: float | None, target_latency: str | None) -> Any:
    """A Budget from --target-flops or --target-latency ("2.5ms" = milliseconds, "0.6" = a ratio)."""
    from graphprune.methods import Budget

    if target_latency is None:
        return Budget(target_flops=target_flops)
    text = target_latency.strip().lower()
    try:
        value = float(text.removesuffix("ms"))
    except ValueError:
        raise click.BadParameter(
            f"expected milliseconds like 2.5ms or a ratio like 0.6, got {target_latency!r}",
            param_hint="--target-latency",
        ) from None
    if text.endswith("ms"):
        return Budget(target_latency_ms=value)
    return Budget(target_latency_ratio=value)


def prune_and_train(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    *,
    method: str,
    target_flops: Any,
    scope: str,
    round_to: int,
    data_spec: str | None,
    image_size: int | None,
    finetune_epochs: int,
    method_epochs: str | None,
    kd: bool,
    val_split: float | None = None,
    resume: bool,
    out_dir: Path,
    export: bool,
    train_kw: dict[str, Any],
    method_kw: dict[str, Any] | None = None,
) -> None:
    """The full pipeline: method -> apply -> fine-tune with KD -> export -> evaluate -> report.md."""
    from graphprune.methods import Budget
    from graphprune.methods.pipeline import PipelineRequest, run
    from graphprune.modelspec import parse_input_shape

    epochs = _epochs_list(method_epochs)
    if method == "abp" and epochs and len(epochs) == 3 and finetune_epochs == 0:
        finetune_epochs = epochs[2]  # ABP's stage 3 is the pipeline's fine-tune
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    check_writable_dir(out_dir)
    budget = target_flops if isinstance(target_flops, Budget) else Budget(target_flops=target_flops)
    finetune = train_config(finetune_epochs, dict(train_kw)) if finetune_epochs > 0 else None
    method_train = train_config(max(1, sum(epochs or [1])), dict(train_kw)) if data_spec is not None else None
    request = PipelineRequest(
        model=model, out_dir=out_dir, weights=opt_str(weights), input_shape=shape, method=method,
        budget=budget, data=data_spec, image_size=image_size, finetune=finetune,
        method_train=method_train, kd=kd, resume=resume, export=export, leaf_modules=leaf_modules(),
        prune_layernorm=prune_layernorm(), val_split=val_split,
        data_options={k: v for k, v in data_loading().items() if k != "workers"},
        options={"scope": scope, "round_to": round_to, "epochs": epochs, **(method_kw or {})},
    )  # fmt: skip
    print_run_summary(run(request, run_step()), out_dir)


@click.command(
    short_help="Prune MODEL to a FLOPs target (l1, bn, learned methods), optionally fine-tune.",
    epilog="""\b
Examples:
  graphprune prune graphprune:cifar_resnet56 --criterion l1 --target-flops 0.5 --out out/r56
  graphprune prune torchvision:resnet50 --criterion bn --target-flops 0.7 --scope layer --out out/r50
  graphprune prune my_net.py:build --weights net.pt --input-shape 1,3,64,64 --out out/net
  graphprune prune graphprune:cifar_resnet20 --weights r20.th --method l1 --target-flops 0.5 \\
      --data cifar10:../shared/data/cifar10-jpeg.zip --finetune-epochs 1 --out runs/r20
""",
    help="Prune MODEL to a FLOPs target with a ranking criterion; write model.safetensors, plan.json, "
    "model.onnx and report.json into DIR.\n\n"
    "--target-flops is the fraction of the original FLOPs to keep (0.5 halves them). With --data, the "
    "pruned model is fine-tuned for --finetune-epochs with distillation from the original, evaluated, "
    "and report.md (accuracy, FLOPs, params, ONNX size, latency, plots) is written.\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--method",
    metavar="NAME",
    help="Pruning method: l1, bn, or a learned one (abp, wgates, abp+wgates) where installed.",
)
@click.option(
    "--criterion",
    type=click.Choice(["l1", "bn"]),
    help="Alias of --method for l1: filter weight L1 norm; bn: |BatchNorm gamma|.",
)
@click.option(
    "--target-flops",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    metavar="FRACTION",
    help="Fraction of the original FLOPs to keep, e.g. 0.5.",
)
@click.option(
    "--target-latency",
    metavar="MS|RATIO",
    help="wgates, abp+wgates: latency budget on onnxruntime (this machine), e.g. 2.5ms or 0.6 (of the "
    "original's measured latency), instead of --target-flops.",
)
@click.option(
    "--latency-model",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="A predictor from `graphprune latency-model` (default: fitted now, reusing measured samples).",
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
@data_options
@val_split_option
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Fine-tune after pruning.",
)
@click.option("--epochs", "method_epochs", metavar="N[,N...]", help="Epochs per stage of a learned method.")
@click.option("--no-kd", is_flag=True, help="Fine-tune without distilling from the original.")
@click.option("--calib-batches", type=click.IntRange(min=1), default=8, show_default=True,
              help="abp: training batches of the calibration pass that votes blocks out.")  # fmt: skip
@click.option("--reg-weight", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="abp: weight of the gate regulariser (marks to 0/1 and to the budget).")  # fmt: skip
@train_options
@out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
@static_batch_option
def prune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    method: str | None,
    criterion: str | None,
    target_flops: float | None,
    target_latency: str | None,
    latency_model: Path | None,
    scope: str,
    round_to: int,
    data_spec: str | None,
    image_size: int | None,
    val_split: float | None,
    finetune_epochs: int,
    method_epochs: str | None,
    no_kd: bool,
    calib_batches: int,
    reg_weight: float,
    resume: bool,
    out_dir: Path,
    no_export: bool,
    static_batch: bool,
    **train_kw: Any,
) -> None:
    if method is not None and criterion is not None and method != criterion:
        raise click.UsageError(f"--method {method} and --criterion {criterion} disagree; give one")
    method = method or criterion
    if method is None:
        raise click.UsageError("give --method (or --criterion)")
    if (target_flops is None) == (target_latency is None):
        raise click.UsageError("give one budget: --target-flops or --target-latency")
    budget = _budget(target_flops, target_latency)
    if target_flops is None and method in ("l1", "bn"):
        raise click.UsageError(f"--method {method} takes --target-flops only")
    if data_spec is not None or method not in ("l1", "bn"):
        prune_and_train(
            model, weights, input_shape, method=method, target_flops=budget, scope=scope,
            round_to=round_to,
            data_spec=data_spec, image_size=image_size, finetune_epochs=finetune_epochs,
            method_epochs=method_epochs, kd=not no_kd, val_split=val_split, resume=resume, out_dir=out_dir,
            export=not no_export,
            train_kw=train_kw, method_kw={"calib_batches": calib_batches, "reg_weight": reg_weight,
                                           "latency_model": opt_str(latency_model)},
        )  # fmt: skip
        return
    criterion = method
    assert target_flops is not None
    prune_by_criterion(
        model,
        weights,
        input_shape,
        criterion=criterion,
        target_flops=target_flops,
        scope=scope,
        round_to=round_to,
        out_dir=out_dir,
        export=not no_export,
        static_batch=static_batch,
    )

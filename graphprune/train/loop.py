"""`fit`: a plain PyTorch training loop (SGD, schedule, optional distillation and extra losses).

Read it top to bottom like nanoGPT's train.py: set up, maybe resume, loop over steps, evaluate and
checkpoint each epoch. The state worth saving is listed in one place, `_train_state`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from graphprune.errors import GraphpruneError
from graphprune.train import distributed, state
from graphprune.train.bundle import DataBundle
from graphprune.train.config import TrainConfig
from graphprune.train.distill import distill_loss
from graphprune.train.evaluate import EvalResult, evaluate
from graphprune.train.interrupt import DeferredInterrupt
from graphprune.train.progress import Progress

ExtraLoss = Callable[[nn.Module, Tensor, Tensor], Tensor]
EpochCallback = Callable[[nn.Module, int, dict[str, Any]], None]


@dataclass
class FitResult:
    """What a `fit` did: steps taken, per-epoch metrics, the final evaluation (if evaluated).

    `test` is evaluated on the data's `eval_split`: the validation split when one is held out."""

    stage: str
    steps: int
    finished: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    test: EvalResult | None = None
    resumed_at: int | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics ({} if no epoch ended)."""
        return self.history[-1] if self.history else {}


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total`.

    cosine: linear warm-up over `warmup` steps, then cosine decay to 0. onecycle: warm-up from
    1/25 of the peak over `warmup` steps (30% of the run if 0), then cosine decay to ~0
    (Smith's one-cycle, as torch's OneCycleLR with its defaults).
    """
    if schedule == "onecycle":
        warmup = warmup or max(1, int(0.3 * total))
        if step < warmup:
            return 1 / 25 + (1 - 1 / 25) * step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(
    model: nn.Module, cfg: TrainConfig, extra_params: Sequence[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Weights with weight decay; BN parameters and biases (1-d) without; then the extra groups as given."""
    extra = [dict(g) for g in extra_params or ()]
    for g in extra:
        g["params"] = list(g["params"])
        g.setdefault("weight_decay", 0.0)
    taken = {id(p) for g in extra for p in g["params"]}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad and id(p) not in taken:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        *extra,
    ]
    return [g for g in groups if g["params"]]


def _train_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    sums: Tensor,
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    extra: list[Tensor],
) -> dict[str, Any]:
    """Everything a resumed run needs to continue as if never stopped."""
    return {
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "extra_params": [p.detach().cpu().clone() for p in extra],
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch_sums": sums.detach().cpu().clone(),  # loss, correct, count of the epoch so far
        "history": history,
        "config": cfg.to_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _restore(
    ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer | None, extra: list[Tensor]
) -> None:
    model.load_state_dict(ckpt["model"])
    with torch.no_grad():
        for p, saved in zip(extra, ckpt.get("extra_params", []), strict=False):
            p.copy_(saved)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if torch.cuda.is_available() and ckpt["rng_cuda"]:
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])


def _rates(sums: list[float], seconds: float) -> dict[str, float]:
    """Mean loss, accuracy (%) and images/s from summed [loss, correct, count]."""
    n = max(sums[2], 1.0)
    return {
        "train_loss": sums[0] / n,
        "train_acc": 100.0 * sums[1] / n,
        "images_per_s": sums[2] / max(seconds, 1e-9),
    }


def _data_tag(data: DataBundle) -> dict[str, Any]:
    """What a checkpoint records of its data, to refuse resuming on other data."""
    return {
        "name": data.name, "train": len(data.train), "eval_split": data.eval_split,
        "val": len(data.val) if data.val is not None else 0,
    }  # fmt: skip


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, data_tag: dict[str, Any], stage: str) -> None:
    """Raise unless `cfg` and the data are those the checkpoint was written with, up to the run's length
    and how it is watched (`TrainConfig.RESUMABLE_CHANGES`); `cfg.resume_override` accepts any change."""
    if cfg.resume_override:
        return
    saved, now = ckpt.get("config", {}), cfg.to_dict()
    for name, value in now.items():
        if name in saved and name not in TrainConfig.RESUMABLE_CHANGES and saved[name] != value:
            raise GraphpruneError(
                f"cannot resume stage {stage}: {name} was {saved[name]!r}, now {value!r} "
                "(give --override to resume anyway)"
            )
    recorded = ckpt.get("data")
    if recorded is not None and recorded != data_tag:
        field_name = next(k for k in data_tag if recorded.get(k) != data_tag[k])
        raise GraphpruneError(
            f"cannot resume stage {stage}: data {field_name} was {recorded.get(field_name)!r}, "
            f"now {data_tag[field_name]!r} (give --override to resume anyway)"
        )


def check_same_model(ckpt: dict[str, Any], model: nn.Module, stage: str) -> None:
    """Raise unless the checkpoint holds a state of `model`'s architecture (names and shapes): a run
    directory resumed for another model, e.g. a plan that came out differently, is named, not loaded."""
    saved, here = ckpt["model"], model.state_dict()
    for name in sorted(set(saved) | set(here)):
        there = tuple(saved[name].shape) if name in saved else None
        now = tuple(here[name].shape) if name in here else None
        if there != now:
            raise GraphpruneError(
                f"cannot resume stage {stage}: its checkpoint is of another model ({name}: "
                f"{list(there) if there is not None else 'absent'} there, "
                f"{list(now) if now is not None else 'absent'} here); start a new run directory"
            )


def _setup_threads(cfg: TrainConfig, info: distributed.DistInfo) -> None:
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // info.local_world_size)
    torch.set_num_threads(threads)


def fit(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    extra_loss: ExtraLoss | None = None,
    extra_params: Sequence[dict[str, Any]] | None = None,
    run_dir: str | Path | None = None,
    stage: str = "finetune",
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
) -> FitResult:
    """Train `model` in place on `data.train`; the caller passes its own copy.

    With a `teacher`, the loss is `distill_loss` (cfg.kd_temperature, cfg.kd_alpha); `extra_loss(model,
    x, logits)` is added every step; `extra_params` are further optimiser param groups (dicts with
    "params" and optionally "lr", "weight_decay"). `after_backward(model)` runs between the backward pass
    and the optimiser step (a regulariser that edits gradients, as Torch-Pruning's sparse training
    does). With `run_dir`, checkpoints go to
    `run_dir/stages/<stage>/checkpoint.pt` every epoch and on Ctrl-C, metrics to `run_dir/metrics.jsonl`,
    and the finished stage writes `done.json`; `resume=True` continues from the checkpoint, or, on a
    finished stage, loads its final weights and returns at once.
    """
    device = distributed.local_device(cfg.device)
    info = distributed.setup(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    _setup_threads(cfg, info)
    groups = param_groups(model, cfg, extra_params)
    extra = [p for g in groups[-len(extra_params or ()) :] for p in g["params"]] if extra_params else []
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cfg.sync_bn and device.type != "cuda":
        raise GraphpruneError(
            "--sync-bn needs GPUs: torch's SyncBatchNorm does not run on the CPU (plain BatchNorm keeps "
            "per-process statistics under DDP)"
        )
    synced = cfg.sync_bn and info.enabled and distributed.to_sync_batchnorm(model) > 0

    loader = data.loader(
        "train", cfg.batch_size, seed=cfg.seed, augment=cfg.augment, device=device, drop_last=True,
        rank=info.rank, world_size=info.world_size, workers=cfg.workers,
    )  # fmt: skip
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise GraphpruneError(
            f"{data.name}: {len(data.train)} training images make no batch of {cfg.batch_size}"
        )
    total = cfg.epochs * steps_per_epoch
    end = min(total, cfg.max_steps or total)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    ckpt = state.load_checkpoint(run_dir, stage) if resume and run_dir is not None else None
    if ckpt is not None:
        check_resumable(ckpt, cfg, _data_tag(data), stage)
        check_same_model(ckpt, model, stage)
    if resume and run_dir is not None and (done := state.read_done(run_dir, stage)) is not None:
        if ckpt is None or done["steps"] >= end:  # nothing more to train: the finished stage's result
            if ckpt is not None:
                _restore(ckpt, model, None, extra)
                if cfg.keep == "best" and ckpt.get("best", {}).get("epoch"):
                    model.load_state_dict(state.load_best(run_dir, stage, device))
            model.eval()
            final = done.get("test")
            return FitResult(
                stage, done["steps"], True, done.get("history", []), EvalResult(**final) if final else None
            )

    torch.manual_seed(cfg.seed)
    if teacher is not None:
        if any(p.device != device for p in teacher.parameters()) or cfg.channels_last:
            teacher = copy.deepcopy(teacher).to(device)  # never move the caller's model
            if cfg.channels_last:
                teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        teacher.eval()
    optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    step, resumed_at = 0, None
    sums = torch.zeros(3, device=device)  # summed loss, correct, count over the epoch so far
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"top1": -1.0, "epoch": 0, "eval": None}  # the epoch with the best eval top-1
    if ckpt is not None:
        _restore(ckpt, model, optimizer, extra)
        step = resumed_at = int(ckpt["step"])
        sums = ckpt["epoch_sums"].to(device)
        history = list(ckpt["history"])
        best = dict(ckpt.get("best", best))
        if run_dir is not None and info.is_main:  # steps logged after the checkpoint are logged again
            state.drop_metrics_after(run_dir, stage, step)
            state.clear_done(run_dir, stage)  # a finished stage trained further is unfinished until done

    net: nn.Module = DistributedDataParallel(model) if info.enabled else model
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]  # shares the model's parameters
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    progress = Progress(stage, end, steps_per_epoch, enabled=info.is_main and cfg.verbose, start=step)
    log_sums, log_time = sums.clone(), time.perf_counter()
    epoch_time = time.perf_counter()
    test: EvalResult | None = None
    best_state: dict[str, Tensor] | None = None

    def forward(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and loss of one batch: CE (or distillation from the teacher) plus the extra loss."""
        logits = net(x)
        if teacher is None:
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = distill_loss(
                logits, teacher_logits, y, cfg.kd_temperature, cfg.kd_alpha, cfg.label_smoothing
            )
        if extra_loss is not None:
            loss = loss + extra_loss(model, x, logits)
        return logits, loss

    def save() -> None:
        if run_dir is not None and info.is_main:
            train_state = _train_state(model, optimizer, step, sums, history, cfg, extra)
            state.save_checkpoint(run_dir, stage, {**train_state, "data": _data_tag(data), "best": best})

    with DeferredInterrupt() as interrupt:
        try:
            while step < end:
                epoch, start = divmod(step, steps_per_epoch)
                loader.set_epoch(epoch)
                model.train()
                for x, y in loader.iter_from(start):
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    factor = lr_factor(step, end, warmup, cfg.schedule)
                    for g, base in zip(optimizer.param_groups, base_lrs, strict=True):
                        g["lr"] = base * factor
                    with autocast:
                        logits, loss = forward(x, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if after_backward is not None:
                        after_backward(model)
                    optimizer.step()
                    with torch.no_grad():  # running sums stay on the device: no sync per step
                        sums[0] += loss.detach().float() * len(y)
                        sums[1] += (logits.argmax(1) == y).sum()
                        sums[2] += len(y)
                    step += 1
                    if step % cfg.log_every == 0 or step == end:
                        now = time.perf_counter()
                        window = distributed.all_reduce_sum((sums - log_sums).clone()).tolist()
                        record = {
                            "stage": stage, "kind": "step", "step": step, "epoch": step / steps_per_epoch,
                            "lr": optimizer.param_groups[0]["lr"], **_rates(window, now - log_time),
                        }  # fmt: skip
                        log_sums, log_time = sums.clone(), now
                        progress.update(step, record)
                        if run_dir is not None and info.is_main:
                            state.append_metrics(run_dir, record)
                    if interrupt.requested and step % steps_per_epoch:
                        save()
                        raise KeyboardInterrupt
                    if step >= end:
                        break
                if step % steps_per_epoch == 0 or step >= end:
                    epoch_sums = distributed.all_reduce_sum(sums.clone()).tolist()
                    seconds = time.perf_counter() - epoch_time
                    record = {
                        "stage": stage, "kind": "epoch", "epoch": math.ceil(step / steps_per_epoch),
                        "step": step, "seconds": seconds, **_rates(epoch_sums, seconds),
                    }  # fmt: skip
                    if cfg.eval_every_epoch or step >= end:
                        test = evaluate(model, data, data.eval_split, batch_size=cfg.eval_batch_size,
                                        device=device, channels_last=cfg.channels_last,
                                        workers=cfg.workers)  # fmt: skip
                        record.update(
                            eval_split=data.eval_split, eval_top1=test.top1, eval_top5=test.top5,
                            eval_loss=test.loss,
                        )  # fmt: skip
                    history.append(record)
                    if test is not None and "eval_top1" in record and test.top1 > best["top1"]:
                        best = {"top1": test.top1, "epoch": len(history), "eval": vars(test)}
                        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                        if run_dir is not None and info.is_main:
                            state.save_best(run_dir, stage, best_state)
                    sums.zero_()
                    log_sums = sums.clone()
                    progress.epoch_end(record)
                    if run_dir is not None and info.is_main:
                        state.append_metrics(run_dir, record)
                    if on_epoch_end is not None:
                        on_epoch_end(model, len(history), record)
                    save()
                    epoch_time = time.perf_counter()
                    if interrupt.requested:  # saved just above
                        raise KeyboardInterrupt
        finally:
            progress.close()
    if synced:
        distributed.to_plain_batchnorm(model)  # the caller exports it: plain BatchNorm again
    model.eval()
    if run_dir is not None and info.is_main:
        save()  # the last step's state, to resume from
    if cfg.keep == "best" and best["epoch"]:
        if best_state is None:  # the best epoch was before a resume
            best_state = state.load_best(run_dir, stage, device) if run_dir is not None else None
        if best_state is not None:
            model.load_state_dict(best_state)
            test = EvalResult(**best["eval"])
    if run_dir is not None and info.is_main:
        done = {
            "stage": stage, "steps": step, "history": history,
            "test": vars(test) if test is not None else None,
        }  # fmt: skip
        state.mark_done(run_dir, stage, done)
    distributed.barrier()
    return FitResult(stage, step, True, history, test, resumed_at)

"""TrainConfig: every knob of a training run, in one typed, serialisable place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from graphprune.errors import GraphpruneError

Schedule = Literal["cosine", "onecycle"]
Keep = Literal["last", "best"]


@dataclass
class TrainConfig:
    """Hyper-parameters of `fit`. The defaults are the recipe of the shared CIFAR baselines.

    `max_steps` caps a run (short benchmark budgets, smoke runs, CI); the learning-rate schedule spans
    the steps actually run, min(`epochs` x steps per epoch, `max_steps`), so a capped run still warms up
    and anneals. `kd_*` apply only when `fit` is given a teacher. `threads` defaults to every
    CPU core (shared among the processes of a distributed run on one machine). `workers` DataLoader
    processes decode a streamed dataset (unused when it is decoded into memory). `keep="best"` ends the
    run with the weights of the epoch with the best top-1 on the evaluation split (the validation split
    when one is held out). `compile` runs the training forward through `torch.compile` (inductor);
    evaluation and the saved weights are the plain model's. `resume_override` lets a resume change
    fields other than `RESUMABLE_CHANGES`.
    """

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 0.02
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: Schedule = "onecycle"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    kd_temperature: float = 4.0
    kd_alpha: float = 0.9
    seed: int = 0
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    augment: bool = True
    log_every: int = 50
    verbose: bool = True
    eval_every_epoch: bool = True
    eval_batch_size: int = 512
    device: str = "auto"
    threads: int | None = None
    keep: Keep = "last"
    sync_bn: bool = False
    workers: int = 0
    resume_override: bool = False

    # What a resume may change without `resume_override`: the length of the run and how it is watched.
    RESUMABLE_CHANGES = (
        "epochs", "max_steps", "verbose", "log_every", "eval_every_epoch", "eval_batch_size", "device",
        "threads", "keep", "resume_override", "workers", "compile",
    )  # fmt: skip

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (
                self.schedule in ("cosine", "onecycle"),
                f"schedule must be cosine or onecycle, got {self.schedule!r}",
            ),
            (
                0 <= self.warmup_epochs <= self.epochs,
                f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}",
            ),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.kd_temperature > 0, f"kd_temperature must be > 0, got {self.kd_temperature}"),
            (0 <= self.kd_alpha <= 1, f"kd_alpha must be in [0, 1], got {self.kd_alpha}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
            (self.keep in ("last", "best"), f"keep must be last or best, got {self.keep!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GraphpruneError(f"bad training config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

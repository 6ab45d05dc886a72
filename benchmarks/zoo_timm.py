"""The timm zoo: which models the coverage page runs, and the L1 check run on each.

Used by `benchmarks/zoo_coverage.py --zoo timm` (docs/coverage_timm.md) and by the CI subset
(`tests/test_zoo_timm.py`). Every model comes from the `timm:NAME` MODEL spec (random init, seeded), at a
small input (`SIZE`); models that fix their input size are created for it (`img_size`).

Beside graphprune's check, `check_tp` runs Torch-Pruning on the same model (`benchmarks/zoo_tp.py`: ratio
0.5, checked against a masked reference), in its own time limit and never raising: a Torch-Pruning
failure or hang leaves graphprune's columns as they are.
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

SIZE = 96
TARGET = 0.5  # of the FLOPs, with L1
MAX_RATIO = 0.9  # of a group's channels, plan_by_criterion's default
TP_TIMEOUT = 300  # s for Torch-Pruning on one model: ~1 s on most, minutes where its graph meets reshapes

# At least one architecture per timm CNN family (and the hybrids a deployment engineer meets).
TIMM_MODELS: dict[str, tuple[str, ...]] = {
    "ResNet": (
        "resnet10t", "resnet18", "resnet18d", "resnet26t", "resnext26ts", "seresnext26d_32x4d",
        "ecaresnet26t", "skresnet18", "gcresnet33ts", "resnetblur18", "legacy_seresnet18",
    ),
    "ResNeSt": ("resnest14d", "resnest26d"),
    "Res2Net": ("res2net50_14w_8s",),
    "RegNet": ("regnetx_002", "regnety_002", "regnetx_004", "regnety_008", "regnetz_b16"),
    "EfficientNet": (
        "efficientnet_b0", "efficientnet_lite0", "efficientnet_es", "tf_efficientnet_b0",
        "tf_efficientnet_lite0", "tf_efficientnetv2_b0", "efficientnetv2_rw_t", "gc_efficientnetv2_rw_t",
    ),
    "MobileNet": (
        "mobilenetv1_100", "mobilenetv2_050", "mobilenetv2_100", "mobilenetv3_small_050",
        "mobilenetv3_large_100", "tf_mobilenetv3_small_075", "mobilenetv4_conv_small",
        "mobilenetv4_hybrid_medium", "lcnet_050",
    ),
    "NAS": (
        "mnasnet_100", "semnasnet_050", "spnasnet_100", "fbnetc_100", "tinynet_a", "hardcorenas_a",
        "rexnet_100",
    ),
    "MixNet": ("mixnet_s", "tf_mixnet_s"),
    "GhostNet": ("ghostnet_100", "ghostnetv2_100", "repghostnet_050"),
    "RepVGG / MobileOne": ("repvgg_a0", "repvgg_b0", "mobileone_s0", "mobileone_s1"),
    "DLA": ("dla34", "dla46_c", "dla60x_c"),
    "DPN": ("dpn48b",),
    "HRNet": ("hrnet_w18_small", "hrnet_w18_small_v2"),
    "CSP / Darknet": ("cspresnet50", "cs3darknet_s", "darknet17"),
    "VoVNet": ("ese_vovnet19b_dw",),
    "DenseNet": ("densenet121", "densenetblur121d"),
    "Inception / Xception": ("inception_v3", "xception41"),
    "ConvNeXt": ("convnext_atto", "convnext_femto", "convnextv2_atto"),
    "EdgeNeXt": ("edgenext_xx_small",),
    "FastViT": ("fastvit_t8",),
    "EfficientFormer": ("efficientformer_l1", "efficientformerv2_s0"),
    "LeViT": ("levit_128s",),
    "NFNet": ("nf_resnet26",),
    "Other CNNs": (
        "selecsls42b", "gernet_s", "hgnetv2_b0", "rdnet_tiny", "starnet_s1", "poolformer_s12",
    ),
    "Attention hybrids": ("mobilevit_xxs", "efficientvit_m0", "efficientvit_b0", "tiny_vit_5m_224"),
}  # fmt: skip


def timm_models() -> list[str]:
    return [m for family in TIMM_MODELS.values() for m in family]


def family_of(name: str) -> str:
    return next(f for f, models in TIMM_MODELS.items() if name in models)


def build(name: str, size: int = SIZE) -> tuple[nn.Module, torch.Tensor]:
    """timm model `name` through the `timm:NAME` spec (random, seeded, eval mode) and its example input,
    `size` px or, for a model that only runs at its own input size (EfficientFormer), that size."""
    from graphprune.errors import ModelSpecError
    from graphprune.modelspec import resolve_model

    try:
        rm = resolve_model(f"timm:{name}", input_shape=(1, 3, size, size))
    except ModelSpecError as exc:
        if "does not fit" not in str(exc):
            raise
        rm = resolve_model(f"timm:{name}")
    return rm.model, rm.example_inputs[0]


@dataclass(frozen=True)
class TimmResult:
    """What the L1 pipeline did on one model. `stage` is where it stopped ('done' on success)."""

    model: str
    family: str
    stage: str
    error: str = ""
    groups: int = 0
    prunable_groups: int = 0
    prunable_channels: float = 0.0  # share of the channel positions in prunable groups
    blocks: int = 0
    flops: int = 0
    floor: float = 1.0  # the least FLOPs share L1 can reach (MAX_RATIO of every prunable group)
    l1_flops: float = 1.0  # FLOPs share of the L1 plan, counted on the rewritten model
    onnx_max_rel_error: float = 0.0
    unprunable_reasons: tuple[str, ...] = ()
    seconds: float = 0.0
    input_size: int = SIZE

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_l1(name: str, model: nn.Module, x: torch.Tensor, *, export: bool = True) -> TimmResult:
    """Trace, L1 plan to TARGET of the FLOPs, apply (verified against the masked reference), export.

    Never raises for a model-specific failure: the stage and the error say where and why."""
    import graphprune as gp
    from graphprune.criteria import plan_by_criterion
    from graphprune.efficiency import FlopsModel
    from graphprune.errors import GraphpruneError, first_line

    start = time.perf_counter()
    stage, partial = "trace", {}
    try:
        pg = gp.trace(model, x)
        sizes = [g.size for g in pg.groups]
        caps = {g.id: list(range(min(g.size - 1, int(g.size * MAX_RATIO)))) for g in pg.prunable_groups}
        partial = dict(
            groups=len(pg.groups),
            prunable_groups=len(pg.prunable_groups),
            prunable_channels=sum(g.size for g in pg.prunable_groups) / max(1, sum(sizes)),
            blocks=len(pg.blocks),
            flops=pg.flops,
            floor=FlopsModel(pg).flops(caps) / pg.flops,
            unprunable_reasons=tuple(
                sorted({(g.reason or "").split(" (at ")[0] for g in pg.groups if not g.prunable})
            ),
        )
        stage = "plan"
        plan = plan_by_criterion(pg, "l1", TARGET, max_ratio=MAX_RATIO)
        stage = "apply"
        slim = gp.apply(pg, plan)  # verified against the original with the planned channels masked
        partial["l1_flops"] = gp.count_flops(slim, x) / pg.flops
        if export:
            stage = "export"
            with tempfile.TemporaryDirectory() as tmp:
                report = gp.export_onnx(slim, x, Path(tmp) / f"{name}.onnx")
            partial["onnx_max_rel_error"] = report.max_rel_error
        stage, error = "done", ""
    except GraphpruneError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - the page lists every failure, whatever its kind
        error = first_line(exc, with_type=True)
    seconds = time.perf_counter() - start
    size = int(x.shape[-1])
    return TimmResult(name, family_of(name), stage, error, seconds=seconds, input_size=size, **partial)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TimmTPResult:
    """Torch-Pruning at ratio 0.5 on one model, its masked-reference check (`zoo_tp.tp_check`'s keys).

    `tp_status`: "ok", "error: <one line>" (a timeout too) or "not installed"; `tp_runs`: the pruned model
    runs on the example (None when pruning failed); `tp_matches_masked`: True/False, None with the reason
    in `tp_note`; `tp_flops`, `tp_params`: shares kept, by Torch-Pruning's own counter."""

    tp_status: str = "not run"
    tp_runs: bool | None = None
    tp_matches_masked: bool | None = None
    tp_rel_error: float | None = None
    tp_note: str = ""
    tp_flops: float | None = None
    tp_params: float | None = None
    tp_groups: int = 0
    tp_seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _TPTimeout(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` inside Torch-Pruning swallows it."""


def check_tp(model: nn.Module, x: torch.Tensor, *, timeout: int = TP_TIMEOUT) -> TimmTPResult:
    """Torch-Pruning on a copy of `model` (`zoo_tp.tp_check`), stopped after `timeout` seconds (an alarm,
    where the platform and thread allow one). Never raises."""
    from zoo_tp import tp_check

    start = time.perf_counter()
    alarm = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()

    def expire(_signum: int, _frame: object) -> None:
        raise _TPTimeout

    previous = signal.signal(signal.SIGALRM, expire) if alarm else None
    try:
        if alarm:
            signal.alarm(timeout)
        return TimmTPResult(**tp_check(model, x))  # type: ignore[arg-type]
    except _TPTimeout:
        return TimmTPResult(f"error: timed out after {timeout} s", tp_seconds=time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - tp_check catches the model's failures; this is a backstop
        from graphprune.errors import first_line

        status = f"error: {first_line(exc, with_type=True)}"
        return TimmTPResult(status, tp_seconds=time.perf_counter() - start)
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

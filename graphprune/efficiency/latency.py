"""The latency side of the Efficiency Module: onnxruntime latency of a sub-network, predicted from its
kept channels and blocks, by a model fitted to sub-networks whose latency was measured on this machine.

Predictor: latency ~ c0 + sum over K stages (contiguous runs of conv / linear layers in graph order) of
terms in kept MACs, kept output activations and alive layers, with non-negative coefficients
(non-negative least squares). The terms follow onnxruntime's NCHWc layout (`nchwc.NchwcLayout`, probed
from onnxruntime): a layer its blocked kernels take computes its channels padded to whole blocks, and
every other layer runs a slower path, so a sub-network with fewer channels in the wrong counts can be
slower than the whole model. MACs are split four ways (blocked or not, dense or depthwise) and
activations two ways. MACs, activations and layer counts are exact torch functions of the keep values
(`DifferentiableFlops.layer_keeps`), so the prediction is differentiable in the gates and blocks (the
layout and the padding are constants of each step).
Each sub-network is timed beside the unpruned model in alternating rounds (`PairedTimer`): its time is
the unpruned model's (the first sample) times the ratio of the two, so that the drift of a shared
machine between samples cancels. Measurements are cached on disk (JSON lines), keyed by architecture,
input shape, threads, the onnxruntime version and this protocol; collecting again only measures what
the cache lacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphprune.efficiency.diff_flops import DifferentiableFlops
from graphprune.efficiency.nchwc import NchwcLayout, probe_layout
from graphprune.errors import GraphpruneError
from graphprune.fileio import write_text
from graphprune.graph import PrunableGraph
from graphprune.plan import PruningPlan
from graphprune.trace import META_KEY, TensorSpec

ALIGN = 8
"""The multiple that half the sampled sub-networks round every kept count to: what `--round-to 8` plans
look like, so that the predictor sees them."""
PROTOCOL = "paired-p10"
"""How a sample is timed (part of the cache key): the ratio of its 10th percentile to the unpruned
model's, the two timed in alternating rounds, times the unpruned model's own time."""
TERMS = ("nchwc", "plain")
"""The predictor's terms: NCHWc-aware (default), or the first predictor's (MACs, activations and alive
layers per stage)."""


class LatencyModelError(GraphpruneError):
    """A latency model cannot be built, fitted, read or used for this model."""


@dataclass(frozen=True)
class LatencySample:
    """one measured sub-network: kept channel count per group, removed blocks, milliseconds (p10)."""

    kept: dict[str, int]
    blocks: list[str]
    ms: float


def cache_key(pg: PrunableGraph, threads: int) -> str:
    """What a measurement depends on: architecture, input shapes, threads, onnxruntime version, protocol."""
    import onnxruntime

    text = json.dumps([pg.arch_hash, pg.input_shapes, threads, onnxruntime.__version__, PROTOCOL])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kept_plan(pg: PrunableGraph, kept: Mapping[str, int], blocks: Sequence[str] = ()) -> PruningPlan:
    """A plan keeping the first `kept[gid]` indices of each group (latency depends on counts only)."""
    plan = PruningPlan.for_graph(pg)
    for gid, k in kept.items():
        size = pg.group(gid).size
        if k < size:
            plan.remove_channels(gid, range(k, size))
    for b in blocks:
        plan.remove_block(b)
    return plan


def plan_counts(pg: PrunableGraph, plan: PruningPlan) -> dict[str, int]:
    return {g.id: g.size - len(plan.channels.get(g.id, ())) for g in pg.prunable_groups}


def random_sample_plan(
    pg: PrunableGraph, rng: random.Random, min_keep: float = 0.25, block_prob: float = 0.15, align: int = 0
) -> tuple[dict[str, int], list[str]]:
    """Random kept counts (a global keep level, jittered per group) and random removed blocks. With
    `align`, half the samples keep multiples of it in every group that has one to keep (what
    `--round-to` plans look like), so that the aligned regime is measured, not only met by chance."""
    level = rng.uniform(min_keep, 1.0)
    rounded = bool(align) and rng.random() < 0.5
    kept = {}
    for g in pg.prunable_groups:
        share = min(1.0, max(min_keep, level * rng.uniform(0.7, 1.3)))
        k = max(1, min(g.size, round(share * g.size)))
        if rounded and g.size >= align:
            k = min(g.size // align * align, max(align, round(k / align) * align))
        kept[g.id] = k
    blocks = [b.name for b in pg.blocks if rng.random() < block_prob * rng.uniform(0, 2)]
    return kept, blocks


def export_plan(pg: PrunableGraph, plan: PruningPlan, path: Path) -> None:
    """Write the model `plan` leaves to `path` for timing: the fast TorchScript exporter where it can,
    no simplification or verification (`gp.apply` itself is tested lossless)."""
    from graphprune.rewrite import apply

    slim = apply(pg, plan, verify=False).eval()
    try:
        quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
        with warnings.catch_warnings(), torch.no_grad(), quiet[0], quiet[1]:
            warnings.simplefilter("ignore")
            torch.onnx.export(slim, pg.example_inputs, str(path), dynamo=False, opset_version=17)
    except Exception:  # an op the TorchScript exporter lacks: the (slower) dynamo exporter
        from graphprune.export import export_onnx

        export_onnx(slim, pg.example_inputs, path, dynamic_batch=False, simplify=False)


def measure_plan(pg: PrunableGraph, plan: PruningPlan, *, threads: int = 1, runs: int = 30) -> float:
    """onnxruntime latency (ms, 10th percentile of `runs`) of the model `plan` leaves (`export_plan`)."""
    from graphprune.latency import ort_latency

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub.onnx"
        export_plan(pg, plan, path)
        shapes = [list(t.shape) for t in pg.example_inputs]
        # the 10th percentile: on a shared machine, contention only ever adds time
        return float(ort_latency(path, shapes, warmup=5, runs=runs, threads=threads)["p10_ms"])


def paired_plan_ratio(
    pg: PrunableGraph, plan: PruningPlan, reference: str | os.PathLike[str], *, threads: int = 1,
    rounds: int = 15, runs: int = 20,
) -> float:  # fmt: skip
    """The latency of the model `plan` leaves over that of the ONNX file `reference`: the ratio of their
    10th percentiles, the two timed in alternating rounds (`paired_latency`), so that both see the same
    spells of a shared machine's drift."""
    from graphprune.latency import paired_latency

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub.onnx"
        export_plan(pg, plan, path)
        shapes = [list(t.shape) for t in pg.example_inputs]
        timed = paired_latency(reference, path, shapes, rounds=rounds, runs=runs, threads=threads)
        return float(timed["p10_ratio"])


class PairedTimer:
    """Milliseconds of the sub-networks of `pg`: the unpruned model's time (measured here, or given) times
    the ratio timed beside it (`paired_plan_ratio`, `rounds` rounds sharing `runs` timed calls). Keeps
    the unpruned model's ONNX file in `directory` (None: a temporary folder removed with the timer)."""

    def __init__(
        self, pg: PrunableGraph, directory: str | os.PathLike[str] | None, *, threads: int = 1,
        runs: int = 30, rounds: int = 5, reference_ms: float | None = None,
    ) -> None:  # fmt: skip
        whole = PruningPlan.for_graph(pg)
        self.pg, self.threads, self.rounds, self.runs = pg, threads, rounds, max(1, runs // rounds)
        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="graphprune-latency-")
            directory = self._tmp.name
        self.reference = Path(directory) / "latency_reference.onnx"
        self.reference.parent.mkdir(parents=True, exist_ok=True)
        export_plan(pg, whole, self.reference)
        self.reference_ms = reference_ms or measure_plan(pg, whole, threads=threads, runs=runs)

    def __call__(self, plan: PruningPlan) -> float:
        ratio = paired_plan_ratio(
            self.pg, plan, self.reference, threads=self.threads, rounds=self.rounds, runs=self.runs
        )
        return self.reference_ms * ratio


MIN_SAMPLE_SECONDS = 0.25
"""Each sample's timed calls per model last at least this long at the unpruned model's speed, so that a
1.5 ms CIFAR ResNet-56 gets 170 calls rather than 30 (its noise floor: docs/results/predictor_error.md)."""


def sample_runs(reference_ms: float, runs: int, min_seconds: float = MIN_SAMPLE_SECONDS) -> int:
    """Timed calls per model for one sample: at least `runs`, and at least `min_seconds` of the unpruned
    model's calls, in whole rounds of `PairedTimer`'s default 5."""
    wanted = max(runs, math.ceil(1000 * min_seconds / max(reference_ms, 1e-6)))
    return 5 * math.ceil(wanted / 5)


class SampleCache:
    """Measured samples of one (model, input shape, threads, onnxruntime) key, as JSON lines on disk."""

    def __init__(self, directory: str | os.PathLike[str], key: str) -> None:
        self.path = Path(directory) / f"latency-{key}.jsonl"

    def load(self) -> list[LatencySample]:
        if not self.path.exists():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                d = json.loads(line)
                out.append(
                    LatencySample(
                        {k: int(v) for k, v in d["kept"].items()}, list(d["blocks"]), float(d["ms"])
                    )
                )
            except (ValueError, KeyError, TypeError):
                raise LatencyModelError(f"{self.path}: corrupt latency sample at line {n}") from None
        return out

    def save(self, samples: Sequence[LatencySample]) -> None:
        write_text(self.path, "".join(json.dumps(asdict(s)) + "\n" for s in samples))


def collect_samples(
    pg: PrunableGraph,
    n: int,
    *,
    threads: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    runs: int = 30,
    on_sample: Callable[[int, int], None] | None = None,
    min_seconds: float = MIN_SAMPLE_SECONDS,
) -> list[LatencySample]:
    """`n` measured sub-networks (the unpruned model first), reusing and extending the on-disk cache.
    Each is timed beside the unpruned model, `sample_runs` calls of each."""
    cache = SampleCache(cache_dir, cache_key(pg, threads)) if cache_dir is not None else None
    samples = cache.load() if cache is not None else []
    rng = random.Random(seed + len(samples))
    with tempfile.TemporaryDirectory() as tmp:
        timer: PairedTimer | None = None
        while len(samples) < n:
            if not samples:
                whole = {g.id: g.size for g in pg.prunable_groups}
                ms = measure_plan(pg, kept_plan(pg, whole), threads=threads, runs=runs)
                samples.append(LatencySample(whole, [], ms))
            else:
                kept, blocks = random_sample_plan(pg, rng, align=ALIGN)
                if timer is None:
                    many = sample_runs(samples[0].ms, runs, min_seconds)
                    timer = PairedTimer(pg, tmp, threads=threads, runs=many, reference_ms=samples[0].ms)
                samples.append(LatencySample(kept, blocks, timer(kept_plan(pg, kept, blocks))))
            if cache is not None:
                cache.save(samples)
            if on_sample is not None:
                on_sample(len(samples), n)
    return samples[:n]


class LatencyPredictor(nn.Module):
    """Predicted onnxruntime milliseconds of a sub-network, differentiable in keep values and blocks.
    `terms="plain"` gives the first predictor (kept MACs, activations and alive layers per stage only)."""

    coef: torch.Tensor
    scale: torch.Tensor
    stage_of: torch.Tensor
    acts: torch.Tensor
    conv: torch.Tensor

    def __init__(
        self, pg: PrunableGraph, stages: int = 3, terms: str = "nchwc", layout: NchwcLayout | None = None
    ) -> None:
        super().__init__()
        if terms not in TERMS:
            raise LatencyModelError(f"unknown latency terms {terms!r}; known: {', '.join(TERMS)}")
        self.terms = terms
        self.layout = layout if layout is not None or terms == "plain" else probe_layout()
        self.flops = DifferentiableFlops(pg)
        nodes = {n.name: n for n in pg.gm.graph.nodes}
        modules = dict(pg.gm.named_modules())
        spatial, conv = [], []
        for name in self.flops.layer_nodes:
            spec = nodes[name].meta.get(META_KEY)
            shape = spec.shape if isinstance(spec, TensorSpec) else ()
            spatial.append(float(math.prod(shape[2:])) if len(shape) > 2 else 1.0)
            conv.append(isinstance(modules.get(str(nodes[name].target)), nn.modules.conv._ConvNd))
        n_layers = len(spatial)
        self.stages = max(1, min(stages, n_layers))
        stage = torch.tensor([i * self.stages // max(1, n_layers) for i in range(n_layers)])
        # per-layer activation elements of its full output
        acts = torch.tensor(spatial, dtype=torch.float64) * self.flops.out_channels
        self.register_buffer("stage_of", stage, persistent=False)
        self.register_buffer("acts", acts, persistent=False)
        self.register_buffer("conv", torch.tensor(conv, dtype=torch.bool), persistent=False)
        per_stage = 7 if terms == "nchwc" else 3
        self.register_buffer("coef", torch.zeros(1 + per_stage * self.stages, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(1 + per_stage * self.stages, dtype=torch.float64))
        self.round_to = 1
        """With NCHWc terms, layers are costed at their counts rounded to this (a method's read-off
        rounding): gates trained toward a budget are then costed as the architecture they will leave."""
        self.key = ""
        self.report: dict[str, Any] = {}

    def features(
        self, keep: Mapping[str, torch.Tensor] | None = None, blocks: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """[1, per stage: kept MACs, kept output activations, alive layers] (scaled); with the NCHWc
        terms, the MACs of blocked dense, blocked depthwise, other dense and other depthwise layers (a
        blocked layer's at its padded counts), then the activations of blocked and other layers, then
        alive layers."""
        fl = self.flops
        keep_out, keep_in, alive = fl.layer_keeps(keep, blocks)
        macs = fl.layer_flops * keep_out * keep_in * alive
        acts = keep_out * alive * self.acts
        parts = [macs, acts, alive]
        if self.terms == "nchwc":
            assert self.layout is not None
            with torch.no_grad():
                out_now = torch.round(keep_out * fl.out_channels).clamp_min(1)
                in_now = torch.round(keep_in * fl.in_channels).clamp_min(1)
                out, inp = self._planned(out_now, fl.out_channels), self._planned(in_now, fl.in_channels)
                depthwise = ~fl.in_scales
                blocked = self.layout.blocked(out, inp, depthwise, self.conv)
                # a layer costs its planned counts, padded to whole blocks where blocked
                pad_out = torch.where(blocked, self.layout.padded(out), out) / out_now
                wide_in = blocked & fl.in_scales & (inp >= self.layout.block)
                pad_in = torch.where(wide_in, self.layout.padded(inp), inp) / in_now
                b, dw = blocked.to(macs.dtype), depthwise.to(macs.dtype)
            padded = macs * pad_out * pad_in
            parts = [padded * b * (1 - dw), padded * b * dw, padded * (1 - b) * (1 - dw),
                     padded * (1 - b) * dw, acts * pad_out * b, acts * pad_out * (1 - b), alive]  # fmt: skip
        per_stage = [
            torch.zeros(self.stages, dtype=torch.float64, device=macs.device).index_add(0, self.stage_of, p)
            for p in parts
        ]
        return torch.cat([macs.new_ones(1), *per_stage]) / self.scale

    def _planned(self, count: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """The count a read-off rounding to `round_to` makes of `count` (a multiple of it, or the whole)."""
        r = self.round_to
        if r <= 1:
            return count
        return torch.where(full <= r, count, torch.minimum(full, (torch.round(count / r) * r).clamp_min(r)))

    def forward(
        self, keep: Mapping[str, torch.Tensor] | None = None, blocks: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return (self.features(keep, blocks) * self.coef).sum()

    def sample_features(self, s: LatencySample) -> torch.Tensor:
        keep = {gid: torch.tensor(float(k)) for gid, k in s.kept.items() if gid in self.flops.sizes}
        blocks = {b: torch.tensor(0.0) for b in s.blocks}
        with torch.no_grad():
            return self.features(keep, blocks)

    def predict_counts(self, kept: Mapping[str, int], blocks: Sequence[str] = ()) -> float:
        return float((self.sample_features(LatencySample(dict(kept), list(blocks), 0.0)) * self.coef).sum())

    def fit(self, samples: Sequence[LatencySample], holdout: float = 0.2, seed: int = 0) -> dict[str, Any]:
        """Fit on all but a held-out share, report MAPE and Spearman rank correlation on the held-out
        samples, then refit on all of them."""
        from scipy.optimize import nnls
        from scipy.stats import spearmanr

        if len(samples) < 4:
            raise LatencyModelError(f"need at least 4 latency samples to fit, got {len(samples)}")
        self.scale.fill_(1.0)
        X = torch.stack([self.sample_features(s) for s in samples]).numpy()
        scale = np.maximum(np.abs(X).max(axis=0), 1e-12)
        self.scale.copy_(torch.from_numpy(scale))
        X = X / scale
        y = np.array([s.ms for s in samples])
        order = list(range(len(samples)))
        random.Random(seed).shuffle(order)
        n_test = max(1, int(round(holdout * len(samples)))) if len(samples) >= 8 else 0
        test, train = order[:n_test], order[n_test:]
        report: dict[str, Any] = {"samples": len(samples), "held_out": n_test}
        if n_test:
            coef, _ = nnls(X[train] / y[train, None], np.ones(len(train)))  # relative error least squares
            pred = X[test] @ coef
            report["mape"] = float(np.mean(np.abs(pred - y[test]) / y[test]))
            report["spearman"] = float(spearmanr(pred, y[test]).statistic) if n_test > 2 else float("nan")
        coef, _ = nnls(X / y[:, None], np.ones(len(samples)))
        self.coef.copy_(torch.from_numpy(coef))
        fitted = X @ coef
        report["train_mape"] = float(np.mean(np.abs(fitted - y) / y))
        self.report = report
        return report

    # ----- persistence
    def state(self) -> dict[str, Any]:
        return {
            "format": "graphprune.latency_model",
            "key": self.key,
            "stages": self.stages,
            "terms": self.terms,
            "layout": asdict(self.layout) if self.layout is not None else None,
            "coef": self.coef.tolist(),
            "scale": self.scale.tolist(),
            "report": self.report,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text(path, json.dumps(self.state(), indent=1) + "\n")

    @classmethod
    def load(cls, pg: PrunableGraph, path: str | os.PathLike[str], threads: int = 1) -> LatencyPredictor:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LatencyModelError(f"cannot read latency model {path}: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != "graphprune.latency_model":
            raise LatencyModelError(f"{path} is not a graphprune latency model")
        if d.get("key") != cache_key(pg, threads):
            raise LatencyModelError(
                f"{path} was fitted for another model, input shape, thread count or onnxruntime version"
            )
        if "terms" not in d and d.get("align"):
            raise LatencyModelError(
                f"{path} was fitted with the earlier alignment terms; fit it again (its samples are cached)"
            )
        terms = str(d.get("terms", "plain"))  # files from before the terms: the first predictor's
        layout = NchwcLayout(**d["layout"]) if d.get("layout") else None
        if terms == "nchwc" and layout != (here := probe_layout()):
            raise LatencyModelError(
                f"{path} was fitted for onnxruntime's NCHWc layout {layout}, this machine has {here}"
            )
        model = cls(pg, int(d["stages"]), terms=terms, layout=layout)
        if len(d["coef"]) != len(model.coef) or len(d["scale"]) != len(model.scale):
            raise LatencyModelError(
                f"{path}: {len(d['coef'])} coefficients, but stages {model.stages} and terms {model.terms} "
                f"need {len(model.coef)}"
            )
        model.coef.copy_(torch.tensor(d["coef"], dtype=torch.float64))
        model.scale.copy_(torch.tensor(d["scale"], dtype=torch.float64))
        model.key, model.report = d["key"], dict(d.get("report") or {})
        return model


def build_latency_model(
    pg: PrunableGraph,
    *,
    samples: int = 60,
    threads: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    stages: int = 3,
    runs: int = 30,
    on_sample: Callable[[int, int], None] | None = None,
    seed: int = 0,
) -> LatencyPredictor:
    """Collect (or reuse) `samples` measured sub-networks and fit a predictor; `.report` has its error."""
    data = collect_samples(
        pg, samples, threads=threads, cache_dir=cache_dir, runs=runs, on_sample=on_sample, seed=seed
    )
    model = LatencyPredictor(pg, stages)
    model.key = cache_key(pg, threads)
    model.fit(data)
    model.report["threads"] = threads
    return model

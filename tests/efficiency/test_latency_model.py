from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from support.archs import random_toynet

import graphprune as gp
from graphprune.efficiency.latency import (
    LatencyModelError,
    LatencyPredictor,
    LatencySample,
    SampleCache,
    cache_key,
    collect_samples,
    random_sample_plan,
)
from graphprune.models import get_model


@pytest.fixture(scope="module")
def resnet20() -> gp.PrunableGraph:
    torch.manual_seed(0)
    return gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))


def synthetic_ms(pg: gp.PrunableGraph, kept: dict[str, int], blocks: list[str]) -> float:
    """A known function of the channel counts: fixed overhead + MACs + per-layer cost of live layers."""
    plan = gp.PruningPlan.for_graph(pg)
    for gid, k in kept.items():
        plan.remove_channels(gid, range(k, pg.group(gid).size))
    for b in blocks:
        plan.remove_block(b)
    from graphprune.efficiency import FlopsModel

    macs = FlopsModel(pg).flops(plan.channels, plan.blocks)
    return 0.2 + 3e-8 * macs + 0.01 * (len(pg.blocks) - len(blocks))


def test_the_predictor_fits_a_known_function_of_the_channel_counts(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    rng = random.Random(0)
    samples = [LatencySample(*random_sample_plan(pg, rng), ms=0.0) for _ in range(60)]
    samples = [LatencySample(s.kept, s.blocks, synthetic_ms(pg, s.kept, s.blocks)) for s in samples]
    model = LatencyPredictor(pg)
    report = model.fit(samples)
    assert report["mape"] <= 0.02 and report["spearman"] > 0.95
    kept, blocks = random_sample_plan(pg, random.Random(99))
    assert model.predict_counts(kept, blocks) == pytest.approx(synthetic_ms(pg, kept, blocks), rel=0.02)
    # differentiable in the keep values
    keep = {g.id: torch.tensor(float(g.size), requires_grad=True) for g in pg.prunable_groups}
    model(keep).backward()
    assert any(float(v.grad) > 0 for v in keep.values() if v.grad is not None)


def test_a_saved_model_reloads_and_refuses_another_architecture(
    resnet20: gp.PrunableGraph, tmp_path: Path
) -> None:
    pg = resnet20
    rng = random.Random(1)
    samples = []
    for _ in range(12):
        kept, blocks = random_sample_plan(pg, rng)
        samples.append(LatencySample(kept, blocks, synthetic_ms(pg, kept, blocks)))
    model = LatencyPredictor(pg)
    model.key = cache_key(pg, 1)
    model.fit(samples)
    model.save(tmp_path / "lat.json")
    again = LatencyPredictor.load(pg, tmp_path / "lat.json")
    kept, blocks = samples[0].kept, samples[0].blocks
    assert again.predict_counts(kept, blocks) == pytest.approx(model.predict_counts(kept, blocks))
    other = gp.trace(random_toynet(2, 3), torch.randn(1, 3, 16, 16))
    with pytest.raises(LatencyModelError, match="another model"):
        LatencyPredictor.load(other, tmp_path / "lat.json")


def test_collection_measures_and_reuses_the_cache(tmp_path: Path) -> None:
    pg = gp.trace(random_toynet(1, 2).eval(), torch.randn(1, 3, 16, 16))
    first = collect_samples(pg, 2, cache_dir=tmp_path, runs=3)
    assert len(first) == 2 and all(s.ms > 0 for s in first)
    calls: list[int] = []
    again = collect_samples(pg, 2, cache_dir=tmp_path, runs=3, on_sample=lambda i, n: calls.append(i))
    assert again == first and not calls  # nothing measured twice
    cache = SampleCache(tmp_path, cache_key(pg, 1))
    cache.path.write_text("{not json\n")
    with pytest.raises(LatencyModelError, match="line 1"):
        cache.load()


def unaligned_ms(pg: gp.PrunableGraph, kept: dict[str, int], blocks: list[str]) -> float:
    """A known function with onnxruntime's x86 behaviour: MACs of a layer whose kept output channels are
    not a multiple of 8 cost 3x (the blocked kernels take only aligned layers)."""
    from graphprune.efficiency.diff_flops import DifferentiableFlops

    fl = DifferentiableFlops(pg)
    keep = {gid: torch.tensor(float(k)) for gid, k in kept.items()}
    with torch.no_grad():
        k_out, k_in, alive = fl.layer_keeps(keep, {b: torch.tensor(0.0) for b in blocks})
        macs = fl.layer_flops * k_out * k_in * alive
        aligned = torch.round(k_out * fl.out_channels) % 8 == 0
    return float(0.2 + 3e-8 * (macs * torch.where(aligned, 1.0, 3.0)).sum())


def test_the_alignment_terms_fit_what_counts_alone_cannot(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    rng = random.Random(0)
    plans = [random_sample_plan(pg, rng, align=8) for _ in range(80)]
    rounded = [all(k % 8 == 0 for k in kept.values()) for kept, _ in plans]
    assert 20 <= sum(rounded) <= 60  # about half the samples keep multiples of 8 everywhere
    samples = [LatencySample(kept, blocks, unaligned_ms(pg, kept, blocks)) for kept, blocks in plans]
    with_align = LatencyPredictor(pg).fit(samples)
    counts_only = LatencyPredictor(pg, align=0).fit(samples)
    assert with_align["mape"] <= 0.03 < counts_only["mape"]


def test_a_model_saved_before_the_alignment_terms_still_loads(
    resnet20: gp.PrunableGraph, tmp_path: Path
) -> None:
    pg = resnet20
    rng = random.Random(2)
    samples = [
        LatencySample(k, b, synthetic_ms(pg, k, b))
        for k, b in (random_sample_plan(pg, rng) for _ in range(12))
    ]
    old = LatencyPredictor(pg, align=0)
    old.key = cache_key(pg, 1)
    old.fit(samples)
    state = old.state()
    del state["align"]  # the file format before this change
    (tmp_path / "old.json").write_text(json.dumps(state))
    again = LatencyPredictor.load(pg, tmp_path / "old.json")
    assert again.align == 0
    assert again.predict_counts(samples[0].kept) == pytest.approx(old.predict_counts(samples[0].kept))
    state["align"] = 8  # a file whose coefficients do not fit its terms: an error naming it
    (tmp_path / "bad.json").write_text(json.dumps(state))
    with pytest.raises(LatencyModelError, match="bad.json: 10 coefficients"):
        LatencyPredictor.load(pg, tmp_path / "bad.json")


def test_a_paired_timer_scales_the_given_reference_time_by_a_timed_ratio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphprune.efficiency.latency as latency

    calls = []

    def timed(pg: gp.PrunableGraph, plan: gp.PruningPlan, reference: Path, **kw: int) -> float:
        calls.append((Path(reference), kw))
        return 0.25

    monkeypatch.setattr(latency, "paired_plan_ratio", timed)
    pg = gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))
    timer = latency.PairedTimer(pg, tmp_path, runs=6, rounds=3, reference_ms=100.0)  # given: not measured
    assert timer.reference_ms == 100.0 and (tmp_path / "latency_reference.onnx").is_file()
    assert timer(gp.PruningPlan.for_graph(pg)) == 25.0  # the reference time times the timed ratio
    assert calls == [(tmp_path / "latency_reference.onnx", {"threads": 1, "rounds": 3, "runs": 2})]

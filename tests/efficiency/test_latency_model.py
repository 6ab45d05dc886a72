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
from graphprune.efficiency.nchwc import NchwcLayout
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
    model = LatencyPredictor(pg, terms="plain")  # the terms without onnxruntime's padding: linear in MACs
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


def test_samples_are_timed_beside_the_unpruned_model_whose_cached_time_scales_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graphprune.efficiency.latency as latency

    pg = gp.trace(random_toynet(1, 2).eval(), torch.randn(1, 3, 16, 16))
    direct: list[gp.PruningPlan] = []
    paired: list[int] = []

    def measured(pg: gp.PrunableGraph, plan: gp.PruningPlan, **kw: int) -> float:
        direct.append(plan)
        return 2.0 if len(direct) == 1 else 100.0  # a second measurement of the original: a drifted machine

    def ratio(pg: gp.PrunableGraph, plan: gp.PruningPlan, reference: Path, **kw: int) -> float:
        paired.append(kw["rounds"])
        return 0.5

    monkeypatch.setattr(latency, "measure_plan", measured)
    monkeypatch.setattr(latency, "paired_plan_ratio", ratio)
    first = collect_samples(pg, 3, cache_dir=tmp_path, runs=10)
    assert [s.ms for s in first] == [2.0, 1.0, 1.0]  # the original timed alone, the others beside it
    assert len(direct) == 1 and len(paired) == 2 and not first[0].blocks
    more = collect_samples(pg, 4, cache_dir=tmp_path, runs=10)
    assert more[:3] == first and more[3].ms == 1.0  # scaled by the cached original, not re-measured
    assert len(direct) == 1


LAYOUT = NchwcLayout(block=16, multiple=4)  # onnxruntime 1.32 with AVX-512; given, so no machine decides


def nchwc_ms(pg: gp.PrunableGraph, kept: dict[str, int], blocks: list[str]) -> float:
    """A known function with onnxruntime's x86 behaviour (`LAYOUT`): a conv whose kept input count is a
    multiple of 4 (or under 16) runs its output padded to 16 channels; any other costs 3x per MAC."""
    from graphprune.efficiency.diff_flops import DifferentiableFlops

    fl = DifferentiableFlops(pg)
    keep = {gid: torch.tensor(float(k)) for gid, k in kept.items()}
    with torch.no_grad():
        k_out, k_in, alive = fl.layer_keeps(keep, {b: torch.tensor(0.0) for b in blocks})
        out, inp = torch.round(k_out * fl.out_channels), torch.round(k_in * fl.in_channels)
        blocked = (inp % 4 == 0) | (inp < 16)
        cost = torch.where(blocked, torch.ceil(out / 16) * 16 * inp, 3.0 * out * inp)
        macs = fl.layer_flops / (fl.out_channels * fl.in_channels) * cost * alive
    return float(0.2 + 3e-8 * macs.sum())


def test_the_nchwc_terms_fit_what_counts_alone_cannot(resnet20: gp.PrunableGraph) -> None:
    pg = resnet20
    rng = random.Random(0)
    plans = [random_sample_plan(pg, rng, align=8) for _ in range(80)]
    rounded = [all(k % 8 == 0 for k in kept.values()) for kept, _ in plans]
    assert 20 <= sum(rounded) <= 60  # about half the samples keep multiples of 8 everywhere
    samples = [LatencySample(kept, blocks, nchwc_ms(pg, kept, blocks)) for kept, blocks in plans]
    nchwc = LatencyPredictor(pg, layout=LAYOUT).fit(samples)
    counts_only = LatencyPredictor(pg, terms="plain").fit(samples)
    assert nchwc["mape"] <= 0.03 < counts_only["mape"]
    # still differentiable in the keep values (the layout and padding are constants of a step)
    model = LatencyPredictor(pg, layout=LAYOUT)
    model.fit(samples)
    keep = {g.id: torch.tensor(float(g.size) - 3, requires_grad=True) for g in pg.prunable_groups}
    model(keep).backward()
    assert any(float(v.grad) > 0 for v in keep.values() if v.grad is not None)


def test_a_rounding_predictor_costs_the_counts_its_read_off_will_keep(resnet20: gp.PrunableGraph) -> None:
    """W-Gates trains gates on arbitrary counts but reads off multiples of `round_to`: with `round_to` the
    predictor costs the rounded architecture (all blocked here), not the uneven one (mostly not)."""
    from graphprune.criteria import rounded_kept

    pg = resnet20
    rng = random.Random(3)
    samples = [
        LatencySample(k, b, nchwc_ms(pg, k, b)) for k, b in (random_sample_plan(pg, rng) for _ in range(60))
    ]
    model = LatencyPredictor(pg, layout=LAYOUT)
    model.fit(samples)
    uneven = {g.id: g.size - 3 for g in pg.prunable_groups}  # 13, 29, 61: none blocked after them
    rounded = {gid: rounded_kept(pg.group(gid).size, k, 8) for gid, k in uneven.items()}
    as_is = model.predict_counts(uneven)
    model.round_to = 8
    assert model.predict_counts(uneven) == pytest.approx(model.predict_counts(rounded), rel=1e-4)
    model.round_to = 1
    assert model.predict_counts(rounded) < as_is  # the uneven counts run the slow path
    keep = {gid: torch.tensor(float(k), requires_grad=True) for gid, k in uneven.items()}
    model.round_to = 8
    model(keep).backward()  # still differentiable in the counts
    assert any(float(v.grad) > 0 for v in keep.values() if v.grad is not None)


def test_saved_models_of_earlier_terms_load_or_are_refused_by_name(
    resnet20: gp.PrunableGraph, tmp_path: Path
) -> None:
    pg = resnet20
    rng = random.Random(2)
    samples = [
        LatencySample(k, b, synthetic_ms(pg, k, b))
        for k, b in (random_sample_plan(pg, rng) for _ in range(12))
    ]
    old = LatencyPredictor(pg, terms="plain")
    old.key = cache_key(pg, 1)
    old.fit(samples)
    state = old.state()
    del state["terms"], state["layout"]  # the first file format
    (tmp_path / "old.json").write_text(json.dumps(state))
    again = LatencyPredictor.load(pg, tmp_path / "old.json")
    assert again.terms == "plain"
    assert again.predict_counts(samples[0].kept) == pytest.approx(old.predict_counts(samples[0].kept))
    (tmp_path / "aligned.json").write_text(json.dumps({**state, "align": 8}))  # the alignment terms' format
    with pytest.raises(LatencyModelError, match="aligned.json was fitted with the earlier alignment terms"):
        LatencyPredictor.load(pg, tmp_path / "aligned.json")
    other = {**state, "terms": "nchwc", "layout": {"block": 3, "multiple": 1}}  # no machine has this
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(LatencyModelError, match="other.json was fitted for onnxruntime's NCHWc layout"):
        LatencyPredictor.load(pg, tmp_path / "other.json")
    (tmp_path / "bad.json").write_text(json.dumps({**state, "terms": "plain", "stages": 2}))
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


def test_a_paired_timer_without_a_folder_removes_its_own() -> None:
    import gc

    import graphprune.efficiency.latency as latency

    pg = gp.trace(get_model("cifar_resnet20").eval(), torch.randn(1, 3, 32, 32))
    timer = latency.PairedTimer(pg, None, reference_ms=1.0)
    folder = timer.reference.parent
    assert timer.reference.is_file()
    del timer
    gc.collect()
    assert not folder.exists()  # no graphprune-latency-* folder left behind

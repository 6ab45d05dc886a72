"""arm_latency.py times the accuracy suite's arms from their records: rebuilt only where a record pins the
architecture, and its ABP-against-L1 claim needs all three conditions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import arm_latency
import pytest

import graphprune as gp
from graphprune import shared
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

MODEL, WEIGHTS = "graphprune:cifar_resnet20", "cifar10jpeg_resnet20.th"


def _row(ms1: float, ms32: float, kept: float, top1: float) -> dict[str, Any]:
    return {"latency": {"1": {"p50_ms": ms1}, "32": {"p50_ms": ms32}}, "flops_ratio": kept, "test_top1": top1}


def test_claim_needs_faster_equal_flops_and_close_top1() -> None:
    rows = {"abp": _row(1.0, 10.0, 0.40, 85.5), "l1": _row(2.0, 20.0, 0.405, 86.0)}
    assert arm_latency.claim(rows)["met"]
    slower = {**rows, "abp": _row(1.0, 21.0, 0.40, 85.5)}  # slower at batch 32
    assert not arm_latency.claim(slower)["met"]
    apart = {**rows, "abp": _row(1.0, 10.0, 0.38, 85.5)}  # 0.025 of the FLOPs apart
    assert not arm_latency.claim(apart)["met"]
    worse = {**rows, "abp": _row(1.0, 10.0, 0.40, 84.9)}  # 1.1 points below L1
    assert not arm_latency.claim(worse)["met"]
    assert not arm_latency.claim({"abp": rows["abp"]})["judged"]


def _record(arm: str, flops: int, kind: str, notes: dict | None = None) -> dict:
    return {
        "mode": "standard", "model": MODEL, "weights": WEIGHTS, "arm": arm, "kind": kind, "seed": 0,
        "reduction": 0.6, "status": "ok", "flops": flops, "flops_ratio": 0.5, "params": 1,
        "test_top1": 80.0, "val_top1": 81.0, "notes": notes or {},
    }  # fmt: skip


def test_arms_are_rebuilt_only_where_the_record_pins_them(tmp_path: Path, shared_dir: Path) -> None:
    resolved = resolve_model(MODEL)
    original = load_weights(resolved.model, shared.weights_file(WEIGHTS)).eval()
    x = resolved.example_inputs
    pg = gp.trace(original, x)
    l1 = gp.apply(pg, gp.criteria.plan_by_criterion(pg, "l1", 0.4, "global", round_to=1))
    blocks = gp.PruningPlan.for_graph(pg)
    blocks.remove_block("layer1.1")
    abp = gp.apply(pg, blocks)
    folder = tmp_path / "accuracy_arms" / "standard"
    folder.mkdir(parents=True)
    recs = [
        _record("l1", gp.count_flops(l1, x), "l1"),
        _record("abp", gp.count_flops(abp, x), "learned", {"removed_blocks": ["layer1.1"]}),
        _record("wgates", 1, "learned"),  # its FLOPs do not match what its (empty) report pins
        _record("tp-depgraph", gp.count_flops(l1, x) + 1, "torch_pruning"),
    ]
    stale = _record("l1", gp.count_flops(l1, x) - 1, "l1")  # an older L1: its plan no longer matches
    for r in recs:
        (folder / f"{r['arm']}.json").write_text(json.dumps(r))
    data = arm_latency.run(tmp_path, tmp_path / "work", "standard", MODEL, 0.6, 0, rounds=1, runs=1)
    rows = {r["arm"]: r for r in data["rows"]}
    assert rows["l1"]["source"] == rows["abp"]["source"] == "rebuilt from the record"
    assert "latency" in rows["abp"] and rows["abp"]["speedup"]["1"] > 0
    assert "not_timed" in rows["wgates"] and "not_timed" in rows["tp-depgraph"]
    assert arm_latency.kept_counts("conv1 9/16, layer1.0.conv1 8/16") == {"conv1": 9, "layer1.0.conv1": 8}
    both = gp.PruningPlan.for_graph(pg)
    both.remove_block("layer1.1")
    both.remove_channels("layer2.0.conv1", range(20, 32))
    flops = gp.count_flops(gp.apply(pg, both), x)
    combined = _record("abp+wgates", flops, "learned", {"removed_blocks": ["layer1.1"],
                       "method_report": {"kept_channels": "layer2.0.conv1 20/32"}})  # fmt: skip
    assert gp.count_flops(arm_latency.rebuild(combined, original, x), x) == flops
    assert data["claim"]["judged"]
    with pytest.raises(ValueError, match="differ from the record"):
        arm_latency.rebuild(stale, original, x)
    assert "ABP against L1" in arm_latency.markdown(data)

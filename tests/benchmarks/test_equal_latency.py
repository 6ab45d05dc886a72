"""The equal-latency benchmark: how peers are matched to wgates-latency, and its smoke mode end to end."""

from __future__ import annotations

import json
from pathlib import Path

import equal_latency
import pytest
from test_suites_smoke import BENCHMARKS, run_script


def trials(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"target_flops": f, "ratio": r} for f, r in pairs]


def test_the_peer_is_the_candidate_nearest_the_level() -> None:
    grid = trials((0.3, 0.50), (0.4, 0.595), (0.5, 0.615), (0.6, 0.70))
    assert equal_latency.pick(grid, 0.60)["target_flops"] == 0.4  # nearest, not the most FLOPs that fit
    assert equal_latency.pick(grid, 0.61)["target_flops"] == 0.5


def test_targets_that_give_one_plan_are_one_candidate() -> None:
    import torch

    import graphprune as gp
    from graphprune.models import get_model

    pg = gp.trace(get_model("cifar_resnet20").eval(), (torch.randn(1, 3, 32, 32),))
    a = gp.PruningPlan.for_graph(pg).remove_channels("conv1", [1, 0]).remove_channels("layer1.0.conv1", [])
    b = gp.PruningPlan.for_graph(pg).remove_channels("conv1", [0, 1])
    c = gp.PruningPlan.for_graph(pg).remove_channels("conv1", [2, 3])
    assert equal_latency.plan_key(a) == equal_latency.plan_key(b) != equal_latency.plan_key(c)
    assert equal_latency.plan_key(b) != equal_latency.plan_key(
        gp.PruningPlan.for_graph(pg).remove_block("layer1.1")
    )


def test_a_rematch_runs_again_only_the_peers_matched_by_an_earlier_rule() -> None:
    assert equal_latency.stale({"arm": "l1"}) and equal_latency.stale({"arm": "wgates-flops"})
    assert not equal_latency.stale({"arm": "l1", "matched_by": equal_latency.MATCHED_BY})
    assert not equal_latency.stale({"arm": "wgates-latency"})  # the level is never matched


def test_the_search_steps_toward_the_level_and_never_repeats_a_target() -> None:
    one = trials((0.4, 0.8))
    assert equal_latency.next_target(one, 0.6) == pytest.approx(0.3)  # scaled by level / latency
    two = trials((0.4, 0.8), (0.3, 0.7))
    assert equal_latency.next_target(two, 0.6) == pytest.approx(0.2)  # the line through both
    assert equal_latency.next_target(trials((0.05, 0.9)), 0.1) == 0.06  # clipped to 0.05, which was tried
    assert 0.05 <= equal_latency.next_target(trials((0.9, 0.1)), 0.9) <= 0.95
    # a step in latency: both trials above the level extrapolate far; once bracketed, halve the gap
    plateau = trials((0.68, 0.87), (0.57, 0.86), (0.15, 0.41))
    assert equal_latency.next_target(plateau, 0.73) == pytest.approx(0.36)
    assert equal_latency.next_target(trials((0.2, 0.5), (0.3, 0.9)), 0.73) == pytest.approx(0.25)
    # a falling pair (a step in latency): scale down from the smallest target, do not follow the line up
    # (a run went 0.38 -> 0.338 -> 0.471 -> 0.481 three times, ever further from the level)
    falling = trials((0.38, 0.656), (0.338, 0.69))
    assert equal_latency.next_target(falling, 0.584) == pytest.approx(0.338 * 0.584 / 0.69, abs=1e-3)
    # tried targets are never tried again, however many lie next to the one computed
    assert equal_latency.next_target(trials((0.05, 0.9), (0.06, 0.95)), 0.1) == 0.07
    many = trials((0.471, 0.706), (0.481, 0.738), (0.491, 0.739), (0.2, 0.45))
    assert equal_latency.next_target(many, 0.584) not in {0.471, 0.481, 0.491, 0.2}


def test_a_set_of_non_default_options_is_a_set_of_its_own() -> None:
    out = Path("out")
    assert equal_latency.variant({}) == equal_latency.variant({"span_floor": None}) == ""
    assert equal_latency.variant({"calibrate_every": 0, "span_floor": 1.0}) == "-floor1-cal0"
    assert equal_latency.variant({"span_floor": 1.0, "repair_by": "predictor"}) == "-floor1-by-predictor"
    assert equal_latency.variant({"repair_by": "calibrated", "repair_from": "floor"}) == (
        "-by-calibrated-from-floor"
    )
    # a record made with an earlier latency predictor is a set of its own; today's default is no tag
    assert equal_latency.variant({"latency_terms": equal_latency.TERMS[0]}) == ""
    assert equal_latency.variant({"span_floor": 1.0, "latency_terms": "align8"}) == "-floor1-align8"
    plain = equal_latency.record_file(out, "quick", "l1", 0.6, 0)
    floored = equal_latency.record_file(
        out, "quick", "l1", 0.6, 0, equal_latency.variant({"span_floor": 1.0})
    )
    assert plain.name == "l1@0.6-seed0.json" and floored.name == "l1@0.6-floor1-seed0.json"


def test_the_verdict_needs_equal_latency_and_the_first_place_on_test() -> None:
    records = [
        {
            "arm": "wgates-latency",
            "flops_ratio": 0.3,
            "val_top1_bnrecal": 70,
            "val_top1": 80,
            "test_top1": 79,
        },
        {"arm": "l1", "flops_ratio": 0.35, "val_top1_bnrecal": 30, "val_top1": 79, "test_top1": 78},
        {
            "arm": "wgates-flops",
            "flops_ratio": 0.33,
            "val_top1_bnrecal": 60,
            "val_top1": 81,
            "test_top1": 78.5,
        },
    ]
    ms = (("original", 1.0), ("wgates-latency", 0.60), ("l1", 0.61), ("wgates-flops", 0.59))
    timing = {name: {"p10_ms": t} for name, t in ms}
    v = equal_latency.summarise(records, timing, 0.03)["verdict"]
    assert v == {"complete": True, "equal_latency": True, "first_on_val": False, "first_on_test": True,
                 "met": True}  # fmt: skip
    timing["l1"]["p10_ms"] = 0.65  # l1 now 8% slower: not the same latency
    assert not equal_latency.summarise(records, timing, 0.03)["verdict"]["met"]
    records[0]["test_top1"] = 78.0
    timing["l1"]["p10_ms"] = 0.61
    assert not equal_latency.summarise(records, timing, 0.03)["verdict"]["met"]


def test_latency_against_the_level_is_the_median_of_the_per_pass_ratios() -> None:
    """Two exports of one architecture: one pass caught the level in a fast spell and the peer in a slow
    one (9% apart there). The median of the per-pass ratios reads them equal."""
    records = [{"arm": a, "flops_ratio": 0.5, "val_top1_bnrecal": 1, "val_top1": 1, "test_top1": 1}
               for a in ("wgates-latency", "l1", "wgates-flops")]  # fmt: skip
    level = [0.40, 0.40, 0.375, 0.41, 0.41]
    peer = [0.40, 0.40, 0.408, 0.405, 0.41]  # the same as the level, but for the third pass
    timing = {"original": {"p10_ms": 0.5, "pass_p10_ms": [0.5] * 5}}
    for arm, passes in (("wgates-latency", level), ("l1", peer), ("wgates-flops", level)):
        timing[arm] = {"p10_ms": sorted(passes)[2], "pass_p10_ms": passes}
    timing["wgates-latency"]["p10_ms"] = 0.40  # the per-file median
    timing["l1"]["p10_ms"] = 0.405
    rows = {r["arm"]: r for r in equal_latency.summarise(records, timing, 0.03)["rows"]}
    assert rows["l1"]["vs_level"] == pytest.approx(1.0)  # median of 1, 1, 1.088, 0.988, 1
    assert max(rows["l1"]["vs_level_passes"]) == pytest.approx(0.408 / 0.375)


def test_smoke_mode_matches_every_peer_and_resumes(tmp_path: Path, shared_dir: Path) -> None:
    args = ("--smoke", "--out", tmp_path, "--work-dir", tmp_path / "work")
    run_script(BENCHMARKS / "equal_latency.py", *args)
    data = json.loads((tmp_path / "equal_latency_smoke.json").read_text())
    assert list(data["sets"]) == ["0.6/seed0"]
    rows = {r["arm"]: r for r in data["sets"]["0.6/seed0"]["rows"]}
    assert set(rows) == set(equal_latency.ARMS)
    records = {a: json.loads((tmp_path / "equal_latency" / "smoke" / f"{a}@0.6-seed0.json").read_text())
               for a in equal_latency.ARMS}  # fmt: skip
    level = records["wgates-latency"]["plan_ratio"]
    for arm in ("l1", "wgates-flops"):
        r = records[arm]
        assert r["level"] == level and r["trials"]  # matched to wgates-latency's plan
        assert r["matched_beside"] == "wgates-latency's export"  # timed beside it, not beside the original
        assert r["matched_by"] == equal_latency.MATCHED_BY
        assert r["plan_ratio"] == equal_latency.pick(r["trials"], level)["ratio"]
        assert r["total_steps"] == r["budget_steps"] == records["wgates-latency"]["total_steps"]
    assert " ms (0.600 of " in records["wgates-latency"]["method_report"]["budget"]  # a latency budget
    page = (tmp_path / "equal_latency_smoke.md").read_text()
    assert "Claim **" in page and "of 1 sets" in page
    again = run_script(BENCHMARKS / "equal_latency.py", *args)  # every arm recorded: only re-timed
    assert "test top-1" not in again.stderr
    # a latency target the method cannot reach: recorded once, no set, named on the page
    far = run_script(BENCHMARKS / "equal_latency.py", *args, "--ratio", "0.05")
    assert "the set is skipped" in far.stderr
    first = json.loads((tmp_path / "equal_latency" / "smoke" / "wgates-latency@0.05-seed0.json").read_text())
    assert first["status"] == "out of reach" and "out of reach" in first["error"]
    assert not (tmp_path / "equal_latency" / "smoke" / "l1@0.05-seed0.json").exists()
    assert (
        "Out of reach, so no set: latency target 0.05, seed 0"
        in (tmp_path / "equal_latency_smoke.md").read_text()
    )
    assert "skipped" not in run_script(BENCHMARKS / "equal_latency.py", *args, "--ratio", "0.05").stderr
    # the work folder is lost (a fresh machine): the set keeps the page's timing of its records
    before = json.loads((tmp_path / "equal_latency_smoke.json").read_text())["sets"]["0.6/seed0"]
    for export in (tmp_path / "work").rglob("final.onnx"):
        export.unlink()
    run_script(BENCHMARKS / "equal_latency.py", *args)
    kept = json.loads((tmp_path / "equal_latency_smoke.json").read_text())["sets"]["0.6/seed0"]
    assert kept["reused"] and kept["rows"] == before["rows"]
    assert "1 of the sets were timed by an earlier run" in (tmp_path / "equal_latency_smoke.md").read_text()


def test_a_set_whose_exports_are_gone_keeps_its_timing_only_for_the_same_records(tmp_path: Path) -> None:
    from click import ClickException

    records = [{"arm": a, "flops_ratio": 0.5, "val_top1": 80.0, "test_top1": 79.0,
                "final_onnx": str(tmp_path / a / "final.onnx")} for a in equal_latency.ARMS]  # fmt: skip
    rows = [{k: r[k] for k in ("arm", "flops_ratio", "val_top1", "test_top1")} | {"ms": 0.4} for r in records]
    page = tmp_path / "equal_latency.json"
    page.write_text(json.dumps({"meta": {"commit": "abc1234"}, "sets": {"0.6/seed0": {"rows": rows}}}))
    kept = equal_latency.earlier_timing(page, "0.6/seed0", records)
    assert kept["rows"] == rows and kept["timed_by"] == "abc1234" and kept["reused"]
    records[1]["test_top1"] = 78.5  # the arm ran again: the page's timing is not of these records
    with pytest.raises(ClickException, match="has no timing of these records: .*final.onnx"):
        equal_latency.earlier_timing(page, "0.6/seed0", records)
    with pytest.raises(ClickException, match="is gone"):
        equal_latency.earlier_timing(page, "0.75/seed0", records)


def test_fresh_timing_times_files_together_in_a_child_process(tmp_path: Path) -> None:
    import fresh_timing
    import torch

    from graphprune.export import export_onnx

    small, large = tmp_path / "small.onnx", tmp_path / "large.onnx"
    export_onnx(torch.nn.Conv2d(3, 4, 3).eval(), (torch.randn(1, 3, 16, 16),), small)
    export_onnx(torch.nn.Conv2d(3, 256, 3).eval(), (torch.randn(1, 3, 16, 16),), large)
    paths = {"small": str(small), "large": str(large)}
    timed = fresh_timing.time_fresh(paths, [[1, 3, 16, 16]], rounds=2, passes=2, threads=1)
    assert set(timed) == {"small", "large"}
    for t in timed.values():  # the median over passes of each pass's 10th percentile
        assert len(t["pass_p10_ms"]) == 2 and t["p10_ms"] == pytest.approx(sum(t["pass_p10_ms"]) / 2)
    with pytest.raises(RuntimeError, match="fresh process failed"):
        fresh_timing.time_fresh({"gone": str(tmp_path / "gone.onnx")}, [[1, 3, 16, 16]], 1, 1, 1)

"""The accuracy suite's rules, judged from arm records alone: budgets, validation choice, equal steps."""

from __future__ import annotations

import copy
from typing import Any

import accuracy_verdicts as av
import pytest


def arm(name: str, kind: str, kept: float, val: float, test: float, seed: int = 0) -> dict[str, Any]:
    return {
        "mode": "quick", "model": "m", "arm": name, "kind": kind,
        "reduction": None if kind == "control" else 0.6,
        "seed": seed, "round_to": 1, "status": "ok", "flops_ratio": kept, "params": 10, "val_top1": val,
        "test_top1": test, "val_top1_raw": val / 4, "val_top1_bnrecal": val / 2, "total_steps": 100,
        "code": "abc", "threads": 1, "seconds": 3600.0,
    }  # fmt: skip


ARMS = [
    arm("unpruned", "control", 1.0, 90.0, 89.0),
    arm("abp", "learned", 0.40, 80.0, 71.0),
    arm("wgates", "learned", 0.40, 79.0, 75.0),  # better on test, worse on val: not chosen
    arm("l1", "l1", 0.399, 78.0, 70.0),
    arm("tp-groupnorm-global", "torch_pruning", 0.405, 77.0, 69.0),
    arm("tp-bnscale-global", "torch_pruning", 0.43, 99.0, 99.0),  # over target + 0.01: not compared
]


def test_best_arm_is_chosen_by_validation_and_over_budget_arms_are_listed() -> None:
    (v,) = av.verdicts(av.rows(ARMS))
    assert v["best"]["learned"]["arm"] == "abp" and v["best"]["learned"]["top1_mean"] == 71.0
    assert v["best"]["torch_pruning"]["arm"] == "tp-groupnorm-global"
    assert v["best"]["control"]["top1_mean"] == 89.0
    assert v["not_compared"] == [{"arm": "tp-bnscale-global", "flops_kept": 0.43}]
    assert v["equal_steps"] and v["same_code"] and v["seeds"] == [0]


def test_agreement_names_the_arm_validation_and_test_each_put_first() -> None:
    (v,) = av.verdicts(av.rows(ARMS))
    a = v["val_test_agreement"]
    assert a["arms"] == 4 and a["val_best"] == "abp" and a["test_best"] == "wgates"
    assert a["rho"] == pytest.approx(av.spearman([80, 79, 78, 77], [71, 75, 70, 69]))
    summary = {"meta": {"command": "c", "date": "d"}, "verdicts": [v], "fast_number": {}, "rows": []}
    page = av.markdown({**summary, "cpu_hours": 0.0})
    assert "validation puts abp first, test puts wgates first" in page
    assert "Validation − test: 4.00 (wgates) to 9.00 (abp)" in page


def test_unequal_steps_make_the_verdict_invalid_on_the_page() -> None:
    arms = copy.deepcopy(ARMS)
    arms[1]["total_steps"] = 200
    (v,) = av.verdicts(av.rows(arms))
    assert not v["equal_steps"] and v["total_steps"] == [100, 200]
    assert "invalid: unequal steps" in "\n".join(av.verdict_table([v]))


def test_learned_arms_on_other_method_code_are_named() -> None:
    arms = copy.deepcopy(ARMS)
    arms[2]["code"] = "def"
    (v,) = av.verdicts(av.rows(arms))
    assert not v["same_code"] and v["code_differs"] == {"abp": ["abc"], "wgates": ["def"]}


def test_seeds_give_mean_and_half_range() -> None:
    arms = [*ARMS, arm("abp", "learned", 0.40, 82.0, 73.0, seed=1)]
    row = next(r for r in av.rows(arms) if r["arm"] == "abp")
    assert row["test_top1_mean"] == 72.0 and row["test_top1_spread"] == 1.0 and row["seeds"] == [0, 1]


def test_fast_number_correlation_ranks_the_pruned_arms() -> None:
    corr = av.fast_number_correlation(ARMS)["quick"]
    assert corr["arms"] == 5  # the control is not pruned
    assert corr["bnrecal"] == pytest.approx(av.spearman([80, 79, 78, 77, 99], [71, 75, 70, 69, 99]))
    assert av.spearman([1, 2], [2, 1]) is None and av.spearman([1, 1, 1], [1, 2, 3]) is None


def test_best_two_are_two_importances_compared_on_shared_targets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import accuracy_suite

    folder = tmp_path / "accuracy_arms" / "quick"
    folder.mkdir(parents=True)
    records = [  # (arm, target, val top-1, FLOPs kept)
        ("tp-groupnorm-global", 0.5, 80.0, 0.50), ("tp-groupnorm-layer", 0.5, 81.0, 0.50),
        ("tp-taylor-global", 0.5, 79.0, 0.50), ("tp-bnscale-global", 0.5, 90.0, 0.55),  # over budget
        ("tp-groupnorm-global", 0.6, 99.0, 0.40),  # not every arm ran at -60%: not compared there
    ]  # fmt: skip
    for i, (name, reduction, val, kept) in enumerate(records):
        record = {"arm": name, "reduction": reduction, "val_top1": val, "flops_ratio": kept, "status": "ok"}
        (folder / f"{i}.json").write_text(json.dumps(record))
    assert accuracy_suite.best_two(tmp_path) == ["tp-groupnorm-layer", "tp-taylor-global"]


def test_a_seed_selection_splits_the_standard_mode_between_two_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import accuracy_suite

    mode = accuracy_suite.MODES["standard"]
    every = accuracy_suite.selected(mode, tmp_path)
    zero = accuracy_suite.selected(mode, tmp_path, seeds=(0,))
    one = accuracy_suite.selected(mode, tmp_path, seeds=(1,))
    assert {j[3] for j in zero} == {0} and {j[3] for j in one} == {1}
    assert sorted(map(repr, zero + one)) == sorted(map(repr, every))  # no job lost, none run twice
    l1 = accuracy_suite.selected(mode, tmp_path, only=("l1",), seeds=(1,))
    assert [(j[1], j[2], j[3]) for j in l1] == [("l1", 0.6, 1), ("l1", 0.8, 1)]  # ResNet-20 at -60%, -80%
    controls = [(j[0].model, j[3]) for j in every if j[1] == accuracy_suite.CONTROL]
    assert len(controls) == len(set(controls)) == 3  # one per model and seed, though ResNet-20 has 2 blocks


def test_a_model_selection_runs_one_models_arms_by_spec_or_short_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import accuracy_suite

    mode = accuracy_suite.MODES["standard"]
    short = accuracy_suite.selected(mode, tmp_path, only=("l1",), seeds=(0,), models=("cifar_resnet56",))
    spec = accuracy_suite.selected(
        mode, tmp_path, only=("l1",), seeds=(0,), models=("graphprune:cifar_resnet56",)
    )
    assert short == spec and [(j[0].model, j[1], j[2]) for j in short] == [(av.RESNET56, "l1", 0.6)]
    r20 = accuracy_suite.selected(mode, tmp_path, seeds=(0,), models=("cifar_resnet20",))
    assert r20 and {j[0].model for j in r20} == {av.RESNET20}


def test_a_verdict_names_the_pruned_arms_seeds_not_the_controls() -> None:
    arms = [*ARMS, arm("unpruned", "control", 1.0, 90.0, 89.2, seed=1)]  # a second control seed only
    verdict = next(v for v in av.verdicts(av.rows(arms)) if v["mode"] == "quick")
    assert verdict["seeds"] == [0]


def _standard(model: str, *arms: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**a, "mode": "standard", "model": model} for a in arms]


def test_targets_judge_each_done_when_rule_and_wait_for_missing_arms() -> None:
    r20 = _standard(
        av.RESNET20,
        arm("unpruned", "control", 1.0, 95.0, 88.4),
        arm("abp+wgates", "learned", 0.40, 90.0, 86.8),  # +0.6 over l1, +0.5 over TP: met
        arm("wgates", "learned", 0.40, 89.0, 85.6),  # below l1: not met
        arm("l1", "l1", 0.40, 88.0, 86.2),
        arm("tp-groupnorm-layer", "torch_pruning", 0.405, 88.0, 86.3),
    )
    r56 = _standard(
        av.RESNET56,
        arm("unpruned", "control", 1.0, 95.0, 90.0),
        arm("abp+wgates", "learned", 0.40, 93.0, 88.9),  # -1.1 from the control: not met
        arm("abp", "learned", 0.405, 90.0, 87.8),  # within 1.0 of l1 and 0.005 of its FLOPs: met
        arm("l1", "l1", 0.40, 90.0, 88.7),
    )
    table = av.rows(r20 + r56)
    ts = av.targets(av.verdicts(table), table)

    def find(model: str, start: str) -> dict[str, Any]:
        (t,) = [t for t in ts if t["model"] == model and t["target"].startswith(start)]
        return t

    margin20, margin56 = find(av.RESNET20, "best"), find(av.RESNET56, "best")
    assert margin20["met"] is True and "+0.60" in margin20["measured"] and "+0.50" in margin20["measured"]
    assert margin56["met"] is None and "torch_pruning" in margin56["measured"]  # the peer has not run
    control = find(av.RESNET56, "abp+wgates within")
    assert control["met"] is False and "-1.10" in control["measured"]
    assert find(av.RESNET20, "wgates beats")["met"] is False
    assert find(av.RESNET56, "abp within")["met"] is True
    r56[2]["flops_ratio"] = 0.39  # 0.01 + from l1's FLOPs: no longer equal FLOPs
    table = av.rows(r20 + r56)
    abp = next(t for t in av.targets(av.verdicts(table), table) if t["target"].startswith("abp within"))
    assert abp["met"] is False
    page = av.markdown({"meta": {"command": "c", "date": "d"}, "verdicts": [], "fast_number": {}, "rows": [],
                        "cpu_hours": 0.0, "targets": av.targets(av.verdicts(table), table)})  # fmt: skip
    assert "| wgates beats l1 | graphprune:cifar_resnet20 | 0 | **not met** |" in page


def test_a_pair_target_judges_the_variants_validation_chooses_on_both_sides() -> None:
    r20 = _standard(
        av.RESNET20,
        arm("wgates", "learned", 0.40, 89.0, 85.6),
        arm("wgates-short", "ablation", 0.40, 89.2, 85.9),  # validation prefers it: judged
        arm("l1", "l1", 0.40, 88.0, 85.8),
        arm("l1-stream", "l1", 0.40, 86.0, 86.5),  # best on test, but validation does not choose it
    )
    table = av.rows(r20)
    (t,) = [t for t in av.targets(av.verdicts(table), table) if t["target"] == "wgates beats l1"]
    assert t["met"] is True and t["measured"].startswith("wgates-short (chosen by validation over wgates)")
    assert "l1 (chosen by validation over l1-stream) 85.80" in t["measured"] and t["measured"].endswith(
        "+0.10"
    )
    r20[1]["val_top1"] = 88.0  # now validation prefers the plain arm, which loses
    table = av.rows(r20)
    (t,) = [t for t in av.targets(av.verdicts(table), table) if t["target"] == "wgates beats l1"]
    assert t["met"] is False and t["measured"].startswith("wgates (chosen by validation over wgates-short)")


def test_a_resumed_arm_costs_the_epochs_every_process_logged(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import accuracy_suite

    stage = tmp_path / "method"
    stage.mkdir()
    epoch = {"kind": "epoch", "seconds": 100.0}
    (stage / "metrics.jsonl").write_text("\n".join(map(json.dumps, [epoch, {"kind": "step"}, epoch])) + "\n")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({**epoch, "seconds": 50.0}) + "\n\n")
    assert accuracy_suite.logged_seconds(tmp_path) == 250.0
    resumed = {"seconds": 60.0, "epoch_seconds": 250.0, "threads": 2}
    assert accuracy_suite.arm_cpu_seconds(resumed) == 500.0  # the finishing process alone ran 60 s
    assert accuracy_suite.arm_cpu_seconds({"seconds": 300.0, "threads": 1}) == 300.0  # older records

"""clean_split.py re-judges the accuracy verdicts on a split of the test set: the halves are stratified and
disjoint, each peer is chosen on one half and judged on the other, and an arm is evaluated only from a file
that pins its function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import accuracy_suite
import clean_split
import pytest
import torch
from safetensors.torch import save_file

import graphprune as gp
from graphprune import shared
from graphprune.modelspec import resolve_model
from graphprune.weights import load_weights

MODEL, WEIGHTS = "graphprune:cifar_resnet20", "cifar10jpeg_resnet20.th"


def test_halves_split_every_class_in_two_disjoint_reproducible_halves() -> None:
    labels = torch.arange(10).repeat_interleave(7)  # stored class by class, an odd count per class
    a, b = clean_split.halves(labels, seed=0)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(70))  # disjoint, nothing lost
    assert torch.bincount(labels[a], minlength=10).tolist() == [3] * 10  # stratified
    assert torch.equal(a, clean_split.halves(labels, seed=0)[0])
    assert not torch.equal(a, clean_split.halves(labels, seed=1)[0])
    assert a.tolist() != list(range(0, 70, 2))  # a permutation, not every other image


def _row(arm: str, kind: str, choose: float, judge: float, val: float) -> dict[str, Any]:
    return {"arm": arm, "kind": kind, "choose_top1": choose, "judge_top1": judge, "val_top1": val}


def test_each_kind_is_chosen_on_one_half_and_judged_on_the_other() -> None:
    n = 200
    judge = torch.arange(n // 2, n)
    hits = {arm: torch.zeros(n, dtype=torch.bool) for arm in ("learned", "tp-a", "tp-b", "l1")}
    hits["learned"][judge[:90]] = True  # 90% on the judging half
    hits["tp-a"][judge[:85]] = True  # chosen on the choosing half, 85% on the judging half
    hits["tp-b"][judge[:89]] = True  # best on the judging half: the strict reading's rival
    hits["l1"][judge[:80]] = True
    rows = [
        _row("learned", "learned", 80, 90, 95),
        _row("tp-a", "torch_pruning", 88, 85, 90),
        _row("tp-b", "torch_pruning", 70, 89, 93),
        _row("l1", "l1", 75, 80, 90),
    ]
    v = clean_split.cell_verdict(rows, hits, judge)
    assert v["best_by_choose"]["torch_pruning"] == "tp-a" and v["best_by_val"]["torch_pruning"] == "tp-b"
    assert v["margins_on_judge"]["torch_pruning"]["margin"] == pytest.approx(5.0)
    assert v["margins_on_judge"]["l1"]["margin"] == pytest.approx(10.0)
    assert v["met"] is True
    strict = v["margins_against_best_on_judge"]["torch_pruning"]
    assert strict["rival"] == "tp-b" and strict["margin"] == pytest.approx(1.0) and strict["se"] > 0


def test_a_learned_arm_without_its_export_is_left_out_not_rebuilt(tmp_path: Path) -> None:
    record = {"model": MODEL, "arm": "wgates", "kind": "learned", "reduction": 0.6, "seed": 0}
    with pytest.raises(ValueError, match="which channels"):
        clean_split.artifact(record, tmp_path, tmp_path, torch.nn.Identity(), ())


def test_the_control_is_rebuilt_with_its_fine_tuned_weights(tmp_path: Path) -> None:
    resolved = resolve_model(MODEL)
    original = load_weights(resolved.model, shared.weights_file(WEIGHTS)).eval()
    x = resolved.example_inputs
    record = {"model": MODEL, "arm": "unpruned", "kind": "control", "reduction": None, "seed": 0,
              "flops": gp.count_flops(original, x)}  # fmt: skip
    folder = accuracy_suite.run_folder(tmp_path / "work", MODEL, "unpruned", None, 0)
    (folder / clean_split.WEIGHTS).parent.mkdir(parents=True)
    tuned = {k: v.clone() for k, v in original.state_dict().items()}
    tuned["linear.bias"] += 1.0  # "fine-tuned": the file must carry these weights, not the baseline's
    save_file(tuned, str(folder / clean_split.WEIGHTS))
    path = clean_split.artifact(record, tmp_path / "work", tmp_path, original, x)
    from graphprune.export import ort_session

    session = ort_session(path, threads=1)
    got = session.run(None, {session.get_inputs()[0].name: x[0].numpy()})[0]
    with torch.no_grad():
        want = original(*x) + 1.0
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)

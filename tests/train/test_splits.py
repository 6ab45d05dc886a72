"""The validation split and stratified samples: fixed, class-stratified, disjoint from what trains."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprune.train import DataError, ImageTensors
from graphprune.train.data import DataBundle, stratified_sample


def bundle(labels: list[int]) -> DataBundle:
    n = len(labels)
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, 1, 2, 2).to(torch.uint8)
    split = ImageTensors(images.contiguous(), torch.tensor(labels))
    return DataBundle("toy", split, split, num_classes=max(labels) + 1, mean=(0.5,), std=(0.5,))


def test_class_sorted_labels_sample_every_class() -> None:
    """Stored class by class (as the CIFAR test split is), a sample still holds every class equally."""
    labels = torch.arange(10).repeat_interleave(100)
    idx = stratified_sample(labels, 200, seed=0)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [20] * 10
    assert torch.equal(idx, stratified_sample(labels, 200, seed=0))
    assert not torch.equal(idx, stratified_sample(labels, 200, seed=1))


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=6), data=st.data())
def test_sample_shares_follow_class_counts(counts: list[int], data: st.DataObject) -> None:
    labels = torch.tensor([c for c, k in enumerate(counts) for _ in range(k)])
    n = data.draw(st.integers(1, len(labels)))
    idx = stratified_sample(labels, n, seed=data.draw(st.integers(0, 9)))
    assert len(idx) == n and len(set(idx.tolist())) == n
    got = torch.bincount(labels[idx], minlength=len(counts)).tolist()
    for c, k in enumerate(counts):
        assert abs(got[c] - n * k / len(labels)) < 1.0 + 1e-9  # largest-remainder shares
    if n * min(counts) >= len(labels):  # every class's share is at least one image
        assert min(got) > 0


def test_with_val_holds_out_disjoint_stratified_images() -> None:
    data = bundle([i % 4 for i in range(40)])
    held = data.with_val(8, seed=3)
    assert held.eval_split == "val" and data.eval_split == "test"
    assert len(held.val) == 8 and len(held.train) == 32  # type: ignore[arg-type]
    assert torch.bincount(held.val.labels).tolist() == [2, 2, 2, 2]  # type: ignore[union-attr]
    ids = lambda s: set(s.images[:, 0, 0, 0].tolist())  # noqa: E731 - each image holds its position
    assert ids(held.val).isdisjoint(ids(held.train)) and len(ids(held.val) | ids(held.train)) == 40
    assert held.split("val") is held.val
    assert torch.equal(held.val.labels, data.with_val(0.2, seed=3).val.labels)  # type: ignore[union-attr]


def test_val_errors_are_one_line() -> None:
    data = bundle([0, 1] * 5)
    with pytest.raises(DataError, match="no validation split"):
        data.split("val")
    with pytest.raises(DataError, match="cannot hold out 10 of 10"):
        data.with_val(10)
    with pytest.raises(DataError, match="already held out"):
        data.with_val(2).with_val(2)

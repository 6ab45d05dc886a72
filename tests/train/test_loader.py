from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.tiny_data import tiny_bundle

from graphprune.train import Augment
from graphprune.train.loader import augment_batch


def test_crop_is_a_window_of_the_padded_image_and_flip_mirrors() -> None:
    images = torch.randint(0, 255, (16, 3, 6, 6), dtype=torch.uint8)
    out = augment_batch(images, Augment(pad=2, flip=False), torch.Generator().manual_seed(1))
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(len(images)):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = augment_batch(images, Augment(pad=0, flip=True), torch.Generator().manual_seed(1))
    assert all(
        torch.equal(f, im) or torch.equal(f, im.flip(2)) for f, im in zip(flipped, images, strict=True)
    )
    assert any(
        torch.equal(f, im.flip(2)) and not torch.equal(f, im) for f, im in zip(flipped, images, strict=True)
    )


def test_batches_are_normalised_and_seeded() -> None:
    data = tiny_bundle()
    a = list(data.loader("train", 16, seed=3))
    b = list(data.loader("train", 16, seed=3))
    c = list(data.loader("train", 16, seed=4))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c, strict=True))
    x, y = next(iter(data.loader("test", 8)))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 8, 8) and y.dtype == torch.int64
    expected = (data.test.images[:8].float() / 255 - 0.5) / 0.25
    assert torch.allclose(x, expected)


def test_iter_from_resumes_the_same_batches() -> None:
    loader = tiny_bundle().loader("train", 16, seed=0)
    loader.set_epoch(2)
    full = list(loader)
    tail = list(loader.iter_from(2))
    assert len(tail) == len(full) - 2
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(full[2:], tail, strict=True))


def test_ranks_split_the_single_process_batch() -> None:
    data = tiny_bundle()
    single = list(data.loader("train", 16, seed=5))
    shards = [list(data.loader("train", 16, seed=5, rank=r, world_size=2)) for r in range(2)]
    for i, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([shards[0][i][0], shards[1][i][0]]), x)
        assert torch.equal(torch.cat([shards[0][i][1], shards[1][i][1]]), y)


def test_a_rank_augments_only_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphprune.train import loader

    sizes: list[int] = []
    real = loader.augment_batch

    def counted(images: torch.Tensor, *args: object, **kw: object) -> torch.Tensor:
        sizes.append(len(images))
        return real(images, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "augment_batch", counted)
    list(tiny_bundle().loader("train", 16, seed=5, rank=1, world_size=4))
    assert sizes == [4, 4, 4, 4]  # 4 global batches of 16, a quarter each

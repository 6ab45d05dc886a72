"""The streaming data path: an ImageFolder of a few hundred small JPEGs, decoded per batch by workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphprune.train import TrainConfig, fit, load_data
from graphprune.train.stream import StreamLoader, eval_transform, train_transform


def write_jpegs(root: Path, per_class: int = 40, classes: int = 3, seed: int = 0) -> Path:
    """train/ (per_class images per class) and val/ (a quarter as many) of 20x16 JPEGs: each class
    a brightness of the red channel, plus noise, so a tiny net learns it."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", per_class // 4)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                array = rng.integers(0, 100, (16, 20, 3), dtype=np.uint8)
                array[:, :, 0] += np.uint8(70 * c)
                Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jpegs(tmp_path_factory.mktemp("stream") / "tree")  # 120 train + 30 val


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 3),
    )  # fmt: skip


def test_the_memory_budget_chooses_the_path(jpegs: Path) -> None:
    assert not load_data(f"imagefolder:{jpegs}").streamed  # 150 x 3 x 16 x 16 bytes fit 4 GiB
    small = load_data(f"imagefolder:{jpegs}", memory_budget=1000)
    assert small.streamed and small.input_shape == (3, 16, 16) and len(small.train) == 120
    assert load_data(f"imagefolder:{jpegs}", stream=True, image_size=12).input_shape == (3, 12, 12)
    assert not load_data(f"imagefolder:{jpegs}", stream=False, memory_budget=1000).streamed


def test_presets_crop_to_the_size() -> None:
    img = Image.fromarray(np.zeros((30, 50, 3), dtype=np.uint8))
    rng = np.random.default_rng(0)
    assert all(train_transform(img, 16, rng).size == (16, 16) for _ in range(20))
    assert eval_transform(img, 16).size == (16, 16)


def test_training_on_a_streamed_folder_with_workers(jpegs: Path) -> None:
    data = load_data(f"imagefolder:{jpegs}", stream=True).with_val(24)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.1, verbose=False, threads=1, workers=2)
    loader = data.loader("train", 16, workers=2)
    assert isinstance(loader, StreamLoader) and len(loader) == 6
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64

    model = net()
    result = fit(model, data, cfg)
    assert result.steps == 24 and result.test is not None and result.test.n == 24
    assert result.test.top1 > 50.0  # chance: 33%
    same = net()  # decoding is seeded per (seed, epoch, image): the workers do not change the batches
    fit(same, data, TrainConfig(epochs=4, batch_size=16, lr=0.1, verbose=False, threads=1, workers=0))
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())


def test_ranks_read_only_their_share(jpegs: Path) -> None:
    data = load_data(f"imagefolder:{jpegs}", stream=True)
    whole = next(iter(data.loader("train", 8, seed=3)))
    halves = [next(iter(data.loader("train", 8, seed=3, rank=r, world_size=2))) for r in (0, 1)]
    assert torch.equal(torch.cat([h[0] for h in halves]), whole[0])
    assert torch.equal(torch.cat([h[1] for h in halves]), whole[1])


def test_a_corrupt_streamed_image_is_one_line(jpegs: Path, tmp_path: Path) -> None:
    import shutil

    from graphprune.errors import GraphpruneError

    tree = shutil.copytree(jpegs, tmp_path / "tree")
    (tree / "train" / "c1" / "0003.jpg").write_bytes(b"broken")
    data = load_data(f"imagefolder:{tree}", stream=True)
    for workers in (0, 1):
        with pytest.raises(GraphpruneError) as info:
            for _ in data.loader("train", 40, shuffle=False, workers=workers):
                pass
        assert (
            str(info.value)
            == f"unreadable image {tree / 'train' / 'c1' / '0003.jpg'}: not an image PIL can identify"
        )


def test_finetune_from_a_streamed_image_folder_with_workers(jpegs: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from graphprune.cli import cli

    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))\n"
    )
    out = tmp_path / "run"
    args = ["finetune", f"{tmp_path / 'net.py'}:build", "--input-shape", "1,3,16,16", "--data",
            f"imagefolder:{jpegs}", "--stream", "--workers", "2", "--epochs", "2", "--batch-size", "16",
            "--lr", "0.1", "--no-kd", "--no-export", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["finetune"]["steps"] == 14 and report["pruned"]["n"] == 30  # 120 // 16 x 2; val/ is 30
    shown = CliRunner().invoke(cli, ["eval", str(out), "--memory-budget", "0", "--workers", "1"])
    assert shown.exit_code == 0, shown.output
    assert f"{report['pruned']['top1']:.2f}" in shown.stdout

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.tiny_data import write_fashion_mnist

from graphprune.train import DataError, load_data
from graphprune.train.data import DataNote
from graphprune.train.datasets import FASHION_MNIST_CLASSES


def write_tree(root: Path, splits: tuple[str, ...] = ("train", "test"), classes: int = 3, per_class: int = 2,
               size: int = 8, fmt: str = "png") -> dict[str, np.ndarray]:  # fmt: skip
    """An ImageFolder tree of solid-colour images; returns the arrays written, in load order."""
    written: dict[str, list[np.ndarray]] = {}
    for split in splits:
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                array = np.full((size, size, 3), 40 * c + i, dtype=np.uint8)
                array[0, 0] = (i, c, 7)
                Image.fromarray(array).save(folder / f"{i:03d}.{fmt}")
                written.setdefault(split, []).append(array)
    return {s: np.stack(a) for s, a in written.items()}


def zip_tree(root: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, prefix + p.relative_to(root).as_posix())
    return target


def test_imagefolder_directory_decodes_every_image(tmp_path: Path) -> None:
    written = write_tree(tmp_path / "tree", splits=("train", "val"))
    data = load_data(f"imagefolder:{tmp_path / 'tree'}")
    assert data.num_classes == 3 and data.classes == ("class0", "class1", "class2")
    assert data.input_shape == (3, 8, 8) and len(data.train) == 6 and len(data.test) == 6
    assert data.train.images.dtype == torch.uint8
    assert torch.equal(data.train.images, torch.from_numpy(written["train"]).permute(0, 3, 1, 2))
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_imagefolder_zip_and_image_size(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", size=10)
    archive = zip_tree(tmp_path / "tree", tmp_path / "data.zip", prefix="top/")
    data = load_data(f"imagefolder:{archive}", image_size=6)
    assert data.input_shape == (3, 6, 6) and len(data.test) == 6


def test_cifar10_zip_extracted_tree_and_python_batches(tmp_path: Path) -> None:
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for split in ("train", "test"):
        for c in classes:
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), 100, dtype=np.uint8)).save(
                tmp_path / "tree" / split / c / "0.jpg"
            )
    archive = zip_tree(tmp_path / "tree", tmp_path / "cifar.zip")
    from_zip = load_data(f"cifar10:{archive}")
    from_tree = load_data(f"cifar10:{tmp_path / 'tree'}")
    assert from_zip.num_classes == 10 and len(from_zip.train) == 10
    assert torch.equal(from_zip.train.images, from_tree.train.images)
    assert from_zip.mean == (0.485, 0.456, 0.406)

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        blob = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 9]}
        (batches / name).write_bytes(pickle.dumps(blob))
    py = load_data(f"cifar10:{tmp_path}")
    assert len(py.train) == 20 and len(py.test) == 4 and py.input_shape == (3, 32, 32)
    assert py.test.labels.tolist() == [0, 1, 2, 9]


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path: Path, gz: bool) -> None:
    write_fashion_mnist(tmp_path, n_train=12, n_test=5, gz=gz)
    data = load_data(f"fashion-mnist:{tmp_path}")
    assert data.input_shape == (1, 28, 28) and len(data.train) == 12 and len(data.test) == 5
    assert data.classes == FASHION_MNIST_CLASSES and data.num_classes == 10
    x, _ = next(iter(data.loader("train", 4)))
    assert x.shape == (4, 1, 28, 28)


def test_disk_cache_is_reused(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", splits=("train", "val"))
    first = load_data(f"imagefolder:{tmp_path / 'tree'}", cache_dir=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("imagefolder-*.pt"))
    assert len(cached) == 1
    from graphprune.train import datasets

    datasets._memory.clear()
    second = load_data(f"imagefolder:{tmp_path / 'tree'}", cache_dir=tmp_path / "cache")
    assert torch.equal(first.train.images, second.train.images)


def test_limit_keeps_classes_balanced(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", per_class=4)
    data = load_data(f"imagefolder:{tmp_path / 'tree'}", limit=5)
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_test", "no val/ or test/ split"),
        ("no_train", "no train/ split"),
        ("empty_class", "class folder test/class1 holds no images"),
        ("bad_image", "unreadable image"),
        ("class_mismatch", "different classes"),
    ],
)
def test_bad_data_gets_a_one_line_error_naming_the_culprit(tmp_path: Path, damage: str, message: str) -> None:
    root = tmp_path / "tree"
    write_tree(root)
    if damage == "no_test":
        for p in sorted((root / "test").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "test").rmdir()
    elif damage == "no_train":
        (root / "train").rename(root / "training")
    elif damage == "empty_class":
        for p in (root / "test" / "class1").iterdir():
            p.unlink()
    elif damage == "bad_image":
        (root / "train" / "class2" / "001.png").write_bytes(b"not a png")
    elif damage == "class_mismatch":
        (root / "test" / "class2").rename(root / "test" / "other")
    with pytest.raises(DataError) as info:
        load_data(f"imagefolder:{root}")
    text = str(info.value)
    assert message in text and "\n" not in text
    if damage == "bad_image":
        assert "001.png" in text


def test_bad_specs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data scheme 'mnist'"):
        load_data("mnist:/x")
    with pytest.raises(DataError, match="not found"):
        load_data(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="Fashion-MNIST file missing"):
        load_data(f"fashion-mnist:{tmp_path}")


def test_class_count_must_match_the_model(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree")
    data = load_data(f"imagefolder:{tmp_path / 'tree'}")
    with pytest.raises(DataError, match="has 3 classes but graphprune:cifar_resnet20 has 10 outputs"):
        data.check_num_classes(10, "graphprune:cifar_resnet20")


def _write_cifar_zip(tmp_path: Path, bad_member: str | None = None) -> Path:
    """A CIFAR-10 JPEG zip of one 32x32 image per class and split; `bad_member` holds garbage."""
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    target = tmp_path / "cifar.zip"
    with zipfile.ZipFile(target, "w") as z:
        for split in ("train", "test"):
            for c in classes:
                name = f"{split}/{c}/0.jpg"
                buf = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(buf, format="JPEG")
                z.writestr(name, b"garbage, not a jpeg" if name == bad_member else buf.getvalue())
    return target


@pytest.mark.parametrize("which", ["first", "later"])
@pytest.mark.parametrize("packed", ["directory", "zip"])
def test_a_corrupt_image_is_named_even_the_first(tmp_path: Path, which: str, packed: str) -> None:
    root = tmp_path / "tree"
    write_tree(root)
    name = "000.png" if which == "first" else "001.png"
    (root / "train" / ("class0" if which == "first" else "class2") / name).write_bytes(b"not a png")
    spec = f"imagefolder:{root if packed == 'directory' else zip_tree(root, tmp_path / 'd.zip')}"
    with pytest.raises(DataError) as info:
        load_data(spec)
    text = str(info.value)
    assert text.startswith("unreadable image") and name in text and "\n" not in text and "BytesIO" not in text


@pytest.mark.parametrize("scheme", ["imagefolder", "cifar10"])
def test_a_file_that_is_no_zip_is_named(tmp_path: Path, scheme: str) -> None:
    jpeg = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(jpeg)
    with pytest.raises(DataError, match=f"^{jpeg} is neither a directory nor a zip archive$"):
        load_data(f"{scheme}:{jpeg}")


def test_a_corrupt_jpeg_in_the_cifar10_zip_names_the_member(tmp_path: Path) -> None:
    archive = _write_cifar_zip(tmp_path, bad_member="train/bird/0.jpg")
    with pytest.raises(DataError) as info:
        load_data(f"cifar10:{archive}")
    text = str(info.value)
    assert text.startswith(f"unreadable image {archive}:train/bird/0.jpg: ") and "BytesIO" not in text


def test_an_empty_class_folder_in_a_zip_is_named(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_tree(root)
    for p in (root / "test" / "class1").iterdir():
        p.unlink()
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for p in sorted(root.rglob("*")):
            z.write(p, p.relative_to(root).as_posix() + ("/" if p.is_dir() else ""))
    with pytest.raises(DataError, match="class folder test/class1 holds no images"):
        load_data(f"imagefolder:{tmp_path / 'd.zip'}")


def test_greyscale_images_are_converted_to_the_models_channels(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_tree(root)
    first = root / "train" / "class0" / "000.png"
    Image.fromarray(np.full((8, 8), 77, dtype=np.uint8), mode="L").save(first)  # the first image is grey
    with pytest.warns(DataNote, match=r"converted 1 greyscale image\(s\) to RGB .*class0/000.png"):
        data = load_data(f"imagefolder:{root}")
    assert data.input_shape == (3, 8, 8)
    assert data.train.images[0].tolist() == torch.full((3, 8, 8), 77).tolist()
    with pytest.warns(DataNote, match="to greyscale for a 1-channel model"):
        grey = load_data(f"imagefolder:{root}", channels=1)
    assert grey.input_shape == (1, 8, 8) and grey.train.images[0, 0, 0, 0] == 77


def test_the_data_layer_imports_one_way() -> None:
    """data (load_data) -> datasets (formats) -> bundle (DataBundle): no module imports one above it."""
    import ast

    import graphprune.train

    root = Path(graphprune.train.__file__).parent
    order = ["data", "datasets", "bundle"]
    for i, name in enumerate(order):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {
            f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
        }
        above = {f"graphprune.train.{m}" for m in order[:i]}
        assert not imported & above, (name, imported & above)

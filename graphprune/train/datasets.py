"""The dataset formats behind each `--data` scheme, each decoded once into uint8 tensors.

- `cifar10:PATH`: the CIFAR-10 JPEG zip (default: the shared one), its extracted ImageFolder tree,
  or torchvision's python batches (`cifar-10-batches-py/`).
- `fashion-mnist:PATH`: IDX files, gzipped or not (default `/usr/share/datasets/fashion-mnist`).
- `imagefolder:PATH`: `PATH/train/<class>/*` plus `PATH/val/` or `PATH/test/`, a directory or a zip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from graphprune import shared
from graphprune.fileio import save_tensors
from graphprune.train.bundle import DataBundle, DataError, DataNote, ImageTensors, Split
from graphprune.train.loader import Augment
from graphprune.train.stream import ImageFiles, list_files

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MODES = ("L", "LA", "1", "I", "I;16", "F")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CACHE_VERSION = 1
DEFAULT_MEMORY_BUDGET = 4 * 2**30  # bytes of decoded uint8 images above which an image folder streams

Splits = dict[str, ImageTensors]
_memory: dict[tuple[object, ...], tuple[Splits, tuple[str, ...]]] = {}


# ----------------------------------------------------------------------------- cache


def _content_key(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's file names, sizes and mtimes."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    else:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                digest.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _cached(
    scheme: str,
    path: Path,
    options: tuple[object, ...],
    cache_dir: str | Path | None,
    decode: Callable[[], tuple[Splits, tuple[str, ...]]],
) -> tuple[Splits, tuple[str, ...]]:
    """Decode once per process (memory) and, with `cache_dir`, once per content hash (disk)."""
    st = path.stat()
    mem_key = (scheme, str(path.resolve()), st.st_size, st.st_mtime_ns, options)
    if mem_key in _memory:
        return _memory[mem_key]
    file = None
    if cache_dir is not None:
        tag = "-".join(str(o) for o in options)
        file = Path(cache_dir) / f"{scheme}-{_content_key(path)}-{tag}-v{CACHE_VERSION}.pt"
        if file.is_file():
            blob = torch.load(file, map_location="cpu", weights_only=True)
            result = (
                {s: ImageTensors(blob[f"{s}_images"], blob[f"{s}_labels"]) for s in ("train", "test")},
                tuple(blob["classes"]),
            )
            _memory[mem_key] = result
            return result
    result = decode()
    if file is not None:
        blob = {f"{s}_{k}": getattr(result[0][s], k) for s in ("train", "test") for k in ("images", "labels")}
        save_tensors({**blob, "classes": list(result[1])}, file)
    _memory[mem_key] = result
    return result


def _balanced(split: Split, limit: int | None) -> Split:
    """The first `limit // k` images of each of the k classes (one more for the first `limit % k`)."""
    if limit is None or limit >= len(split):
        return split
    classes = torch.unique(split.labels).tolist()
    keep: list[Tensor] = []
    for rank, c in enumerate(classes):
        idx = torch.nonzero(split.labels == c).flatten()
        keep.append(idx[: limit // len(classes) + (1 if rank < limit % len(classes) else 0)])
    return split.take(torch.sort(torch.cat(keep)).values)


# ----------------------------------------------------------------------------- image trees


class _Tree:
    """File listing and reading of a directory or a zip, by POSIX relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and not zipfile.is_zipfile(path):
            raise DataError(f"{path} is neither a directory nor a zip archive")
        try:
            self.archive = zipfile.ZipFile(path) if path.is_file() else None
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"unreadable zip archive {path}: {exc}") from None
        self.dirs: list[str] = []  # folders a zip lists (an empty class folder has no file to show it)
        if self.archive is not None:
            names = [n for n in self.archive.namelist() if not n.endswith("/")]
            self.dirs = [n.rstrip("/") for n in self.archive.namelist() if n.endswith("/")]
        else:
            names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        self.files = sorted(names)
        # A zip of one top-level folder (`cifar10/train/...`) counts as that folder.
        tops = {PurePosixPath(n).parts[0] for n in self.files if len(PurePosixPath(n).parts) > 1}
        self.prefix = ""
        if len(tops) == 1 and not {"train", "test", "val"} & tops:
            self.prefix = tops.pop() + "/"

    def classes(self, split: str) -> dict[str, list[str]] | None:
        """class name -> sorted file names of `split`, or None if the split is absent."""
        found = False
        by_class: dict[str, list[str]] = {}
        for name in self.files:
            if not name.startswith(self.prefix + split + "/"):
                continue
            found = True
            parts = PurePosixPath(name[len(self.prefix) :]).parts
            if len(parts) == 3 and parts[2].lower().endswith(IMAGE_SUFFIXES):
                by_class.setdefault(parts[1], []).append(name)
            elif len(parts) == 3:
                by_class.setdefault(parts[1], [])
        for name in self.dirs:
            parts = PurePosixPath(name[len(self.prefix) :]).parts if name.startswith(self.prefix) else ()
            if len(parts) >= 1 and parts[0] == split:
                found = True
                if len(parts) == 2:
                    by_class.setdefault(parts[1], [])
        if self.archive is None:
            root = self.path / self.prefix / split
            if root.is_dir():
                found = True
                for d in root.iterdir():
                    if d.is_dir():
                        by_class.setdefault(d.name, [])
        return by_class if found else None

    def read(self, name: str) -> bytes:
        if self.archive is not None:
            return self.archive.read(name)
        return (self.path / name).read_bytes()

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def _decode(tree: _Tree, name: str, mode: str, size: int | None) -> tuple[np.ndarray, bool]:
    """The image `name` as an (H, W, C) array in `mode` ("L" or "RGB"), and whether it was converted
    from another channel count."""
    where = f"{tree.path}:{name}" if tree.archive is not None else str(tree.path / name)
    try:
        with Image.open(io.BytesIO(tree.read(name))) as opened:
            converted = (opened.getbands() == ("L",) or opened.mode in GREY_MODES) != (mode == "L")
            img = opened.convert(mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"unreadable image {where}: {shared.image_error(exc)}") from None
    return (array if array.ndim == 3 else array[:, :, None]), converted


def _listing(
    tree: _Tree, path: Path, test_names: tuple[str, ...]
) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """{"train", "test"} -> class -> file names, and the sorted classes, after checking both splits
    exist, hold the same classes and no empty class folder."""
    train = tree.classes("train")
    test_split = next((s for s in test_names if tree.classes(s) is not None), None)
    if train is None:
        raise DataError(f"{path}: no train/ split")
    if test_split is None:
        raise DataError(f"{path}: no {' or '.join(s + '/' for s in test_names)} split")
    test = tree.classes(test_split)
    assert test is not None
    listed = {"train": train, "test": test}
    classes = sorted(train)
    if not classes:
        raise DataError(f"{path}: train/ holds no class folders")
    for split, by_class in listed.items():
        shown = "train" if split == "train" else test_split
        if sorted(by_class) != classes:
            extra = sorted(set(by_class) ^ set(classes))
            raise DataError(f"{path}: {shown}/ and train/ have different classes (differ in {extra})")
        empty = [c for c in classes if not by_class[c]]
        if empty:
            raise DataError(f"{path}: class folder {shown}/{empty[0]} holds no images")
    return listed, classes


def _streamed_tree(
    path: Path, image_size: int | None, channels: int, memory_budget: float | None
) -> tuple[dict[str, ImageFiles], list[str]] | None:
    """The train and test files of an ImageFolder tree to stream, or None when `memory_budget` (bytes)
    holds the decoded dataset (then it is decoded once). The image size is `image_size`, else the
    first training image's shorter side."""
    tree = _Tree(path)
    try:
        listed, classes = _listing(tree, path, ("val", "test"))
        size = image_size
        if size is None:
            first = listed["train"][classes[0]][0]
            where = f"{path}:{first}" if tree.archive is not None else str(path / first)
            try:
                with Image.open(io.BytesIO(tree.read(first))) as probe:
                    size = min(probe.size)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"unreadable image {where}: {shared.image_error(exc)}") from None
    finally:
        tree.close()
    count = sum(len(names) for by_class in listed.values() for names in by_class.values())
    if memory_budget is not None and count * channels * size * size <= memory_budget:
        return None
    files = {s: list_files(path, by_class, classes, size, channels) for s, by_class in listed.items()}
    return files, classes


def _image_tree(
    path: Path, image_size: int | None, test_names: tuple[str, ...], channels: int = 3
) -> tuple[Splits, tuple[str, ...]]:
    """Decode `train/` and the first of `test_names` present from an ImageFolder directory or zip, every
    image converted to `channels` (1: greyscale, else RGB), with a `DataNote` when some were not."""
    tree = _Tree(path)
    try:
        listed, classes = _listing(tree, path, test_names)
        mode = "L" if channels == 1 else "RGB"
        converted: list[str] = []
        splits: Splits = {}
        for split, by_class in listed.items():
            assert by_class is not None
            arrays: list[np.ndarray] = []
            labels: list[int] = []
            for label, cls in enumerate(classes):
                for name in by_class[cls]:
                    array, was_converted = _decode(tree, name, mode, image_size)
                    if was_converted:
                        converted.append(name)
                    if arrays and array.shape != arrays[0].shape:
                        raise DataError(
                            f"{path}: {name} is {array.shape[1]}x{array.shape[0]}, the first image "
                            f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass --image-size"
                        )
                    arrays.append(array)
                    labels.append(label)
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            splits[split] = ImageTensors(images, torch.tensor(labels, dtype=torch.int64))
    finally:
        tree.close()
    if converted:
        kind = "RGB" if mode == "L" else "greyscale"
        warnings.warn(
            f"{path}: converted {len(converted)} {kind} image(s) to {'greyscale' if mode == 'L' else 'RGB'} "
            f"for a {channels}-channel model (first: {converted[0]})",
            DataNote,
            stacklevel=2,
        )
    return splits, tuple(classes)


def _existing(path: str, default: Path | None, what: str) -> Path:
    if not path and default is None:
        raise DataError(f"{what}: no path given")
    p = Path(path).expanduser() if path else default
    assert p is not None
    if not p.exists():
        raise DataError(f"{what} not found: {p}")
    return p


# ----------------------------------------------------------------------------- schemes


def load_cifar10(
    path: str,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    channels: int = 3,
) -> DataBundle:
    """CIFAR-10 from the JPEG zip (read straight from it), its extracted tree, or the python batches."""
    if path:
        p = _existing(path, None, "CIFAR-10 data")
    else:
        try:
            p = shared.cifar10_jpeg_zip()
        except shared.GraphpruneError as exc:
            raise DataError(str(exc)) from None
    if p.is_dir() and (p / "data_batch_1").is_file() or (p / "cifar-10-batches-py").is_dir():
        root = p / "cifar-10-batches-py" if (p / "cifar-10-batches-py").is_dir() else p
        splits, classes = _cached("cifar10-py", root, (limit,), cache_dir, lambda: _cifar_batches(root))
    elif p.is_file() and zipfile.is_zipfile(p) and image_size in (None, 32):

        def decode() -> tuple[Splits, tuple[str, ...]]:
            try:
                out = {
                    s: ImageTensors(*shared.load_cifar10_jpeg(s, limit, path=p)) for s in ("train", "test")
                }
            except KeyError as exc:
                raise DataError(f"{p}: {exc}") from None
            except shared.GraphpruneError as exc:
                raise DataError(str(exc)) from None
            return out, shared.CIFAR10_CLASSES

        splits, classes = _cached("cifar10-zip", p, (limit,), cache_dir, decode)
    else:
        splits, classes = _cached(
            "cifar10-tree",
            p,
            (image_size, limit, channels),
            cache_dir,
            lambda: _image_tree(p, image_size, ("test", "val"), channels),
        )
    return DataBundle(
        name=f"cifar10:{p}",
        train=_balanced(splits["train"], limit),
        test=_balanced(splits["test"], limit),
        num_classes=len(classes),
        mean=shared.CIFAR10_MEAN,
        std=shared.CIFAR10_STD,
        augment=Augment(pad=4, flip=True),
        classes=classes,
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python batches (dicts of numpy arrays and lists) and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _cifar_batches(root: Path) -> tuple[Splits, tuple[str, ...]]:
    def read(name: str) -> dict[bytes, object]:
        file = root / name
        if not file.is_file():
            raise DataError(f"CIFAR-10 batch missing: {file}")
        try:
            with file.open("rb") as f:
                return dict(_ArrayUnpickler(f, encoding="bytes").load())
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DataError(f"unreadable CIFAR-10 batch {file}: {exc}") from None

    splits: Splits = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        batches = [read(n) for n in names]
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in batches])
        splits[split] = ImageTensors(
            torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)
        )
    return splits, shared.CIFAR10_CLASSES


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array of its stored shape."""
    opener: Callable[..., io.BufferedIOBase] = gzip.open if path.suffix == ".gz" else open  # type: ignore[assignment]
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise DataError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if body.size != int(np.prod(dims)):
            raise DataError(f"{path}: holds {body.size} bytes of data, its header says {dims}")
        return body.reshape(dims)
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"unreadable IDX file {path}: {exc}") from None


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"Fashion-MNIST file missing: {root / stem}[.gz]")


def load_fashion_mnist(
    path: str,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    channels: int = 1,
) -> DataBundle:
    """Fashion-MNIST from `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (default: Debian's path)."""
    if not path and not FASHION_MNIST_DIR.is_dir():
        raise DataError(
            f"Fashion-MNIST directory not found: {FASHION_MNIST_DIR} "
            "(apt-get install dataset-fashion-mnist, or give fashion-mnist:PATH)"
        )
    root = _existing(path, FASHION_MNIST_DIR, "Fashion-MNIST directory")

    def decode() -> tuple[Splits, tuple[str, ...]]:
        splits: Splits = {}
        for split, stem in (("train", "train"), ("test", "t10k")):
            images = _read_idx(_idx_file(root, f"{stem}-images-idx3-ubyte"))
            labels = _read_idx(_idx_file(root, f"{stem}-labels-idx1-ubyte"))
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(f"{root}: {stem} images {images.shape} do not match labels {labels.shape}")
            t = torch.from_numpy(images.copy())[:, None]
            if image_size is not None and image_size != t.shape[-1]:
                t = torch.nn.functional.interpolate(t.float(), size=(image_size, image_size), mode="bilinear")
                t = t.round().clamp(0, 255).to(torch.uint8)
            splits[split] = ImageTensors(t.contiguous(), torch.from_numpy(labels.astype(np.int64)))
        return splits, FASHION_MNIST_CLASSES

    splits, classes = _cached("fashion-mnist", root, (image_size,), cache_dir, decode)
    return DataBundle(
        name=f"fashion-mnist:{root}",
        train=_balanced(splits["train"], limit),
        test=_balanced(splits["test"], limit),
        num_classes=len(classes),
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
        augment=Augment(pad=2, flip=True),
        classes=classes,
    )


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _normalisation(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std): ImageNet's for RGB folders, 0.5 and 0.5 per channel otherwise."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * channels, (0.5,) * channels


def load_imagefolder(
    path: str,
    *,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    channels: int = 3,
    stream: bool | None = None,
    memory_budget: float = DEFAULT_MEMORY_BUDGET,
) -> DataBundle:
    """Any ImageFolder tree (directory or zip): `train/<class>/*` plus `val/` or `test/`, decoded to
    `channels` (1: greyscale, else RGB).

    Decoded once into memory when the decoded images fit `memory_budget` bytes, else streamed (files
    decoded per batch by DataLoader workers, `stream.py`); `stream` True or False forces either."""
    root = _existing(path, None, "ImageFolder tree")
    if stream is not False:
        streamed = _streamed_tree(root, image_size, channels, None if stream else memory_budget)
        if streamed is not None:
            files, names = streamed
            mean, std = _normalisation(channels)
            return DataBundle(
                name=f"imagefolder:{root}",
                train=_balanced(files["train"], limit),
                test=_balanced(files["test"], limit),
                num_classes=len(names),
                mean=mean,
                std=std,
                classes=tuple(names),
            )
    splits, classes = _cached(
        "imagefolder",
        root,
        (image_size, channels),
        cache_dir,
        lambda: _image_tree(root, image_size, ("val", "test"), channels),
    )
    channels = splits["train"].images.shape[1]
    size = splits["train"].images.shape[-1]
    mean, std = _normalisation(channels)
    return DataBundle(
        name=f"imagefolder:{root}",
        train=_balanced(splits["train"], limit),
        test=_balanced(splits["test"], limit),
        num_classes=len(classes),
        mean=mean,
        std=std,
        augment=Augment(pad=max(1, size // 8), flip=True),
        classes=classes,
    )


SCHEMES: dict[str, Callable[..., DataBundle]] = {
    "cifar10": load_cifar10,
    "fashion-mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
}

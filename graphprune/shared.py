"""The read-only shared data (weights, CIFAR-10 JPEG) that tests and benchmarks use, outside the repo.

Its location is `$GRAPHPRUNE_SHARED` if set, else `<repo root>/../shared`.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from graphprune.errors import GraphpruneError

ENV_VAR = "GRAPHPRUNE_SHARED"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Normalisation the pretrained CIFAR weights in shared/weights were trained with.
CIFAR10_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR10_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def shared_dir() -> Path:
    """`$GRAPHPRUNE_SHARED` if set, else `<repo root>/../shared` if it exists, else `../shared`."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parent.parent.parent / "shared"
    if beside_repo.is_dir():
        return beside_repo
    return Path("../shared")


def _missing(what: str, path: Path) -> GraphpruneError:
    return GraphpruneError(f"{what} not found: {path} (set {ENV_VAR} to the shared data directory)")


def cifar10_jpeg_zip() -> Path:
    """Path of `data/cifar10-jpeg.zip` in the shared directory."""
    path = shared_dir() / "data" / "cifar10-jpeg.zip"
    if not path.is_file():
        raise _missing("CIFAR-10 JPEG archive", path)
    return path


def weights_file(name: str) -> Path:
    """Path of a file in `weights/`: an exact name, `NAME.th`, or the one `NAME-<hash>.th`.

    `weights_file("cifar10_resnet20")` finds `cifar10_resnet20-12fca82f.th`.
    """
    folder = shared_dir() / "weights"
    for candidate in (folder / name, folder / f"{name}.th"):
        if candidate.is_file():
            return candidate
    matches = sorted(folder.glob(f"{name}-*.th")) if folder.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise GraphpruneError(f"weights name {name!r} is ambiguous in {folder}: {[m.name for m in matches]}")
    raise _missing(f"weights file {name!r}", folder)


def load_cifar10_jpeg(
    split: str, limit: int | None = None, path: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a split ("train" or "test") of the CIFAR-10 JPEG zip: uint8 (N, 3, 32, 32) and int64 labels.

    `path` defaults to the shared zip (`cifar10_jpeg_zip()`).

    Order: classes sorted (= label order), files sorted by name within a class. With `limit`, take the
    first files of every class, `limit // 10` each, the first `limit % 10` classes one more.
    """
    if split not in ("train", "test"):
        raise GraphpruneError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 0:
        raise GraphpruneError(f"limit must be >= 0, got {limit}")
    path = Path(path) if path is not None else cifar10_jpeg_zip()
    with zipfile.ZipFile(path) as archive:
        by_class: dict[str, list[str]] = {}
        for name in archive.namelist():
            parts = PurePosixPath(name).parts
            if len(parts) == 3 and parts[0] == split and parts[2].lower().endswith(".jpg"):
                by_class.setdefault(parts[1], []).append(name)
        classes = sorted(by_class)
        if tuple(classes) != CIFAR10_CLASSES:
            raise GraphpruneError(
                f"{path}: {split}/ holds classes {classes}, expected {list(CIFAR10_CLASSES)}"
            )
        names: list[str] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            files = sorted(by_class[cls])
            if limit is not None:
                files = files[: limit // len(classes) + (1 if label < limit % len(classes) else 0)]
            names += files
            labels += [label] * len(files)
        images = np.empty((len(names), 32, 32, 3), dtype=np.uint8)
        for i, name in enumerate(names):
            try:
                with Image.open(io.BytesIO(archive.read(name))) as img:
                    array = np.asarray(img.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise GraphpruneError(f"unreadable image {path}:{name}: {image_error(exc)}") from None
            if array.shape != (32, 32, 3):
                raise GraphpruneError(f"{path}: {name} is {array.shape[1]}x{array.shape[0]}, expected 32x32")
            images[i] = array
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)


def image_error(exc: BaseException) -> str:
    """PIL's reason an image did not decode, without the `<_io.BytesIO object at 0x...>` it names."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can identify"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def normalize_cifar10(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32, scaled to [0, 1] and normalised with CIFAR10_MEAN/STD."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std

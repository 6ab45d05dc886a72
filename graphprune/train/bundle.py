"""A decoded dataset: `DataBundle` (train/val/test uint8 tensors, classes, normalisation, augmentation),
the errors and notes of the data layer, and the class-stratified sampling of a validation split.

The data layer imports one way: `data` (load_data) -> `datasets` (the formats) -> `bundle` (this).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from graphprune.errors import GraphpruneError
from graphprune.train.loader import Augment, BatchLoader
from graphprune.train.stream import ImageFiles, StreamLoader


class DataError(GraphpruneError):
    """A `--data` spec or the dataset it names is unusable (missing split, bad image, ...)."""


class DataNote(UserWarning):
    """Something done to the data the user should know of (images converted to the model's channels)."""


@dataclass(frozen=True)
class ImageTensors:
    """One split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def take(self, index: Tensor) -> ImageTensors:
        """The images at positions `index`, in that order."""
        return ImageTensors(self.images[index].contiguous(), self.labels[index].contiguous())


def stratified_sample(labels: Tensor, n: int, seed: int) -> Tensor:
    """Sorted positions of a fixed, shuffled, class-stratified sample of `n` of `labels`.

    Each class gets its share of `n` in proportion to its count (largest remainders first, ties by
    class), drawn at random within the class by a generator seeded with `seed`: every class is present
    whenever `n` allows, and the same (labels, n, seed) give the same sample on any machine.
    """
    total = len(labels)
    if not 0 < n <= total:
        raise DataError(f"cannot sample {n} of {total} images")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total
    shares = exact.floor().long()
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - shares[i]).item(), i))
    for i in order[: n - int(shares.sum())]:
        shares[i] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c, k in zip(classes.tolist(), shares.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values


Split = ImageTensors | ImageFiles  # decoded into memory, or files decoded per batch (streamed)


@dataclass(frozen=True)
class DataBundle:
    """A decoded dataset: train and test splits (and a validation split held out of train, if any),
    plus how to normalise and augment them."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = field(default_factory=Augment)
    classes: tuple[str, ...] = ()
    val: Split | None = None

    @property
    def streamed(self) -> bool:
        """Whether the splits are files decoded per batch (`stream.ImageFiles`), not tensors."""
        return isinstance(self.train, ImageFiles)

    @property
    def eval_split(self) -> str:
        """The split decisions are made on: `val` when held out, else `test`."""
        return "val" if self.val is not None else "test"

    def with_val(self, size: int | float, seed: int = 0) -> DataBundle:
        """This dataset with a fixed, class-stratified validation split held out of train.

        `size` is a number of images or, below 1, a fraction of the training split; `seed` fixes the
        draw. Training then uses the rest."""
        if self.val is not None:
            raise DataError(f"{self.name}: a validation split is already held out")
        n = round(size * len(self.train)) if isinstance(size, float) and size < 1 else int(size)
        if not 0 < n < len(self.train):
            raise DataError(f"{self.name}: cannot hold out {size} of {len(self.train)} training images")
        held = stratified_sample(self.train.labels, n, seed)
        rest = torch.ones(len(self.train), dtype=torch.bool)
        rest[held] = False
        return replace(self, train=self.train.take(torch.nonzero(rest).flatten()), val=self.train.take(held))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        if isinstance(self.train, ImageFiles):
            return self.train.shape
        c, h, w = self.train.images.shape[1:]
        return (int(c), int(h), int(w))

    def sampled(self, split: str, n: int, seed: int = 0) -> DataBundle:
        """This dataset with `split` cut to a fixed class-stratified sample of `n` images (all if fewer)."""
        data = self.split(split)
        if n >= len(data):
            return self
        sample = data.take(stratified_sample(data.labels, n, seed))
        if split == "train":
            return replace(self, train=sample)
        return replace(self, val=sample) if split == "val" else replace(self, test=sample)

    def split(self, name: str) -> Split:
        if name == "val" and self.val is None:
            raise DataError(f"{self.name}: no validation split held out (use with_val / --val-split)")
        if name not in ("train", "val", "test"):
            raise DataError(f"{self.name}: unknown split {name!r} (choose train, val or test)")
        return {"train": self.train, "val": self.val, "test": self.test}[name]  # type: ignore[return-value]

    def loader(
        self,
        split: str,
        batch_size: int,
        shuffle: bool | None = None,
        seed: int = 0,
        augment: bool | None = None,
        device: str | torch.device = "cpu",
        *,
        drop_last: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
    ) -> BatchLoader | StreamLoader:
        """Normalised float batches `(x, y)` of `split`; the train split shuffles and augments by default.

        Streamed splits are decoded by `workers` DataLoader processes (random-resized-crop and flip to
        augment, resize and centre-crop else); decoded ones are batched from memory (`workers` unused)."""
        data = self.split(split)
        is_train = split == "train"
        if isinstance(data, ImageFiles):
            return StreamLoader(
                data, batch_size, mean=self.mean, std=self.std,
                shuffle=is_train if shuffle is None else shuffle, seed=seed,
                augment=is_train if augment is None else augment, device=device,
                drop_last=is_train if drop_last is None else drop_last, rank=rank, world_size=world_size,
                workers=workers,
            )  # fmt: skip
        return BatchLoader(
            data.images,
            data.labels,
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=is_train if shuffle is None else shuffle,
            seed=seed,
            augment=self.augment if (is_train if augment is None else augment) else None,
            device=device,
            drop_last=is_train if drop_last is None else drop_last,
            rank=rank,
            world_size=world_size,
        )

    def check_num_classes(self, num_outputs: int, model_name: str = "the model") -> None:
        """Raise DataError unless the model has one output per class."""
        if num_outputs != self.num_classes:
            raise DataError(
                f"{self.name} has {self.num_classes} classes but {model_name} has {num_outputs} outputs"
            )

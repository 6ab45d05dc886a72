"""Atomic file writes: a reader never sees a half-written output, nor a half-written set of outputs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from graphprune.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest existing ancestor (the current directory for a relative path)."""
    return next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), Path("."))


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Prove directory `path` can be written (before expensive work), creating nothing.

    A missing directory counts as writable when its closest existing ancestor is a writable directory.
    """
    target = Path(path)
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise OutputError(f"cannot write into {target}: {existing} exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".graphprune-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into {target}: {exc.strerror or exc}") from None
    return target


def check_writable_file(path: str | os.PathLike[str]) -> Path:
    """Prove file `path` can be created (creating its parent directories); OutputError if not."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: is a directory")
    check_writable_dir(target.parent if str(target.parent) else Path("."))
    return target


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_tensors(obj: object, path: str | os.PathLike[str]) -> None:
    """torch.save `obj` (tensors and plain containers only) to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def staged_output(directory: str | os.PathLike[str], names: Sequence[str]) -> Iterator[Path]:
    """Yield an empty staging directory; publish what the block wrote there into `directory` on success.

    `names` is the output set, in publishing order (put the file that marks a finished set last).
    On success each staged entry replaces its namesake in `directory` (a missing `directory` is created
    by renaming the staging directory onto it, all at once), and a name of the set that this run did not
    write is removed from `directory`, so no stale file from an earlier run is left beside the new ones.
    Staged entries outside `names` are published first; other files in `directory` are never touched.
    On failure the staging directory is deleted and `directory` is left exactly as it was (not even created).
    """
    target = Path(directory)
    check_writable_dir(target)
    existing = _nearest_existing(target)
    label = target.name or "output"
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{label}.staging-", dir=existing))
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give it the mode mkdir would
    except OSError as exc:
        raise OutputError(f"cannot write into {target}: {exc.strerror or exc}") from None
    try:
        yield staging
        _publish(staging, target, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path, names: Sequence[str]) -> None:
    """Move the staged entries into `target` (see `staged_output`)."""
    written = {p.name for p in staging.iterdir()}
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)
            return
        for name in [*sorted(written - set(names)), *names]:
            new, old = staging / name, target / name
            if name in written:
                _replace(new, old)
            elif old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write into {target}: {exc.strerror or exc}") from None


def _replace(new: Path, old: Path) -> None:
    """Rename `new` onto `old`; an existing directory at `old` is moved aside first, then deleted."""
    if old.is_dir() and not old.is_symlink():
        trash = new.with_name(f".{new.name}.old")
        os.rename(old, trash)
        os.rename(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, old)

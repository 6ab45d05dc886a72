"""Read state dicts from weight files and load them into models, with one-line WeightsErrors."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from graphprune.errors import WeightsError, first_line

_PREFIX = "module."
_SHOWN_KEYS = 3
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_failure(exc: BaseException) -> str:
    """A one-line reason for a torch.load failure (its own messages run to several paragraphs)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        # torch's message advises weights_only=False, which would run the file's code: never repeat it.
        found = _BLOCKED_GLOBAL.search(text)
        needs = f"the Python global {found.group(1)}" if found else "Python objects other than tensors"
        return f"refused: it needs {needs}, and weights are loaded as tensors and plain containers only"
    if isinstance(exc, KeyError):
        return f"not a torch.save file (KeyError {text})"
    return first_line(exc)


def _as_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    """Unwrap {"state_dict": ...}/{"model": ...}, check str -> Tensor, strip a DataParallel `module.` prefix.

    Returns a new dict holding the same tensors; `obj` is not modified.
    """
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source} does not hold a state dict (got {type(obj).__name__})")
    if not obj:
        raise WeightsError(f"{source} holds an empty state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"{source} does not hold a state dict: entry {bad[0]!r} is not a named tensor")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items()}
    return state


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from a `.safetensors` or a torch.save file on the CPU (weights_only, no code runs).

    Accepts a raw state dict or a checkpoint dict with a "state_dict" or "model" entry, and strips a
    `module.` prefix carried by every key.
    """
    file = Path(path)
    if not file.exists():
        raise WeightsError(f"weights file not found: {file}")
    if not file.is_file():
        raise WeightsError(f"weights file {file} is not a file")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _as_state_dict(load_file(file, device="cpu"), f"weights file {file}")
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"cannot read weights file {file}: {first_line(exc)}") from None
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- a corrupt file fails in many ways (pickle, zip, EOF, ...)
        raise WeightsError(f"cannot read weights file {file}: {_load_failure(exc)}") from None
    return _as_state_dict(obj, f"weights file {file}")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN_KEYS else "")


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Tensor],
    *,
    strict: bool = True,
) -> nn.Module:
    """Copy weights from a file or a state dict into `model` (in place) and return `model`.

    Raises WeightsError naming the source, the first missing/unexpected keys and the first shape mismatch.
    With strict=False, missing and unexpected keys are allowed; shape mismatches never are.
    A BatchNorm `num_batches_tracked` absent from the file is not counted as missing.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "state dict"
        state = _as_state_dict(path_or_state_dict, source)
    else:
        source = f"weights file {Path(path_or_state_dict)}"
        state = load_state_dict_file(path_or_state_dict)

    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and _shape(state[k]) != _shape(expected[k])]

    problems = []
    if strict and missing:
        problems.append(f"missing {_key_list(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected {_key_list(unexpected)}")
    if mismatched:
        k = mismatched[0]
        more = f" (+{len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        problems.append(f"shape mismatch {k}: file {_shape(state[k])} vs model {_shape(expected[k])}{more}")
    if problems:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")

    # Complete absent BN counters from the model itself so strict loading passes; `state` is our own dict.
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = expected[k]
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise WeightsError(f"{source} does not fit {type(model).__name__}: {first_line(exc)}") from None
    return model

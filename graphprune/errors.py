"""Errors graphprune raises, and the helpers that keep their messages to one line naming the culprit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_DETAIL_CHARS = 300


def first_line(exc: BaseException, *, with_type: bool = False) -> str:
    """The first non-empty line of `exc`'s message (its type name if empty), at most 300 characters.

    `with_type` prefixes the type name (``ValueError: ...``), for exceptions from other libraries.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean a, b?)`` with up to three close matches of `word`, or "" if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


class GraphpruneError(Exception):
    """Base class: the CLI prints these as one line, without a stack trace."""


class TraceError(GraphpruneError):
    """torch.fx could not trace the model, or the example input does not fit it."""


class PlanError(GraphpruneError):
    """A PruningPlan is malformed or does not fit the model it is applied to."""


class WeightsError(GraphpruneError):
    """A weights file is unreadable, corrupt, or does not match the architecture."""


class VerificationError(GraphpruneError):
    """A rewritten model or an exported file does not compute what it should."""


class ModelSpecError(GraphpruneError):
    """A MODEL argument (torchvision:NAME, timm:NAME, graphprune:NAME, file.py:factory) cannot be resolved."""


class OutputError(GraphpruneError):
    """An output path cannot be written."""


class ShapeSpecialisedWarning(UserWarning):
    """A module traced with the example input's shapes: the traced graph runs at that input size."""


class EvalOnlyWarning(UserWarning):
    """Traced in eval mode: training-only branches (aux heads, `if self.training:`) are left out."""

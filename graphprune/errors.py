"""Errors graphprune raises. Each message names the culprit in one line."""

from __future__ import annotations


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
    """A MODEL argument (torchvision:NAME, graphprune:NAME, file.py:factory) cannot be resolved."""


class OutputError(GraphpruneError):
    """An output path cannot be written."""


class EvalOnlyWarning(UserWarning):
    """Traced in eval mode: training-only branches (aux heads, `if self.training:`) are left out."""

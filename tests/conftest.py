"""Fixtures shared by all tests. Keep this file small: put topic fixtures in their own test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from graphprune import shared

# CI replays a fixed set of examples (a red run then means the change broke something); developer runs
# keep exploring new random examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data directory (weights, CIFAR-10 JPEG); skips the test when it is absent."""
    path = shared.shared_dir()
    if not (path / "weights").is_dir() or not (path / "data").is_dir():
        pytest.skip(f"shared data not found at {path} (set {shared.ENV_VAR})")
    return path

"""Fixtures shared by all tests. Keep this file small: put topic fixtures in their own test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphprune import shared


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data directory (weights, CIFAR-10 JPEG); skips the test when it is absent."""
    path = shared.shared_dir()
    if not (path / "weights").is_dir() or not (path / "data").is_dir():
        pytest.skip(f"shared data not found at {path} (set {shared.ENV_VAR})")
    return path

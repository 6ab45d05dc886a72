"""Interleaved onnxruntime timing of several files: every file timed every round, order alternating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from graphprune import latency
from graphprune.export import export_onnx


def _export(path: Path, channels: int) -> Path:
    export_onnx(nn.Conv2d(3, channels, 3), torch.randn(1, 3, 16, 16), path, simplify=False)
    return path


def test_interleaved_latency_times_each_file_every_round_in_alternating_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = {name: _export(tmp_path / f"{name}.onnx", c) for name, c in (("a", 4), ("b", 8), ("c", 16))}
    order: list[str] = []
    session_names = {}
    real_prepared = latency._prepared

    def prepared(path: Any, shape: Any, threads: int) -> Any:
        session, feed = real_prepared(path, shape, threads)
        session_names[id(session)] = Path(path).stem
        return session, feed

    real_time_runs = latency._time_runs

    def time_runs(session: Any, feed: Any, warmup: int, runs: int) -> list[float]:
        order.append(session_names[id(session)])
        return real_time_runs(session, feed, warmup, runs)

    monkeypatch.setattr(latency, "_prepared", prepared)
    monkeypatch.setattr(latency, "_time_runs", time_runs)
    stats = latency.interleaved_latency(paths, (1, 3, 16, 16), rounds=3, runs=4, warmup=1)
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert set(stats) == {"a", "b", "c"}
    for s in stats.values():
        assert 0 < s["p50_ms"] <= s["p90_ms"]
        assert s["rounds"] == 3 and s["runs"] == 4


def test_interleaved_latency_rejects_zero_rounds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds"):
        latency.interleaved_latency({"a": tmp_path / "a.onnx"}, (1, 3, 8, 8), rounds=0)

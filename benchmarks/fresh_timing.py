"""ONNX files timed together from a fresh process, as the equal-latency benchmark's final timing times them
(a process that has just trained is not the state a deployment runs in).

    echo '{"paths": {"a": "a.onnx", "b": "b.onnx"}, "shape": [[1, 3, 32, 32]], "rounds": 45,
           "passes": 5, "threads": 1}' | python benchmarks/fresh_timing.py

`time_together` times here; `time_fresh` runs this script in a child process and returns its answer.
Per file: the median over passes of each pass's p10_ms (`interleaved_latency`, the files in turn).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphprune.latency import interleaved_latency


def time_together(
    paths: Mapping[str, str], shape: Sequence[Sequence[int]], rounds: int, passes: int, threads: int
) -> dict[str, dict[str, Any]]:
    """`paths` timed together in `passes` separate passes of `rounds` interleaved rounds (batch 1)."""
    timed = [interleaved_latency(paths, shape, rounds=rounds, threads=threads) for _ in range(passes)]
    return {
        name: {
            "p10_ms": float(np.median([t[name]["p10_ms"] for t in timed])),
            "passes": len(timed),
            "pass_p10_ms": [t[name]["p10_ms"] for t in timed],
        }
        for name in paths
    }


def time_fresh(
    paths: Mapping[str, str], shape: Sequence[Sequence[int]], rounds: int, passes: int, threads: int
) -> dict[str, dict[str, Any]]:
    """`time_together` in a child process."""
    request = {"paths": dict(paths), "shape": [list(s) for s in shape], "rounds": rounds, "passes": passes,
               "threads": threads}  # fmt: skip
    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())], input=json.dumps(request), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if child.returncode:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"timing in a fresh process failed (exit {child.returncode}): {last}")
    answer: dict[str, dict[str, Any]] = json.loads(child.stdout)
    return answer


if __name__ == "__main__":
    req = json.load(sys.stdin)
    print(json.dumps(time_together(req["paths"], req["shape"], req["rounds"], req["passes"], req["threads"])))

"""What every benchmark result records about its run: the command, the date, the machine and the versions."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxsim", "torch-pruning", "numpy", "graphprune")


def command_line() -> str:
    """The command that started this process, as one would type it from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """CPU model, core count, memory and accelerator of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Installed versions of the packages the numbers depend on, and the git commit of this checkout."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        out["git"] = commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        out["git"] = "unknown"
    return out


def code_version(path: str = "graphprune") -> str:
    """The git tree of `path` this checkout runs (`-dirty` with uncommitted changes in it): two results
    with the same value ran the same code there, whatever else changed between them."""
    try:
        tree = subprocess.run(
            ["git", "rev-parse", "--short", f"HEAD:{path}"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", path], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return tree + ("-dirty" if dirty else "")


def describe_run(mode: str) -> dict[str, Any]:
    """The `meta` object of a results JSON. `load_average` (1, 5, 15 min) says how busy the machine was
    when the run began: timings taken beside other work are noisier (ratios of interleaved runs less so)."""
    return {
        "command": command_line(),
        "mode": mode,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }

"""The tool-speed benchmark's smoke mode runs end to end and writes its three outputs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tool_speed.py"


def test_smoke_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("tool_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = CliRunner().invoke(module.main, ["--smoke", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "tool_speed.json").read_text())
    (row,) = data["results"]
    assert row["model"] == "resnet18" and row["median_s"]["tp"] > 0 and row["median_s"]["gp"] > 0
    assert row["tp_flops"] < row["flops"] and row["gp_flops"] <= row["tp_flops"] + 1  # same budget
    assert "| resnet18 |" in (tmp_path / "tool_speed.md").read_text()
    assert (tmp_path / "tool_speed.png").read_bytes()[:4] == b"\x89PNG"

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from graphprune.cli import cli


def test_latency_model_fits_reports_and_reuses_the_cache(tmp_path: Path) -> None:
    args = ["latency-model", "graphprune:cifar_resnet20", "--samples", "8", "--runs", "2"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "lat.json")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "held-out MAPE" in first.output and "NCHWc layout" in first.output
    model = json.loads((tmp_path / "lat.json").read_text())
    assert model["format"] == "graphprune.latency_model" and model["report"]["samples"] == 8
    cached = list((tmp_path / "cache").glob("latency-*.jsonl"))
    assert len(cached) == 1 and len(cached[0].read_text().splitlines()) == 8
    before = cached[0].stat().st_mtime_ns
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert cached[0].stat().st_mtime_ns == before  # nothing was measured again


def test_latency_model_names_a_bad_out_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(
        cli, ["latency-model", "graphprune:cifar_resnet20", "--out", str(tmp_path / "file" / "lat.json")]
    )
    assert result.exit_code == 2 and "error:" in result.output


def test_prune_takes_one_budget_and_parses_the_latency_target(tmp_path: Path) -> None:
    base = ["prune", "graphprune:cifar_resnet20", "--method", "wgates", "--out", str(tmp_path / "r")]
    both = CliRunner().invoke(cli, [*base, "--target-flops", "0.5", "--target-latency", "0.5"])
    assert both.exit_code == 2 and "one budget" in both.output
    bad = CliRunner().invoke(cli, [*base, "--target-latency", "fast"])
    assert bad.exit_code == 2 and "--target-latency" in bad.output and "fast" in bad.output
    l1 = CliRunner().invoke(cli, [*base[:3], "l1", *base[4:], "--target-latency", "2ms"])
    assert l1.exit_code == 2 and "--target-flops only" in l1.output

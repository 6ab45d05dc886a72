"""The `timm:NAME` MODEL spec on the command line."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from graphprune.cli import cli


def test_timm_spec_without_timm_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    result = CliRunner().invoke(cli, ["inspect", "timm:efficientnet_b0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        result.stderr.strip().splitlines()[-1] == "error: timm is not installed: pip install graphprune[timm]"
    )


def test_inspect_accepts_a_timm_spec() -> None:
    from graphprune.errors import ModelSpecError
    from graphprune.timm_compat import import_timm

    try:
        import_timm()
    except ModelSpecError:
        pytest.skip("timm is not installed")
    result = CliRunner().invoke(cli, ["inspect", "timm:mobilenetv3_small_050", "--input-shape", "1,3,64,64"])
    assert result.exit_code == 0, result.output
    assert "blocks" in result.output.lower()

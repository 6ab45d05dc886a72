"""One-line error messages."""

from __future__ import annotations

from graphprune.errors import MAX_DETAIL_CHARS, did_you_mean, first_line


def test_first_line_keeps_one_line_and_caps_its_length() -> None:
    assert first_line(ValueError("\n  first\nsecond")) == "first"
    assert first_line(ValueError("first\nsecond"), with_type=True) == "ValueError: first"
    assert first_line(KeyError()) == "KeyError"
    long = first_line(RuntimeError("x" * 1000))
    assert len(long) == MAX_DETAIL_CHARS and long.endswith("...")


def test_did_you_mean_lists_close_names_only() -> None:
    assert did_you_mean("resnt50", ["resnet50", "resnet18", "vgg16"]) == " (did you mean resnet50, resnet18?)"
    assert did_you_mean("zzz", ["resnet50"]) == ""

"""Atomic outputs: single files and whole output sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphprune.errors import OutputError
from graphprune.fileio import check_writable_dir, check_writable_file, staged_output

NAMES = ("a.bin", "b.txt", "done.json")


def _listing(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.iterdir())}


def test_new_directory_appears_with_the_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with staged_output(out, NAMES) as stage:
        assert not out.exists()
        for name in NAMES:
            (stage / name).write_text(name, encoding="utf-8")
    assert _listing(out) == {name: name for name in NAMES}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


def test_existing_set_is_replaced_and_stale_names_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for name in (*NAMES, "notes.md"):
        (out / name).write_text("old", encoding="utf-8")
    with staged_output(out, NAMES) as stage:
        (stage / "a.bin").write_text("new", encoding="utf-8")
        (stage / "done.json").write_text("new", encoding="utf-8")
    # b.txt belongs to the set but was not written this time: an earlier run's copy must not stay
    assert _listing(out) == {"a.bin": "new", "done.json": "new", "notes.md": "old"}


def test_staged_subdirectory_replaces_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "stages" / "old").mkdir(parents=True)
    with staged_output(out, ("stages",)) as stage:
        (stage / "stages" / "new").mkdir(parents=True)
    assert [p.name for p in (out / "stages").iterdir()] == ["new"]
    assert sorted(p.name for p in out.iterdir()) == ["stages"]


@pytest.mark.parametrize("existing", [True, False])
def test_failure_leaves_the_previous_set_and_no_staging(tmp_path: Path, existing: bool) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        for name in NAMES:
            (out / name).write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="late failure"), staged_output(out, NAMES) as stage:
        (stage / "a.bin").write_text("new", encoding="utf-8")
        raise RuntimeError("late failure")
    if existing:
        assert _listing(out) == {name: "old" for name in NAMES}
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])


def test_entries_outside_the_set_are_published_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with staged_output(out, NAMES) as stage:
        (stage / "extra.png").write_text("new", encoding="utf-8")
        (stage / "done.json").write_text("new", encoding="utf-8")
    assert _listing(out) == {"extra.png": "new", "done.json": "new"}


def test_writability_checks_name_the_blocker_and_create_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match=f"{blocker} exists and is not a directory"):
        check_writable_dir(blocker / "sub")
    with pytest.raises(OutputError, match="is a directory"):
        check_writable_file(tmp_path)
    assert check_writable_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y"
    assert check_writable_file(tmp_path / "z" / "m.onnx") == tmp_path / "z" / "m.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]

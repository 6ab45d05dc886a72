"""Console output of the command line: stdout tables, stderr progress and notes, number formats."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def stdout() -> Console:
    """Tables go to stdout; 120 columns when it is not a terminal (logs, pipes, tests)."""
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if wide else 120, highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Show a spinner on stderr while the block runs, then a done line with its duration."""
    err = stderr()
    start = time.perf_counter()
    with err.status(f"{escape(message)}..."):
        yield
    err.print(f"[green]done[/] {escape(message)} [dim]({time.perf_counter() - start:.1f}s)[/]")


def note(message: str) -> None:
    stderr().print(f"[yellow]note:[/] {escape(message)}")


def table(title: str, *, show_header: bool = True) -> Table:
    """A table whose left-aligned title never wraps (the table is at least as wide as the title)."""
    return Table(title=title, title_justify="left", show_header=show_header, min_width=len(title))


def shape_text(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def mmacs(flops: float) -> str:
    return f"{flops / 1e6:,.2f}"


def ratio_text(after: float | None, before: float | None) -> str:
    if after is None or not before:
        return "-"
    return f"{after / before:.3f}"


def error_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"

"""The `graphprune` command line: inspect, prune, apply, export and demo.

One module per command; `group` holds the click group and its error handling, `console` the
output, `options` the shared options and `pipeline` the steps the commands share. A new command
is a module with a click command, added to `cli` below.
"""

from __future__ import annotations

from graphprune.cli import apply, demo, export, inspect, prune
from graphprune.cli.group import cli

for _command in (inspect.inspect, prune.prune, apply.apply, export.export, demo.demo):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point (`graphprune = graphprune.cli:main`)."""
    cli(prog_name="graphprune")


__all__ = ["cli", "main"]

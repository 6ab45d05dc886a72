"""The `graphprune` command line: inspect, prune, finetune, eval, apply, export and demo.

One module per command; `group` holds the click group and its error handling, `console` the
output, `options` the shared options and `pipeline` the steps the commands share. A new command
is a module with a click command, added to `cli` below.
"""

from __future__ import annotations

from graphprune.cli import apply, demo, eval, export, finetune, inspect, latency_model, prune
from graphprune.cli.group import cli

for _command in (
    inspect.inspect, prune.prune, finetune.finetune, eval.eval_command, apply.apply, export.export, demo.demo,
):  # fmt: skip
    cli.add_command(_command)
cli.add_command(latency_model.latency_model)


def main() -> None:
    """Console-script entry point (`graphprune = graphprune.cli:main`)."""
    cli(prog_name="graphprune")


__all__ = ["cli", "main"]

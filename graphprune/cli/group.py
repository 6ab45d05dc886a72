"""The `graphprune` click group and its error handling.

Errors graphprune expects (GraphpruneError) print as one `error: ...` line with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import warnings
from typing import Any

import click

from graphprune.errors import GraphpruneError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def version() -> str:
    """The installed graphprune version ("0+unknown" when it cannot be found)."""
    import graphprune

    found = getattr(graphprune, "__version__", None)
    if isinstance(found, str):
        return found
    from importlib import metadata

    try:
        return metadata.version("graphprune")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class _OneLineError(click.ClickException):
    """A GraphpruneError as click shows it: `error: <message>` on stderr, exit code 2."""

    exit_code = EXIT_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _show_note(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    """A DataNote as one `note: ...` line on stderr; other warnings as Python shows them."""
    from graphprune.train.bundle import DataNote

    if issubclass(category, DataNote):
        click.echo(f"note: {message}", err=True)
    else:
        _python_showwarning(message, category, *args, **kw)


_python_showwarning = warnings.showwarning


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or "failed"


class _Cli(click.Group):
    """A click group that turns GraphpruneError into one line and Ctrl-C into a quiet exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_note
                return super().invoke(ctx)
        except GraphpruneError as exc:
            raise _OneLineError(_one_line(str(exc))) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@click.group(
    name="graphprune",
    cls=_Cli,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  graphprune demo
  graphprune inspect graphprune:cifar_resnet56
  graphprune prune torchvision:resnet50 --criterion l1 --target-flops 0.5 --out out/r50
  graphprune apply torchvision:resnet50 --plan out/r50/plan.json --out out/r50-again
  graphprune export my_net.py:build --input-shape 1,3,64,64 --out net.onnx
""",
)
@click.version_option(version(), "--version", prog_name="graphprune")
def cli() -> None:
    """Structured pruning for PyTorch CNNs: trace, plan, rewrite, export."""

"""`graphprune demo`: prune the built-in CIFAR ResNet-56 to 50% of its FLOPs, no arguments needed."""

from __future__ import annotations

from pathlib import Path

import click

from graphprune.cli.console import note
from graphprune.cli.options import out_dir_option
from graphprune.cli.prune import prune_by_criterion
from graphprune.errors import GraphpruneError

DEMO_MODEL = "graphprune:cifar_resnet56"
DEMO_WEIGHTS = "cifar10_resnet56-4bfd9763.th"


@click.command(
    short_help="Prune CIFAR ResNet-56 to 50% FLOPs, no arguments needed.",
    epilog=f"""\b
Examples:
  graphprune demo
  graphprune demo --out /tmp/demo --no-export
\b
Pretrained weights come from the shared data directory ($GRAPHPRUNE_SHARED/weights/{DEMO_WEIGHTS});
without them the model is randomly initialised (FLOPs and params are the same, accuracy is not).
""",
)
@out_dir_option("./graphprune-demo")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def demo(out_dir: Path, no_export: bool) -> None:
    """Prune the built-in CIFAR ResNet-56 with the l1 criterion to 50% of its FLOPs."""
    weights = _demo_weights()
    if weights is None:
        note(f"pretrained {DEMO_WEIGHTS} not found in the shared directory; using random init")
    else:
        note(f"pretrained weights: {weights}")
    prune_by_criterion(
        DEMO_MODEL,
        weights,
        None,
        criterion="l1",
        target_flops=0.5,
        scope="global",
        round_to=8,
        out_dir=out_dir,
        export=not no_export,
    )


def _demo_weights() -> Path | None:
    from graphprune import shared

    try:
        path = Path(shared.weights_file(DEMO_WEIGHTS))
    except GraphpruneError:
        return None
    return path if path.is_file() else None

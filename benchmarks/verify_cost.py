"""What verification adds to `apply`: seconds for apply without and with `verify`, min of `--repeat` runs.

python benchmarks/verify_cost.py resnet50 efficientnet_b0     # 224x224, batch 1, one thread
python benchmarks/verify_cost.py --quick                       # smoke: cifar_resnet20, 32x32
"""

from __future__ import annotations

import argparse
import random
import time

import torch

import graphprune as gp
from graphprune.models import get_model
from graphprune.torchvision_compat import import_torchvision


def random_plan(pg: gp.PrunableGraph, seed: int, ratio: float = 0.3) -> gp.PruningPlan:
    rng = random.Random(seed)
    plan = gp.PruningPlan.for_graph(pg)
    for g in pg.prunable_groups:
        k = min(g.size - 1, round(ratio * g.size))
        if k > 0:
            plan.remove_channels(g.id, rng.sample(range(g.size), k))
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=["resnet50", "efficientnet_b0"])
    parser.add_argument("--quick", action="store_true", help="smoke run on cifar_resnet20")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [("cifar_resnet20", get_model("cifar_resnet20"), torch.randn(1, 3, 32, 32))] if args.quick else []
    for name in [] if args.quick else args.models:
        runs.append(
            (name, getattr(import_torchvision().models, name)(weights=None), torch.randn(1, 3, 224, 224))
        )
    for name, model, x in runs:
        pg = gp.trace(model.eval(), x)
        plan = random_plan(pg, 0)
        times: dict[bool, float] = {}
        for _ in range(args.repeat):
            for verify in (False, True):
                t = time.perf_counter()
                gp.apply(pg, plan, verify=verify)
                times[verify] = min(times.get(verify, float("inf")), time.perf_counter() - t)
        print(f"{name}: apply {times[False]:.2f} s, with verify {times[True]:.2f} s")


if __name__ == "__main__":
    main()

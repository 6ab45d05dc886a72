"""2-process DDP on CPU (gloo) trains to the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from support.tiny_data import tiny_bundle, tiny_net

from graphprune.train import TrainConfig, fit

CFG = TrainConfig(epochs=2, batch_size=16, lr=0.1, verbose=False, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    model = tiny_net(bn=False)  # BN statistics are per process under DDP; without BN the maths is identical
    result = fit(model, tiny_bundle(), CFG, run_dir=out)
    if rank == 0:
        torch.save(
            {"state": model.state_dict(), "top1": result.test.top1 if result.test else None}, f"{out}/w.pt"
        )
    torch.distributed.destroy_process_group()


def test_two_process_ddp_equals_single_process(tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="fork")
    ddp = torch.load(tmp_path / "w.pt", weights_only=True)
    single = tiny_net(bn=False)
    result = fit(single, tiny_bundle(), CFG)
    for k, v in single.state_dict().items():
        assert torch.allclose(v, ddp["state"][k], atol=1e-5, rtol=1e-4), k
    assert result.test is not None and ddp["top1"] == result.test.top1  # metrics reduced over both ranks
    assert (tmp_path / "stages" / "finetune" / "done.json").is_file()

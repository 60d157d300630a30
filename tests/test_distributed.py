"""Samplers under a real torch.distributed (gloo, 2 processes): shards are disjoint and cover."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from tvl_async._sampling import SAMPLINGS, VideoDataset, make_sampler

WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world_size: int, port: int) -> None:
    """Body of each spawned rank; an AssertionError here fails the test via spawn()."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60))
    try:
        ds = VideoDataset.from_frame_counts([37, 20, 45], 3, stride=2, gop_size=6)  # 90 samples
        n = len(ds)
        assert n % world_size == 0
        for sampling in SAMPLINGS:
            sampler = make_sampler(ds, sampling, seed=17, shuffle_buffer=8)  # rank from dist
            assert (sampler.rank, sampler.world_size) == (rank, world_size)
            for epoch in (0, 3):
                mine = sampler.epoch_order(epoch).tolist()
                assert len(mine) == len(sampler) == n // world_size
                gathered: list[list[int] | None] = [None] * world_size
                dist.all_gather_object(gathered, mine)
                shards = [set(g or []) for g in gathered]
                assert shards[0].isdisjoint(shards[1]), (sampling, epoch)
                assert (
                    set().union(*shards)
                    == set(sampler.global_order(epoch).tolist())
                    == set(range(n))
                ), (sampling, epoch)
        default = make_sampler(ds)
        order = default.epoch_order(1).tolist()
        gathered_default: list[list[int] | None] = [None] * world_size
        dist.all_gather_object(gathered_default, order)
        both = [x for g in gathered_default for x in (g or [])]
        assert sorted(both) == list(range(n))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_shards_over_gloo_are_disjoint_and_cover_the_epoch() -> None:
    spawn(_worker, args=(WORLD, _free_port()), nprocs=WORLD, join=True)  # type: ignore[no-untyped-call]

"""Which shard this process reads, and which GPU it means by ``"cuda"``, under torch.distributed.

The rank and world size come, in this order, from the arguments the user gave, from an
initialised ``torch.distributed`` process group, and from the environment variables that
``torchrun`` (and ``torch.distributed.launch``, SLURM wrappers and most launchers) set for each
process: ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. The environment matters because data is
often set up before ``init_process_group``: without it every rank would silently read the whole
epoch. A world size above 1 with no way to know this process's rank is an error.

Nothing here blocks or starts a thread; the functions may be called from any thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from tvl_async._checks import check_int, invalid_value
from tvl_async._devices import resolve_device as pin_current_cuda

__all__ = ["distributed_rank", "env_int", "resolve_device"]


def env_int(name: str, environ: Mapping[str, str] | None = None) -> int | None:
    """The non-negative int in environment variable ``name``, or None when it is unset or empty.

    Raises:
        ValueError: the variable holds something else (the message names it and its value).
    """
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise invalid_value(name, text, "integers >= 0, as torchrun sets them")
    return value


def _process_group() -> tuple[int, int] | None:
    """``(rank, world_size)`` of the initialised default process group, else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def distributed_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process's shard.

    Each value comes from the argument when given, else from the initialised
    ``torch.distributed`` process group, else from torchrun's ``RANK``/``WORLD_SIZE``
    environment variables, else defaults to rank 0 of 1 (no sharding).

    Raises:
        ValueError: the world size is above 1 but the rank is unknown (the message says how to
            give it), a rank is given without a world size, a value is negative or an
            environment variable is not an int, or ``rank`` is not in ``0..world_size-1``.
        TypeError: an argument is not an int.
    """
    source = "the arguments"
    if rank is None or world_size is None:
        group = _process_group()
        found: tuple[int | None, int | None] = (
            (env_int("RANK"), env_int("WORLD_SIZE")) if group is None else group
        )
        source = "the environment (RANK, WORLD_SIZE)" if group is None else "torch.distributed"
        rank = found[0] if rank is None else rank
        world_size = found[1] if world_size is None else world_size
    if world_size is None:
        if rank is not None:
            raise ValueError(
                f"give rank and world_size together (got rank={rank}, world_size="
                f"None and no WORLD_SIZE in the environment), or initialise "
                f"torch.distributed"
            )
        return 0, 1
    world_size = check_int("world_size", world_size, 1)
    if rank is None:
        if world_size > 1:
            raise ValueError(
                f"world_size is {world_size} but this process's rank is unknown (no rank "
                f"argument, torch.distributed not initialised, no RANK in the environment): "
                f"give rank and world_size together, initialise torch.distributed, or launch "
                f"with torchrun; refusing to read the whole epoch on every rank"
            )
        rank = 0
    rank = check_int("rank", rank, 0)
    if rank >= world_size:
        raise invalid_value(
            "rank",
            rank,
            f"0..{world_size - 1}",
            context=f"for world_size={world_size} (from {source})",
        )
    return rank, world_size


def resolve_device(device: str | torch.device) -> torch.device:
    """The device as given, except that ``"cuda"`` without an index becomes ``cuda:LOCAL_RANK``
    when torchrun set ``LOCAL_RANK`` (one GPU per process, the torchrun convention); otherwise
    ``"cuda"`` is pinned to the calling thread's current GPU (see
    :func:`tvl_async._devices.resolve_device`): call it where the Prefetcher or VideoLoader is
    built.

    Raises:
        ValueError: ``LOCAL_RANK`` is not a non-negative int.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        local_rank = env_int("LOCAL_RANK")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
    return pin_current_cuda(dev)

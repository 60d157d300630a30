"""Samplers: the order of one epoch's samples for one rank, and its shard of the global order.

A :class:`Sampler` turns an epoch number into the sample ids this rank reads, in order. Every
order depends only on ``(seed, epoch)``, never on history. How far each sampler is from i.i.d.
uniform sampling is derived in ``docs/sampling.md``. The walk over epochs and its resumable
state are ``tvl_async._sampling``'s. Nothing here starts a thread or blocks.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from tvl_async._checks import check_int, invalid_value
from tvl_async._config import SAMPLINGS  # from the Literal: the list is written once
from tvl_async._distributed import distributed_rank
from tvl_async._grid import IntArray, expand_runs


@runtime_checkable
class SampleSpace(Protocol):
    """What a sampler reads from a dataset; :class:`VideoDataset` provides it."""

    def __len__(self) -> int: ...

    @property
    def samples_per_file(self) -> IntArray: ...

    def sample_arrays(self) -> tuple[IntArray, IntArray]: ...

    def sample_gops(self) -> IntArray: ...


class Sampler:
    """The order of an epoch's samples for one rank; subclasses define the global order.

    Args:
        dataset: the sample space (a :class:`VideoDataset` or any :class:`SampleSpace`).
        seed: non-negative int; with the epoch number, the only source of randomness.
        rank, world_size: this process's shard; default from ``torch.distributed`` when it is
            initialised, else 0 and 1.
        drop_last: False pads the global order by wrapping around to ``ceil(N/world_size)``
            samples per rank; True truncates to ``floor(N/world_size)`` per rank.

    Sharding follows ``torch.utils.data.DistributedSampler``: rank ``r`` takes positions ``r,
    r+world_size, …`` of the (padded or truncated) global order. Samplers whose point is
    locality (``contiguous_shards``: chunked, gop_shuffle) instead give rank ``r`` the ``r``-th
    contiguous block of it, so runs of neighbouring samples are not dealt across ranks. Either
    way the shards are disjoint (up to the padding) and cover the epoch.

    Methods are pure functions of ``(seed, epoch)`` and may be called from any thread.
    """

    name: ClassVar[str] = ""
    contiguous_shards: ClassVar[bool] = False

    def __init__(
        self,
        dataset: SampleSpace,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self._n = len(dataset)
        self.seed = check_int("seed", seed, 0)
        self.rank, self.world_size = distributed_rank(rank, world_size)
        self.drop_last = bool(drop_last)

    @property
    def dataset_len(self) -> int:
        """Samples in the dataset (``N``): the length of every epoch's global order."""
        return self._n

    def params(self) -> dict[str, Any]:
        """Sampler-specific settings that shape the order (saved and checked in states)."""
        return {}

    def global_order(self, epoch: int) -> IntArray:
        """``[N]`` sample ids of ``epoch`` for all ranks together, before sharding."""
        raise NotImplementedError

    def epoch_order(self, epoch: int) -> IntArray:
        """``[len(self)]`` sample ids this rank reads in ``epoch``, in order."""
        return self.shard(self.global_order(check_int("epoch", epoch, 0)))

    def shard(self, order: IntArray) -> IntArray:
        """This rank's part of a global order (padded by wrapping or truncated first)."""
        total = len(self) * self.world_size
        padded = (
            order[:total]
            if total <= len(order)
            else np.tile(order, math.ceil(total / len(order)))[:total]
        )
        if self.contiguous_shards:
            return np.ascontiguousarray(padded.reshape(self.world_size, -1)[self.rank])
        return np.ascontiguousarray(padded[self.rank :: self.world_size])

    def global_position(self, position: int) -> int:
        """Index in the (padded) global order of this rank's sample at ``position``."""
        if self.contiguous_shards:
            return self.rank * len(self) + position
        return position * self.world_size + self.rank

    def __len__(self) -> int:
        """Samples per epoch for this rank."""
        if self.drop_last:
            return self._n // self.world_size
        return -(-self._n // self.world_size)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.params().items())
        return (
            f"{type(self).__name__}(N={self._n}, seed={self.seed}, rank={self.rank}, "
            f"world_size={self.world_size}, drop_last={self.drop_last}{extra})"
        )


class SequentialSampler(Sampler):
    """Samples ``0 … N-1`` in order, every epoch."""

    name = "sequential"

    def global_order(self, epoch: int) -> IntArray:
        del epoch  # the same order every epoch
        return np.arange(self._n, dtype=np.int64)


class UniformSampler(Sampler):
    """A fresh random permutation each epoch, or ``N`` i.i.d. draws with ``replacement=True``."""

    name = "uniform"

    def __init__(
        self,
        dataset: SampleSpace,
        *,
        replacement: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        self.replacement = bool(replacement)

    def params(self) -> dict[str, Any]:
        return {"replacement": self.replacement}

    def global_order(self, epoch: int) -> IntArray:
        rng = self._rng(epoch)
        if self.replacement:
            return rng.integers(0, self._n, size=self._n, dtype=np.int64)
        return rng.permutation(self._n).astype(np.int64)


class ChunkedSampler(Sampler):
    """Shuffled chunks of ``chunk_size`` consecutive samples of one file.

    Each file's samples are cut into chunks at ``0, k, 2k, …`` from its first sample (the last
    chunk of a file may be shorter; chunks never cross files). Each epoch visits the chunks in a
    random order, the samples of a chunk consecutively: every sample exactly once.
    """

    name = "chunked"
    contiguous_shards = True

    def __init__(
        self,
        dataset: SampleSpace,
        *,
        chunk_size: int = 8,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        self.chunk_size = check_int("chunk_size", chunk_size, 1)
        counts = np.asarray(dataset.samples_per_file, dtype=np.int64)
        offsets = np.cumsum(counts) - counts
        per_file = -(-counts // self.chunk_size)
        first = np.repeat(offsets, per_file)
        j = expand_runs(np.zeros(len(counts), dtype=np.int64), per_file)  # chunk # in its file
        self._starts = first + j * self.chunk_size
        left = np.repeat(counts, per_file) - j * self.chunk_size
        self._lengths = np.minimum(self.chunk_size, left)

    def params(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size}

    def global_order(self, epoch: int) -> IntArray:
        perm = self._rng(epoch).permutation(len(self._starts))
        return expand_runs(self._starts[perm], self._lengths[perm])


class GopShuffleSampler(Sampler):
    """GOP groups in random order, streamed through a shuffle buffer of ``shuffle_buffer`` samples.

    Samples are grouped by (file, GOP of the clip's first frame). Each epoch visits the groups in
    a random order and feeds their samples (ascending inside a group) into the classic streaming
    shuffle buffer: fill it with the first ``shuffle_buffer`` samples, then for each further
    sample emit a uniformly random buffer slot and put the new sample there; at the end emit the
    rest in random order. Every sample exactly once per epoch.
    """

    name = "gop_shuffle"
    contiguous_shards = True

    def __init__(
        self,
        dataset: SampleSpace,
        *,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 1)
        files, _ = dataset.sample_arrays()
        gops = dataset.sample_gops()
        span = np.zeros(len(dataset.samples_per_file), dtype=np.int64)
        np.maximum.at(span, files, gops + 1)
        key = (np.cumsum(span) - span)[files] + gops  # unique per (file, gop)
        if np.all(key[1:] >= key[:-1]):
            self._members = np.arange(self._n, dtype=np.int64)
            sorted_key = key
        else:
            self._members = np.argsort(key, kind="stable").astype(np.int64)
            sorted_key = key[self._members]
        bounds = np.flatnonzero(np.diff(sorted_key)) + 1
        self._group_starts = np.concatenate([[0], bounds]).astype(np.int64)
        self._group_lengths = np.diff(np.concatenate([self._group_starts, [self._n]])).astype(
            np.int64
        )

    @property
    def n_groups(self) -> int:
        """Number of (file, GOP) groups."""
        return len(self._group_starts)

    def params(self) -> dict[str, Any]:
        return {"shuffle_buffer": self.shuffle_buffer}

    def global_order(self, epoch: int) -> IntArray:
        rng = self._rng(epoch)
        perm = rng.permutation(self.n_groups)
        stream = self._members[expand_runs(self._group_starts[perm], self._group_lengths[perm])]
        return shuffle_buffer_order(stream, self.shuffle_buffer, rng)


def shuffle_buffer_order(stream: IntArray, size: int, rng: np.random.Generator) -> IntArray:
    """``stream`` passed through a streaming shuffle buffer of ``size`` slots (vectorised).

    Equivalent to: fill ``buf`` with the first ``size`` items; for each later item ``x`` draw
    ``j = rng.integers(size)``, emit ``buf[j]``, set ``buf[j] = x``; finally emit ``buf`` in the
    order of ``rng.permutation(size)``. A stream no longer than ``size`` comes out permuted.
    """
    n = len(stream)
    if n <= size:
        return stream[rng.permutation(n)]
    slots = rng.integers(0, size, size=n - size, dtype=np.int64)
    drain = rng.permutation(size)
    return stream[_buffer_positions(slots, drain, size)]


def _buffer_positions(slots: IntArray, drain: IntArray, size: int) -> IntArray:
    """Stream positions emitted by the shuffle buffer given its slot draws and final drain order.

    Step ``k`` takes stream item ``size + k`` into slot ``slots[k]`` after emitting the slot's
    holder: the item placed there at the slot's previous draw, or item ``slots[k]`` (the initial
    fill) if there was none.
    """
    steps = len(slots)
    if steps == 0:
        return np.asarray(drain, dtype=np.int64)
    # uint16 keys let numpy radix-sort (linear time) for buffers up to 65536 slots.
    keys = slots.astype(np.uint16) if size <= 1 << 16 else slots
    by_slot = np.argsort(keys, kind="stable")
    s = slots[by_slot]
    same_as_prev = np.concatenate([[False], s[1:] == s[:-1]])
    prev = np.full(steps, -1, dtype=np.int64)
    prev[by_slot[same_as_prev]] = by_slot[np.flatnonzero(same_as_prev) - 1]
    emitted = np.where(prev >= 0, size + prev, slots)
    final = np.arange(size, dtype=np.int64)
    last = np.concatenate([s[1:] != s[:-1], [True]])
    final[s[last]] = size + by_slot[last]
    return np.concatenate([emitted, final[drain]]).astype(np.int64)


def make_sampler(
    dataset: SampleSpace,
    sampling: str = "uniform",
    *,
    shuffle: bool = True,
    seed: int = 0,
    replacement: bool = False,
    chunk_size: int = 8,
    shuffle_buffer: int = 1024,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
) -> Sampler:
    """The sampler named ``sampling`` (one of :data:`SAMPLINGS`); see the classes.

    ``shuffle=False`` gives the sequential order whatever ``sampling`` says. ``replacement`` is
    for ``sampling="uniform"`` with ``shuffle=True`` only.

    Raises:
        ValueError: unknown ``sampling``, a bad value, or ``replacement`` where it has no meaning.
    """
    if sampling not in SAMPLINGS:
        raise invalid_value("sampling", sampling, SAMPLINGS)
    if replacement and (sampling != "uniform" or not shuffle):
        raise invalid_value(
            "replacement",
            True,
            "replacement=True with sampling='uniform' and shuffle=True only",
            context=f"with sampling={sampling!r}, shuffle={shuffle}",
        )
    common: dict[str, Any] = {
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
        "drop_last": drop_last,
    }
    if sampling == "sequential" or not shuffle:
        return SequentialSampler(dataset, **common)
    if sampling == "uniform":
        return UniformSampler(dataset, replacement=replacement, **common)
    if sampling == "chunked":
        return ChunkedSampler(dataset, chunk_size=chunk_size, **common)
    return GopShuffleSampler(dataset, shuffle_buffer=shuffle_buffer, **common)

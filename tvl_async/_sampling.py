"""The order samples are read in: samplers, shards and epochs over a sample space.

A :class:`Sampler` turns an epoch number into the sample ids this rank reads, in order. Every
order depends only on ``(seed, epoch)``, never on history, so an epoch can be replayed or resumed.
Ranks take disjoint, equal-length shards of the epoch's global order (torch's
``DistributedSampler`` convention for padding and ``drop_last``). :class:`EpochIterator` walks
epochs and saves/restores its position with ``state_dict``/``load_state_dict``. The sample space
itself, :class:`~tvl_async._dataset.VideoDataset`, lives in ``tvl_async._dataset`` (re-exported
here).

How far each sampler is from i.i.d. uniform sampling is derived in ``docs/sampling.md``.

This module knows nothing of decoding. Nothing here starts a thread or blocks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from tvl_async._dataset import IntArray, VideoDataset, check_int, expand_runs
from tvl_async._distributed import distributed_rank

__all__ = [
    "SAMPLINGS",
    "ChunkedSampler",
    "EpochIterator",
    "GopShuffleSampler",
    "IntArray",
    "SampleSpace",
    "Sampler",
    "SequentialSampler",
    "UniformSampler",
    "VideoDataset",
    "distributed_rank",
    "make_sampler",
    "shuffle_buffer_order",
]

SAMPLINGS: tuple[str, ...] = ("sequential", "uniform", "chunked", "gop_shuffle")
STATE_VERSION = 1

# ---------------------------------------------------------------------------------- samplers


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

    def __init__(self, dataset: SampleSpace, *, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False) -> None:
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
        padded = order[:total] if total <= len(order) \
            else np.tile(order, math.ceil(total / len(order)))[:total]
        if self.contiguous_shards:
            return np.ascontiguousarray(padded.reshape(self.world_size, -1)[self.rank])
        return np.ascontiguousarray(padded[self.rank::self.world_size])

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
        return (f"{type(self).__name__}(N={self._n}, seed={self.seed}, rank={self.rank}, "
                f"world_size={self.world_size}, drop_last={self.drop_last}{extra})")


class SequentialSampler(Sampler):
    """Samples ``0 … N-1`` in order, every epoch."""

    name = "sequential"

    def global_order(self, epoch: int) -> IntArray:
        return np.arange(self._n, dtype=np.int64)


class UniformSampler(Sampler):
    """A fresh random permutation each epoch, or ``N`` i.i.d. draws with ``replacement=True``."""

    name = "uniform"

    def __init__(self, dataset: SampleSpace, *, replacement: bool = False, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False) -> None:
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

    def __init__(self, dataset: SampleSpace, *, chunk_size: int = 8, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False) -> None:
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

    def __init__(self, dataset: SampleSpace, *, shuffle_buffer: int = 1024, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False) -> None:
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
            np.int64)

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


def make_sampler(dataset: SampleSpace, sampling: str = "uniform", *, shuffle: bool = True,
                 seed: int = 0, replacement: bool = False, chunk_size: int = 8,
                 shuffle_buffer: int = 1024, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False) -> Sampler:
    """The sampler named ``sampling`` (one of :data:`SAMPLINGS`); see the classes.

    ``shuffle=False`` gives the sequential order whatever ``sampling`` says. ``replacement`` is
    for ``sampling="uniform"`` with ``shuffle=True`` only.

    Raises:
        ValueError: unknown ``sampling``, a bad value, or ``replacement`` where it has no meaning.
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"Invalid sampling ({sampling!r}). Supported values are "
                         + ", ".join(repr(s) for s in SAMPLINGS))
    if replacement and (sampling != "uniform" or not shuffle):
        raise ValueError(f"replacement=True needs sampling='uniform' and shuffle=True, got "
                         f"sampling={sampling!r}, shuffle={shuffle}")
    common: dict[str, Any] = {"seed": seed, "rank": rank, "world_size": world_size,
                              "drop_last": drop_last}
    if sampling == "sequential" or not shuffle:
        return SequentialSampler(dataset, **common)
    if sampling == "uniform":
        return UniformSampler(dataset, replacement=replacement, **common)
    if sampling == "chunked":
        return ChunkedSampler(dataset, chunk_size=chunk_size, **common)
    return GopShuffleSampler(dataset, shuffle_buffer=shuffle_buffer, **common)


# ----------------------------------------------------------------------------------- epochs


class EpochIterator(Iterator[tuple[int, int, int]]):
    """Walks a sampler's epochs, yielding ``(epoch, position, sample_id)``, resumable.

    ``position`` counts this rank's samples from 0 within the epoch. The iterator runs epochs
    ``start_epoch … start_epoch + epochs - 1`` (forever with ``epochs=None``). ``set_epoch(e)``
    starts the run over at epoch ``e`` (``e … e + epochs - 1``); ``load_state_dict`` moves the
    cursor inside the same run and keeps its end (resuming does not add epochs).

    One thread iterates (it computes each epoch's order on entering it, O(N)); ``state_dict``
    may be called from any thread and sees a consistent (epoch, position).

    Raises:
        ValueError: bad ``epochs``/``start_epoch``, or this rank gets no samples.
    """

    def __init__(self, sampler: Sampler, epochs: int | None = 1, start_epoch: int = 0) -> None:
        self.sampler = sampler
        start = check_int("start_epoch", start_epoch, 0)
        self._count = None if epochs is None else check_int("epochs", epochs, 0)
        self._end = None if self._count is None else start + self._count
        self._len = len(sampler)
        if self._len == 0:
            raise ValueError(f"rank {sampler.rank} gets no samples: {sampler.dataset_len} samples "
                             f"over world_size={sampler.world_size} with drop_last=True")
        self._epoch = start
        self._position = 0
        self._lock = threading.Lock()
        self._order: tuple[int, IntArray] | None = None

    @property
    def epoch(self) -> int:
        """Epoch of the next sample."""
        return self._epoch

    @property
    def position(self) -> int:
        """Position in its epoch of the next sample (may equal the epoch length at its end)."""
        return self._position

    @property
    def end_epoch(self) -> int | None:
        """First epoch not run (None: endless)."""
        return self._end

    @property
    def samples_per_epoch(self) -> int:
        """``len(sampler)``: this rank's samples per epoch."""
        return self._len

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> tuple[int, int, int]:
        with self._lock:
            epoch, pos = self._epoch, self._position
        if pos >= self._len:
            epoch, pos = epoch + 1, 0
        if self._end is not None and epoch >= self._end:
            raise StopIteration
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.sampler.epoch_order(epoch))
        sample = int(self._order[1][pos])
        with self._lock:
            self._epoch, self._position = epoch, pos + 1
        return epoch, pos, sample

    def set_epoch(self, epoch: int) -> None:
        """Start the run at the first sample of ``epoch``: epochs ``epoch … epoch + epochs - 1``."""
        epoch = check_int("epoch", epoch, 0)
        with self._lock:
            self._epoch, self._position = epoch, 0
            self._end = None if self._count is None else epoch + self._count

    def state_dict(self, at: tuple[int, int] | None = None) -> dict[str, Any]:
        """A plain dict (picklable, JSON-able) to resume from.

        Args:
            at: ``(epoch, position)`` of the next sample to deliver, for a consumer behind the
                iterator (a prefetcher holding decoded samples); default: the iterator's cursor.

        Returns:
            ``{"version", "epoch", "position", "seed", "sampler", "sampler_params",
            "dataset_len", "rank", "world_size", "drop_last", "samples_per_epoch"}``.
        """
        if at is None:
            with self._lock:
                epoch, pos = self._epoch, self._position
        else:
            epoch, pos = check_int("epoch", at[0], 0), check_int("position", at[1], 0)
        if pos >= self._len:
            epoch, pos = epoch + 1, 0
        s = self.sampler
        return {"version": STATE_VERSION, "epoch": epoch, "position": pos, "seed": s.seed,
                "sampler": s.name, "sampler_params": s.params(), "dataset_len": s.dataset_len,
                "rank": s.rank, "world_size": s.world_size, "drop_last": s.drop_last,
                "samples_per_epoch": self._len}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at exactly the next sample recorded in ``state`` and adopt its seed.

        The state's rank is not checked (ranks advance in lockstep, so one rank's state serves
        all); the sampler's seed is set to the state's.

        Raises:
            ValueError: the state is malformed or does not match this sampler (dataset length,
                sampler name or settings, world size, drop_last), with every difference named.
        """
        required = ("version", "epoch", "position", "seed", "sampler", "sampler_params",
                    "dataset_len", "world_size", "drop_last")
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"not a sampler state: missing {', '.join(missing)}")
        if state["version"] != STATE_VERSION:
            raise ValueError(f"sampler state version {state['version']} is not supported "
                             f"(expected {STATE_VERSION})")
        s = self.sampler
        mine = {"sampler": s.name, "sampler_params": s.params(), "dataset_len": s.dataset_len,
                "world_size": s.world_size, "drop_last": s.drop_last}
        diffs = [f"{k}: saved {state[k]!r}, now {v!r}" for k, v in mine.items()
                 if (dict(state[k]) if k == "sampler_params" else state[k]) != v]
        if diffs:
            raise ValueError("cannot resume from this sampler state, it was saved for another "
                             "setup: " + "; ".join(diffs))
        epoch = check_int("epoch", state["epoch"], 0)
        pos = check_int("position", state["position"], 0)
        if pos > self._len:
            raise ValueError(f"sampler state position {pos} is past the epoch's end "
                             f"({self._len} samples per epoch)")
        s.seed = check_int("seed", state["seed"], 0)
        with self._lock:
            self._order = None
            self._epoch, self._position = (epoch + 1, 0) if pos == self._len else (epoch, pos)

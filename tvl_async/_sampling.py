"""The order samples are read in: epochs over a sampler, resumable (samplers re-exported).

A :class:`Sampler` (``tvl_async._samplers``) turns an epoch number into the sample ids this rank
reads, in order. Every order depends only on ``(seed, epoch)``, never on history, so an epoch
can be replayed or resumed.
Ranks take disjoint, equal-length shards of the epoch's global order (torch's
``DistributedSampler`` convention for padding and ``drop_last``). :class:`EpochIterator` walks
epochs and saves/restores its position with ``state_dict``/``load_state_dict``. The sample space
itself, :class:`~tvl_async._dataset.VideoDataset`, lives in ``tvl_async._dataset`` (re-exported
here).

How far each sampler is from i.i.d. uniform sampling is derived in ``docs/sampling.md``.

This module knows nothing of decoding. Nothing here starts a thread or blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from tvl_async._checks import check_int
from tvl_async._config import SAMPLINGS
from tvl_async._dataset import VideoDataset
from tvl_async._distributed import distributed_rank
from tvl_async._grid import IntArray
from tvl_async._samplers import (
    ChunkedSampler,
    GopShuffleSampler,
    Sampler,
    SampleSpace,
    SequentialSampler,
    UniformSampler,
    make_sampler,
    shuffle_buffer_order,
)

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

STATE_VERSION = 1

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
            raise ValueError(
                f"rank {sampler.rank} gets no samples: {sampler.dataset_len} samples "
                f"over world_size={sampler.world_size} with drop_last=True"
            )
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
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "position": pos,
            "seed": s.seed,
            "sampler": s.name,
            "sampler_params": s.params(),
            "dataset_len": s.dataset_len,
            "rank": s.rank,
            "world_size": s.world_size,
            "drop_last": s.drop_last,
            "samples_per_epoch": self._len,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at exactly the next sample recorded in ``state`` and adopt its seed.

        The state's rank is not checked (ranks advance in lockstep, so one rank's state serves
        all); the sampler's seed is set to the state's.

        Raises:
            ValueError: the state is malformed or does not match this sampler (dataset length,
                sampler name or settings, world size, drop_last), with every difference named.
        """
        required = (
            "version",
            "epoch",
            "position",
            "seed",
            "sampler",
            "sampler_params",
            "dataset_len",
            "world_size",
            "drop_last",
        )
        missing = [k for k in required if k not in state]
        if missing:
            raise ValueError(f"not a sampler state: missing {', '.join(missing)}")
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"sampler state version {state['version']} is not supported "
                f"(expected {STATE_VERSION})"
            )
        s = self.sampler
        mine = {
            "sampler": s.name,
            "sampler_params": s.params(),
            "dataset_len": s.dataset_len,
            "world_size": s.world_size,
            "drop_last": s.drop_last,
        }
        diffs = [
            f"{k}: saved {state[k]!r}, now {v!r}"
            for k, v in mine.items()
            if (dict(state[k]) if k == "sampler_params" else state[k]) != v
        ]
        if diffs:
            raise ValueError(
                "cannot resume from this sampler state, it was saved for another "
                "setup: " + "; ".join(diffs)
            )
        epoch = check_int("epoch", state["epoch"], 0)
        pos = check_int("position", state["position"], 0)
        if pos > self._len:
            raise ValueError(
                f"sampler state position {pos} is past the epoch's end "
                f"({self._len} samples per epoch)"
            )
        s.seed = check_int("seed", state["seed"], 0)
        with self._lock:
            self._order = None
            self._epoch, self._position = (epoch + 1, 0) if pos == self._len else (epoch, pos)

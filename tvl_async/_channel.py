"""What passes between the service thread and the consumer, besides the queue itself.

The service puts :data:`Item` objects into the janus queue: a :class:`Delivery` (a batch in its
envelope), an :class:`EpochEnd` marker, or a :class:`Failure`. :class:`Counters` are shared
(under their lock); :class:`Control` carries the consumer's requests the other way. Plain data:
nothing here blocks except for a lock held a few instructions long.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tvl_async._batch import Batch, SkippedSample

__all__ = ["Control", "Counters", "Delivery", "EpochEnd", "Failure", "Item", "Progress"]


@dataclass
class Counters:
    """Counters written by the service thread and read by the consumer (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    skipped: list[SkippedSample] = field(default_factory=list)
    samples_skipped: int = 0
    dropped_files: list[str] = field(default_factory=list)
    fallback_files: list[str] = field(default_factory=list)
    peak_buffer_bytes: int = 0
    held_samples: int = 0  # finished samples in the reorder buffer (as of the last one taken)
    held_bytes: int = 0  # their bytes
    started: float = 0.0
    bytes_at_start: int = 0  # tvl_async._source.bytes_read() when the service started
    transforming: str = ""  # what the user's transform is running on, while it runs


class Control:
    """The consumer's requests to the service: restart the stream at an epoch; any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._epoch: int | None = None

    def restart_at(self, epoch: int) -> int:
        """Ask the service to drop what it prepared and go on from the first sample of
        ``epoch``; returns the generation that the new stream's items carry."""
        with self._lock:
            self._generation += 1
            self._epoch = epoch
            return self._generation

    def take(self, generation: int) -> tuple[int, int] | None:
        """``(generation, epoch)`` of a restart newer than ``generation``, else None."""
        with self._lock:
            if self._generation == generation or self._epoch is None:
                return None
            return self._generation, self._epoch


@dataclass(frozen=True)
class Progress:
    """The service's counts at one point of the stream, so that ``stats()`` reports them as of
    what the consumer received, not of how far the service ran ahead.

    Attributes:
        frames_decoded: frames decoded for the samples taken so far (each job counted at its
            earliest sample).
        samples_skipped: samples skipped so far; files_dropped: files given up so far (the
            first entries of the :class:`Counters` lists).
    """

    frames_decoded: float = 0.0
    samples_skipped: int = 0
    files_dropped: int = 0


@dataclass
class Delivery:
    """A batch in transit, with what travels beside it (the consumer unpacks it).

    Attributes:
        batch: what the consumer receives.
        event: CUDA event recorded after the batch was produced (None on the CPU).
        resume_at: ``(epoch, position)`` of the sample after the batch's last one.
        failures: failures per file so far (``on_error="skip"``).
        progress: the service's counts up to this batch.
        generation: the stream the batch belongs to (see :class:`Control`).
    """

    batch: Batch
    event: Any
    resume_at: tuple[int, int]
    failures: dict[str, int]
    progress: Progress
    generation: int


@dataclass
class EpochEnd:
    """Put by the service after the last batch of an epoch."""

    epoch: int
    generation: int
    progress: Progress


@dataclass
class Failure:
    """An exception from the service, delivered at its place in the stream."""

    error: BaseException


Item = Delivery | EpochEnd | Failure

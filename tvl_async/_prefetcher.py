"""The service's public face: ``Prefetcher`` decodes, processes and batches while you train.

``Prefetcher`` starts a named service thread (``tvl-async-service``) on ``__enter__`` (or on the
first iteration). That thread (its body is ``tvl_async._service``) owns the decoders and, on a
GPU, sets the device and works on its own CUDA stream; it plans decode jobs (``_planning``),
decodes and processes them (``_decoding``), collates :class:`~tvl_async._batch.Batch` objects in
sampler order and puts them into a bounded janus queue, epoch after epoch. The consumer takes
them with ``for`` or ``async for``; this module is the consumer's side, and owns the lifecycle.

Lifecycle (:class:`State`): not started → running → closed, in one place here. ``start()`` is
refused twice; ``close()`` (idempotent; also run by ``__exit__``, garbage collection through
``weakref.finalize`` and interpreter exit through an ``atexit`` hook) stops the service, shuts
the queue down, joins with a timeout and warns if the thread is stuck (it is a daemon thread, so
it cannot block exit). ``async with`` joins in a worker thread, not in the event loop. Every
wait is bounded: the consumer waits in short slices, notices a dead service thread, and turns a
stall longer than ``timeout`` into ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import janus

from tvl_async import _service as service
from tvl_async._batch import Batch, PrefetchStats, SkippedSample
from tvl_async._channel import Control, Counters, Item, Progress
from tvl_async._config import PrefetchConfig
from tvl_async._consumer import Consumer
from tvl_async._dataset import VideoDataset
from tvl_async._decoding import DecodePool
from tvl_async._errors import PrefetcherClosedError
from tvl_async._loops import EpochLoops
from tvl_async._requests import ServicePlan, dropped_files
from tvl_async._sampling import EpochIterator
from tvl_async._setup import prepare
from tvl_async._source import bytes_read

__all__ = ["Batch", "PrefetchStats", "Prefetcher", "SkippedSample"]


class State(enum.Enum):
    """A Prefetcher's lifecycle: NOT_STARTED → RUNNING → CLOSED (never back)."""

    NOT_STARTED = "not started"
    RUNNING = "running"
    CLOSED = "closed"


#: Prefetchers whose service runs, for the exit hook (weak: it keeps none of them alive).
_RUNNING: weakref.WeakSet[Prefetcher] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every Prefetcher still running when the interpreter exits."""
    for p in list(_RUNNING):
        p.close()


class Prefetcher:
    """Decode, process and batch video clips in a background service thread.

    Args:
        files_or_dataset: video files, a folder, or a :class:`VideoDataset` (which brings its
            own ``seq_len``, ``stride``, ``step`` and ``get_label``; others given with it are
            refused).
        seq_len: frames per clip; None: ``config``'s, else 1.
        config: a :class:`PrefetchConfig` to start from; ``options`` (and an explicit
            ``seq_len``) override its fields.
        **options: any field of :class:`PrefetchConfig`, each documented there (its
            ``description``) and in the README's option table; an unknown name raises
            ``TypeError`` listing the valid ones, a bad value a ``ValueError``.

    Iterating it again runs the next ``epochs`` epochs (the DataLoader idiom; ``len()`` is
    batches per epoch): threads and decoders stay, and the service prepares the next epoch's
    first batches while this one's last are consumed. A ``for`` left early (``break``) and
    iterated again skips the rest of that epoch: the new loop starts at the next epoch.
    ``set_epoch`` between loops picks the next loop's epoch (see ``tvl_async._loops``).

    The consumer side (iteration, ``stats``, ``state_dict``, ``close``) may be used from one
    thread (or one asyncio event loop) at a time; ``close`` may be called from any thread.
    """

    # DataLoader's attribute: trainers (Lightning) that find a ``sampler`` also read
    # ``batch_sampler``; a Prefetcher batches by itself
    batch_sampler: None = None

    def __init__(
        self,
        files_or_dataset: VideoDataset | str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        seq_len: int | None = None,
        *,
        config: PrefetchConfig | None = None,
        **options: Any,
    ) -> None:
        if seq_len is not None:
            options["seq_len"] = seq_len
        setup = prepare(files_or_dataset, PrefetchConfig.from_options(config, **options))
        cfg = self.config = setup.config
        self.device = setup.device
        self.backend_name = setup.backend
        self.dataset = setup.dataset
        self.sampler = setup.sampler
        self.lookahead = setup.lookahead
        self.decode_threads = setup.decode_threads
        self._processing = setup.outputs
        self._positions = setup.positions
        self._sample_bytes = setup.sample_bytes
        self._memory_budget = setup.memory_budget
        self._ffmpeg_threads = setup.ffmpeg_threads
        sampler = setup.sampler
        self._epochs = EpochIterator(sampler, None)  # endless: loops end in self._loops
        self._transform = cfg.transform
        self._queue: janus.Queue[Item] | None = None
        self._stop = threading.Event()
        self._counters = Counters()
        self._control = Control()
        self._loops = EpochLoops(cfg.epochs, len(sampler), 0)
        self._pool_holder: list[DecodePool] = []
        self._consumer = Consumer(cfg.timeout, self._pool_holder, self._counters, self._loops)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._state = State.NOT_STARTED

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> State:
        """Where the Prefetcher is in its lifecycle."""
        return self._state

    def start(self) -> Prefetcher:
        """Start the service thread (``with``, ``async with`` and iteration do it); once.

        Raises:
            RuntimeError: it is already running.
            PrefetcherClosedError: it is closed.
        """
        if self._state is State.RUNNING:
            raise RuntimeError(
                "this Prefetcher is already running; start() is called once "
                "(with, async with and iteration start it themselves)"
            )
        if self._state is State.CLOSED:
            raise PrefetcherClosedError("this Prefetcher is closed; create a new one")
        self._queue = janus.Queue(maxsize=self.config.queue_depth)
        plan = ServicePlan(
            config=self.config,
            dataset=self.dataset,
            epochs=self._epochs,
            processing=self._processing,
            positions=self._positions,
            device=self.device,
            backend=self.backend_name,
            decode_threads=self.decode_threads,
            ffmpeg_threads=self._ffmpeg_threads,
            lookahead=self.lookahead,
            transform=self._transform,
            queue=self._queue,
            stop=self._stop,
            counters=self._counters,
            control=self._control,
            pool_holder=self._pool_holder,
            failures=dict(self._consumer.failures),
        )
        thread = threading.Thread(
            target=service.service_main, args=(plan,), daemon=True, name="tvl-async-service"
        )
        self._consumer.attach(self._queue, thread)
        self._counters.started = time.perf_counter()
        self._counters.bytes_at_start = bytes_read()
        if self._loops.resume_at is None:  # the service reads ahead: remember where it began
            self._loops.resume_at = (self._epochs.epoch, self._epochs.position)
        self._finalizer = weakref.finalize(
            self, service.shutdown, self._stop, thread, self._queue, self._pool_holder
        )
        self._finalizer.atexit = False  # _close_at_exit does it, in order, with the others
        self._state = State.RUNNING
        _RUNNING.add(self)
        thread.start()
        return self

    def close(self) -> None:
        """Stop the service thread, shut the queue down, join (bounded, warns if stuck); safe
        to call twice and from any thread. Blocks up to ``JOIN_SECONDS`` seconds."""
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        _RUNNING.discard(self)
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._state is State.CLOSED

    def _ensure_started(self) -> None:
        if self._state is State.NOT_STARTED:
            self.start()
        elif self._state is State.CLOSED:
            raise PrefetcherClosedError(
                "this Prefetcher is closed; create a new one to iterate again"
            )

    def __enter__(self) -> Prefetcher:
        self._ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Prefetcher:
        self._ensure_started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close without blocking the event loop: the join runs in a worker thread."""
        await asyncio.to_thread(self.close)
        if self._queue is not None:
            await self._queue.wait_closed()  # the queue's pending wake-ups in this loop

    def _abandon(self) -> None:
        """Close without joining, after a timeout: the service is stuck in a call that may not
        return soon (joining would block the consumer for seconds). The stop flag makes the
        service and its decode threads (daemons) end as soon as that call returns."""
        self._state = State.CLOSED
        _RUNNING.discard(self)
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._queue is not None:
            self._queue.close()

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Batch]:
        """Start a loop: the next epoch (see the class docstring for a loop left early).

        A Prefetcher not started yet starts with the first batch asked for, so that ``iter()``
        then :meth:`load_state_dict` still resumes (Lightning checks a loader with ``iter()``,
        then restores its state, then iterates)."""
        if self._state is State.NOT_STARTED:
            self._loops.on_iter()
            return self
        self._ensure_started()
        restart = self._loops.on_iter()
        if restart is not None:
            self._consumer.generation = self._control.restart_at(restart)
        return self

    def __next__(self) -> Batch:
        if self._begin_next():
            raise StopIteration  # until iter() starts the next loop
        try:
            return self._consumer.next_sync()
        except BaseException:
            self._after_error()
            raise

    def __aiter__(self) -> AsyncIterator[Batch]:
        self.__iter__()
        return self

    async def __anext__(self) -> Batch:
        if self._begin_next():
            raise StopAsyncIteration
        try:
            return await self._consumer.next_async()
        except BaseException:
            self._after_error()
            raise

    def _begin_next(self) -> bool:
        """Before taking a batch: True if the loop is over (stop until ``iter()``)."""
        if self._state is not State.CLOSED and self._loops.finished:
            return True
        self._ensure_started()
        if not self._loops.open:
            self._loops.begin()
        return False

    def _after_error(self) -> None:
        if self._consumer.stalled:
            self._abandon()
        elif self._consumer.fatal:
            self.close()

    # ------------------------------------------------------------------ stats and state

    def stats(self) -> PrefetchStats:
        """A snapshot of the counters; cheap, any time (consumer's thread)."""
        return self._consumer.stats(
            self._pool_holder[0] if self._pool_holder else None,
            self._queue,
            frames_per_sample=len(self._positions),
            queue_depth=self.config.queue_depth,
            lookahead=self.lookahead,
            sample_bytes=self._sample_bytes,
            memory_budget=self._memory_budget,
            decode_threads=self.decode_threads,
            unindexed_files=[p for p, _ in self.dataset.unindexed_files],
        )

    def state_dict(self) -> dict[str, Any]:
        """Where to resume: just after the last batch handed to the consumer (a plain,
        picklable dict: the sampler's cursor and seed, the end of the loop it is in, and with
        ``on_error="skip"`` the failures per file so far, so that files given up stay given
        up)."""
        at = self._loops.resume_at
        sampler = self._epochs.state_dict() if at is None else self._epochs.state_dict(at=at)
        # not started: the cursor is exact (no service reads ahead of it)
        return {
            "sampler": sampler,
            "batches_delivered": self._consumer.batches if at else 0,
            "file_failures": dict(self._consumer.failures),
            **self._loops.state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the exact next sample of ``state`` (before iterating): the first loop
        ends where the saved one would have."""
        if self._state is not State.NOT_STARTED:
            raise RuntimeError("load_state_dict must be called before the Prefetcher starts")
        if "sampler" not in state:
            raise ValueError("not a Prefetcher state: missing 'sampler'")
        failures = state.get("file_failures", {})
        if not isinstance(failures, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in failures.items()
        ):
            raise ValueError(
                f"not a Prefetcher state: file_failures must map paths to counts, got {failures!r}"
            )
        self._epochs.load_state_dict(state["sampler"])
        # states without "loop_end" come from one run of `epochs` epochs from epoch 0
        self._loops.start_at(self._epochs.epoch, state.get("loop_end", self.config.epochs))
        self._consumer.failures = dict(failures)
        dropped = sorted(dropped_files(failures, self.config.max_file_failures))
        with self._counters.lock:
            self._counters.dropped_files = dropped
        self._consumer.progress = Progress(files_dropped=len(dropped))

    def set_epoch(self, epoch: int) -> None:
        """Make the next loop run ``epochs`` epochs from ``epoch`` (the
        ``DistributedSampler.set_epoch`` idiom): before starting, or between loops (a ``for``
        left early counts as ended; its rest is skipped). If the service already prepared
        another epoch, it drops that and restarts at ``epoch`` (threads and decoders stay).

        Raises:
            RuntimeError: a loop begun with ``next()`` is in progress.
        """
        if self._state is State.NOT_STARTED:
            self._epochs.set_epoch(epoch)
            self._loops.start_at(self._epochs.epoch)
            return
        if self._state is State.CLOSED:
            raise PrefetcherClosedError("this Prefetcher is closed; create a new one")
        if not self._loops.can_set_epoch():
            raise RuntimeError(
                "set_epoch must be called before the Prefetcher starts or "
                "between loops, not in the middle of an epoch read with next()"
            )
        if self._loops.set_epoch(epoch):
            self._consumer.generation = self._control.restart_at(epoch)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        n = len(self.sampler)
        b = self.config.batch_size
        return n // b if self.config.drop_last else -(-n // b)

    def __repr__(self) -> str:
        return (
            f"Prefetcher({len(self.dataset)} samples from {len(self.dataset.files)} files, "
            f"seq_len={self.config.seq_len}, batch_size={self.config.batch_size}, "
            f"device='{self.device}', backend={self.backend_name!r}, "
            f"state={self._state.value})"
        )

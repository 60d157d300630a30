"""The consumer's end of the queue: bounded waits, stall checks, unpacking the envelopes.

:class:`Consumer` takes items from the service's janus queue in short slices (sync or async),
notices a dead service thread and a stall longer than ``timeout``, drops items of a stream the
consumer restarted, hands each batch over to the consumer's CUDA stream and keeps the counts
that ``Prefetcher.stats()`` reports. It decides nothing about the lifecycle: after an error it
sets :attr:`Consumer.fatal` (close the Prefetcher) or :attr:`Consumer.stalled` (abandon it) and
raises. Used from the consumer's thread (or event loop) only.
"""

from __future__ import annotations

import asyncio
import queue as std_queue
import threading
import time

import janus

from tvl_async._batch import Batch, PrefetchStats
from tvl_async._channel import Counters, Delivery, EpochEnd, Failure, Item, Progress
from tvl_async._decoding import DecodePool
from tvl_async._devices import hand_over
from tvl_async._errors import PrefetcherClosedError, ServiceError
from tvl_async._loops import EpochLoops
from tvl_async._source import bytes_read

POLL_SECONDS = 0.05  # slice of the consumer's waits


class Consumer:
    """Reads one service's queue (consumer thread only).

    Args:
        timeout: seconds to wait for one batch before ``TimeoutError`` (None: no limit).
        pool_holder: holds the service's decode pool once it runs (for timeout messages).
        counters: the service's counters.
        loops: the loop bookkeeping, told of every batch and epoch end.

    :meth:`attach` gives it the queue and the service thread when the service starts.
    """

    def __init__(
        self,
        timeout: float | None,
        pool_holder: list[DecodePool],
        counters: Counters,
        loops: EpochLoops,
    ) -> None:
        self._queue: janus.Queue[Item] = None  # type: ignore[assignment]  # see attach()
        self._thread: threading.Thread = None  # type: ignore[assignment]
        self._timeout = timeout
        self._pool_holder, self._counters, self._loops = pool_holder, counters, loops
        self.generation = 0  # of the stream read (see Control); other items are stale
        self.fatal = False  # raised the service's error or its death: close the Prefetcher
        self.stalled = False  # timed out: abandon the Prefetcher
        self.batches = self.samples = 0
        self.progress = Progress()
        self.failures: dict[str, int] = {}
        self.wait = self.wait_first = 0.0
        self.epoch_waits: list[float] = []
        self._epoch_first = True

    def attach(self, queue: janus.Queue[Item], thread: threading.Thread) -> None:
        """The queue to read and the service thread to watch while waiting."""
        self._queue, self._thread = queue, thread

    def next_sync(self) -> Batch:
        """The next batch of the loop; blocks (in slices). Raises ``StopIteration`` at the
        loop's end, the service's exception where it happened, ``PrefetcherClosedError``,
        ``ServiceError`` or ``TimeoutError``."""
        t0 = time.perf_counter()
        while True:
            try:
                item = self._queue.sync_q.get(timeout=POLL_SECONDS)
            except std_queue.Empty:
                self._check_stall(time.perf_counter() - t0)
                continue
            except janus.SyncQueueShutDown:
                raise PrefetcherClosedError(
                    "the Prefetcher was closed while waiting for a batch"
                ) from None
            batch = self._unpack(item, time.perf_counter() - t0)
            if batch is not None:
                return batch

    async def next_async(self) -> Batch:
        """:meth:`next_sync` for ``async for`` (``StopAsyncIteration`` at the loop's end):
        awaits without blocking the event loop."""
        t0 = time.perf_counter()
        while True:
            try:
                item = await asyncio.wait_for(self._queue.async_q.get(), POLL_SECONDS * 4)
            except TimeoutError:
                self._check_stall(time.perf_counter() - t0)
                continue
            except janus.AsyncQueueShutDown:
                raise PrefetcherClosedError(
                    "the Prefetcher was closed while waiting for a batch"
                ) from None
            except RuntimeError as e:
                if "different event loop" in str(e) or "bound to" in str(e):
                    self.fatal = True
                    raise RuntimeError(
                        "this Prefetcher was already iterated from another asyncio event loop; "
                        "iterate one Prefetcher from one event loop (create one per loop)"
                    ) from e
                raise
            try:
                batch = self._unpack(item, time.perf_counter() - t0)
            except StopIteration:  # not allowed out of a coroutine
                raise StopAsyncIteration from None
            if batch is not None:
                return batch

    def _check_stall(self, waited: float) -> None:
        """Called while waiting: raise if the service died or the timeout passed."""
        if not self._thread.is_alive() and self._queue.sync_q.qsize() == 0:
            self.fatal = True
            raise ServiceError(
                "the tvl_async service thread died without delivering its last batches or an error"
            )
        if self._timeout is not None and waited > self._timeout:
            busy = self._pool_holder[0].activity() if self._pool_holder else "starting up"
            with self._counters.lock:
                if self._counters.transforming:
                    busy = f"{self._counters.transforming}; decoders: {busy}"
            self.stalled = True
            raise TimeoutError(
                f"no batch arrived within {self._timeout:g} s; the service was busy with: {busy}"
            )

    def _unpack(self, item: Item, waited: float) -> Batch | None:
        """A batch to hand out, or None (a marker or a stale item); raises ``StopIteration`` at
        the end of the loop and the service's exception."""
        if isinstance(item, Failure):
            self.wait += waited
            self.fatal = True
            raise item.error
        if item.generation != self.generation:  # prepared before a restart
            return None
        if isinstance(item, EpochEnd):
            self.progress = item.progress
            self._epoch_first = True
            if self._loops.on_epoch_end(item.epoch):
                self.wait += waited
                raise StopIteration
            return None
        assert isinstance(item, Delivery)
        batch = item.batch
        hand_over(batch.outputs.values(), item.event)
        self.wait += waited
        if self.batches == 0:
            self.wait_first = waited
        if self._epoch_first:
            self.epoch_waits.append(waited)
            self._epoch_first = False
        self.batches += 1
        self.samples += batch.batch_size
        self.progress = item.progress
        self.failures = item.failures
        self._loops.on_batch(batch.epoch, item.resume_at)
        return batch

    def stats(
        self,
        pool: DecodePool | None,
        queue: janus.Queue[Item] | None,
        *,
        frames_per_sample: int,
        queue_depth: int,
        lookahead: int,
        sample_bytes: int,
        memory_budget: int,
        decode_threads: int,
        unindexed_files: list[str],
    ) -> PrefetchStats:
        """``Prefetcher.stats()``: counts as of the last item received, plus the pool's rate."""
        decoded = round(self.progress.frames_decoded)
        busy = pool.busy_seconds if pool else 0.0
        frames_out = self.samples * frames_per_sample
        c = self._counters
        with c.lock:
            n_skipped = self.progress.samples_skipped
            skipped = c.skipped[:n_skipped]
            dropped = c.dropped_files[: self.progress.files_dropped]
            fallback = list(c.fallback_files)
            peak = c.peak_buffer_bytes
            held = (c.held_samples, c.held_bytes)
        return PrefetchStats(
            batches_delivered=self.batches,
            samples_delivered=self.samples,
            frames_delivered=frames_out,
            frames_decoded=decoded,
            decoded_per_delivered=decoded / frames_out if frames_out else 0.0,
            decode_rate=pool.frames_decoded / busy if pool and busy > 0 else 0.0,
            wait_time=self.wait,
            wait_time_after_first=self.wait - self.wait_first,
            queue_fill=queue.sync_q.qsize() if queue is not None else 0,
            queue_depth=queue_depth,
            samples_skipped=n_skipped,
            skipped=skipped,
            dropped_files=dropped,
            fallback_files=fallback,
            lookahead=lookahead,
            memory_bound_bytes=lookahead * sample_bytes,
            peak_buffer_bytes=peak,
            elapsed=time.perf_counter() - c.started if c.started else 0.0,
            decode_threads=decode_threads,
            epoch_start_waits=list(self.epoch_waits),
            unindexed_files=unindexed_files,
            bytes_read=(read := bytes_read() - c.bytes_at_start),
            bytes_read_per_sample=read / self.samples if self.samples else 0.0,
            held_samples=held[0],
            held_bytes=held[1],
            sample_bytes=sample_bytes,
            memory_budget=memory_budget,
        )

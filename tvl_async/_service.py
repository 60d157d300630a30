"""The service thread's body: plan, decode, collate, queue (``Prefetcher``'s engine).

:func:`service_main` runs in the thread ``Prefetcher`` starts (``tvl-async-service``). It gets
everything it uses in one :class:`ServicePlan` (no reference to the ``Prefetcher``), owns the
decoders (and, on a GPU, sets the device and works on its own CUDA stream) and runs the one loop
of the pipeline (:class:`_Service`): it asks the planner (``_planning``) for decode jobs, submits
them to the decode pool (``_decoding``, where samples are also processed), hands finished jobs
back to the planner, takes finished samples in sampler order, collates them
(``_batching``) and puts :class:`Delivery` envelopes into the bounded janus queue.

The stream never ends by itself: epochs follow each other (an :class:`EpochEnd` marker after the
last batch of each), so the next epoch's first batches are ready while the consumer finishes
this one; the queue and the lookahead bound how far it runs ahead. The consumer repositions the
stream through :class:`Control` (every item carries the generation it belongs to). A
:class:`Failure` carries an exception at its place in the stream and ends the thread.

Every wait is bounded (:data:`POLL_SECONDS`) and re-checks the stop flag; :func:`shutdown` (the
consumer's side of ``close()``) sets the flag, shuts the queue down and joins with a timeout.
"""

from __future__ import annotations

import itertools
import logging
import queue as std_queue
import threading
from collections import deque

import janus
import torch

from tvl_async._batch import Batch, SkippedSample
from tvl_async._batching import apply_transform, collate
from tvl_async._channel import Delivery, EpochEnd, Failure, Item, Progress
from tvl_async._decoding import BackendSpec, DecodePool
from tvl_async._devices import ServiceStream, to_device_async
from tvl_async._planning import LookaheadPlanner, SampleRequest, SampleResult
from tvl_async._processing import held_compact, process_clip, shape_clip
from tvl_async._requests import ServicePlan, requests

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # slice of every bounded wait
JOIN_SECONDS = 10.0  # how long close() waits for the service thread
# Containers (with their decoders) each CPU decode thread keeps open. An open 1080p H.264
# decoder holds ~26 MB of frame buffers; reopening a file costs far less than decoding a GOP
# (docs/benchmarks.md), and random sampling over many files rarely hits an open one anyway.
OPEN_FILES_PER_THREAD = 4
# CPU decoding skips H.264 non-reference frames that no sample wants and stops after the last
# wanted frame (``_backends.pyav_skip``; exact). False: decode every frame up to the last wanted.
SKIP_UNWANTED = True
# The first batch after a start (or a restart) is planned alone, and decodes no further into
# each GOP than that batch needs (``LookaheadPlanner(first_batch=)``): time to the first batch
# at its minimum.
URGENT_FIRST_BATCH = True


def _put(plan: ServicePlan, item: Item, timeout: float = POLL_SECONDS) -> bool:
    """One bounded attempt to queue ``item`` (``timeout`` 0: without waiting); False if the
    queue stayed full. Raises ``janus.SyncQueueShutDown`` once the consumer shut it down."""
    q = plan.queue.sync_q
    try:
        if timeout <= 0:
            q.put_nowait(item)
        else:
            q.put(item, timeout=timeout)
    except std_queue.Full:
        return False
    return True


def _collate(results: list[SampleResult], plan: ServicePlan) -> Batch:
    return collate(results, plan.dataset.files, plan.processing)


def _backend_spec(plan: ServicePlan) -> BackendSpec:
    if plan.backend == "pyav":
        return BackendSpec(
            "pyav",
            "cpu",
            {
                "threads": plan.ffmpeg_threads,
                "max_open_files": OPEN_FILES_PER_THREAD,
                "skip_unwanted": SKIP_UNWANTED,
            },
        )

    def on_fallback(path: str, _reason: str) -> None:
        with plan.counters.lock:
            plan.counters.fallback_files.append(path)

    return BackendSpec(plan.backend, plan.device, {"on_fallback": on_fallback})


def service_main(plan: ServicePlan) -> None:
    """Body of the service thread: runs the pipeline until stopped or failed (a Failure).
    Owns the decoders (and the CUDA device and stream on a GPU)."""
    pool: DecodePool | None = None
    try:
        stream = ServiceStream(plan.device)

        # Outputs held compact wait in the reorder buffer as uint8 and are finished per batch
        # in collate(); the others are finished here.
        steps = {
            name: shape_clip if held_compact(desc) else process_clip
            for name, desc in plan.processing.items()
        }

        def process(r: SampleRequest, clip: torch.Tensor) -> dict[str, torch.Tensor]:
            clip = to_device_async(clip, plan.device, stream)
            return {
                name: steps[name](clip, desc, r.augment[name], positions=r.positions)
                for name, desc in plan.processing.items()
            }

        pool = DecodePool(
            _backend_spec(plan),
            plan.decode_threads,
            process=process,
            process_in_workers=plan.device.type == "cpu",
        )
        plan.pool_holder.append(pool)
        with stream.context():  # GPU decoding, processing and collation on the service stream
            _Service(plan, pool, stream).run()
    except janus.SyncQueueShutDown:
        pass  # the consumer closed the queue: nobody is listening any more
    except BaseException as e:
        if not any(n.startswith("tvl_async:") for n in getattr(e, "__notes__", ())):
            name = threading.current_thread().name
            e.add_note(f"tvl_async: raised in the service thread ({name})")
        _report(plan, Failure(e))
    finally:
        if pool is not None:
            stuck = pool.close()
            if stuck:
                log.warning("decode threads did not stop in time: %s", ", ".join(stuck))


def _report(plan: ServicePlan, item: Item) -> None:
    """Queue ``item`` however long it waits, unless asked to stop or the queue is shut down."""
    try:
        while not plan.stop.is_set() and not _put(plan, item):
            pass
    except janus.SyncQueueShutDown:
        pass


class _Service:
    """The service's loop: planner → decode pool → planner → batches → queue; one thread."""

    def __init__(self, plan: ServicePlan, pool: DecodePool, stream: ServiceStream) -> None:
        self.plan, self.pool, self.stream = plan, pool, stream
        self.generation = 0
        self._seqs = itertools.count()  # across generations: stale results are told apart
        self.planner = self._new_planner()
        self.pending: list[SampleResult] = []  # the batch being filled
        self.outbox: deque[Item] = deque()  # made, not yet queued (the queue was full)
        self.failed = False  # a Failure is in the outbox: send what is there, then end
        self.decoded = 0.0  # frames decoded for the samples taken so far
        self.per_epoch = plan.epochs.samples_per_epoch

    def _new_planner(self) -> LookaheadPlanner:
        return LookaheadPlanner(
            requests(self.plan, self._seqs),
            self.plan.lookahead,
            max_jobs=2 * self.pool.n_workers,
            first_batch=self.plan.config.batch_size if URGENT_FIRST_BATCH else 0,
        )

    def run(self) -> None:
        """Until stopped or failed. Raises ``janus.SyncQueueShutDown`` once the queue is shut."""
        plan = self.plan
        while not plan.stop.is_set():
            if self.outbox and _put(plan, self.outbox[0], timeout=0):
                self.outbox.popleft()
                continue
            if self.failed:
                if not self.outbox:
                    return
                if _put(plan, self.outbox[0]):
                    self.outbox.popleft()
                continue
            self._check_control()
            self._schedule()
            if not self.outbox:  # else the queue is full: keep decoding ahead meanwhile
                result = self.planner.pop_next()
                if result is not None:
                    self._take(result)
                    continue
            self._wait()

    def _schedule(self) -> None:
        """Send the planner's jobs; collect every finished job without waiting (freed job slots
        are refilled at once, so the decoders keep working ahead of the consumer)."""
        while True:
            for job in self.planner.next_jobs():
                self.pool.submit(job)
            results = self.pool.get(timeout=0)
            if results is None:
                return
            self._collect(results)

    def _collect(self, results: list[SampleResult]) -> None:
        if self.planner.owns(results):  # else from before a restart: dropped
            self.planner.collect(results)

    def _wait(self) -> None:
        """Wait (bounded) for a decode job, or for room in the queue when none is running."""
        if self.planner.jobs_in_flight:
            results = self.pool.get(timeout=POLL_SECONDS)
            if results is not None:
                self._collect(results)
        elif self.outbox:
            if _put(self.plan, self.outbox[0]):
                self.outbox.popleft()
        else:  # nothing runs and nothing waits: only a restart can bring work
            self.plan.stop.wait(POLL_SECONDS)

    def _check_control(self) -> None:
        restart = self.plan.control.take(self.generation)
        if restart is None:
            return
        self.generation, epoch = restart
        self.plan.epochs.set_epoch(epoch)
        self.planner = self._new_planner()
        self.pending = []
        self.outbox.clear()

    def _take(self, result: SampleResult) -> None:
        """One finished sample, in sampler order: skip it, fail, or add it to the batch."""
        plan, cfg, r = self.plan, self.plan.config, result.request
        self.decoded += result.job_decoded
        with plan.counters.lock:
            plan.counters.peak_buffer_bytes = max(
                plan.counters.peak_buffer_bytes, self.planner.peak_bytes
            )
            plan.counters.held_samples = self.planner.held_samples
            plan.counters.held_bytes = self.planner.held_bytes
        if r.index.path in plan.dropped:
            _skip(plan, r, "file dropped after repeated failures")
        elif result.error is not None:
            if cfg.on_error == "raise":
                result.error.add_note(
                    f"tvl_async: raised in the service thread for sample "
                    f"{r.sample_id} (epoch {r.epoch}): {r.where()}"
                )
                self.outbox.append(Failure(result.error))
                self.failed = True
                return
            self._count_failure(r, result.error)
        else:
            self.pending.append(result)
            if len(self.pending) == cfg.batch_size:
                self._flush(final=False)
        if r.position == self.per_epoch - 1:
            self._flush(final=True)
            self.outbox.append(EpochEnd(r.epoch, self.generation, self._progress()))

    def _count_failure(self, r: SampleRequest, err: BaseException) -> None:
        plan, path = self.plan, r.index.path
        failures = plan.failures
        failures[path] = failures.get(path, 0) + 1
        _skip(plan, r, f"{type(err).__name__}: {err}", first=failures[path] == 1)
        if failures[path] >= plan.config.max_file_failures and path not in plan.dropped:
            plan.dropped.add(path)
            with plan.counters.lock:
                plan.counters.dropped_files.append(path)
            log.warning(
                "tvl_async: giving up %s after %d failures; its remaining samples are "
                "skipped for the rest of the run",
                path,
                failures[path],
            )

    def _flush(self, final: bool) -> None:
        """Collate the pending samples into a batch (``final``: the epoch's last, maybe short)."""
        pending, self.pending = self.pending, []
        plan, cfg = self.plan, self.plan.config
        if not pending or (final and cfg.drop_last and len(pending) < cfg.batch_size):
            return
        batch = _collate(pending, plan)
        if plan.transform is not None:
            with plan.counters.lock:
                plan.counters.transforming = (
                    f"the transform, on samples "
                    f"{batch.sample_ids.tolist()[:8]} (epoch "
                    f"{batch.epoch})"
                )
            try:
                batch = apply_transform(plan.transform, batch)
            finally:
                with plan.counters.lock:
                    plan.counters.transforming = ""
        last = pending[-1].request
        self.outbox.append(
            Delivery(
                batch,
                self.stream.record_event(),
                (last.epoch, last.position + 1),
                dict(plan.failures),
                self._progress(),
                self.generation,
            )
        )

    def _progress(self) -> Progress:
        c = self.plan.counters
        with c.lock:
            return Progress(self.decoded, c.samples_skipped, len(c.dropped_files))


def _skip(plan: ServicePlan, r: SampleRequest, why: str, first: bool = False) -> None:
    with plan.counters.lock:
        plan.counters.samples_skipped += 1
        if len(plan.counters.skipped) < 1000:
            plan.counters.skipped.append(
                SkippedSample(r.epoch, r.sample_id, r.index.path, list(r.frames), why)
            )
    if first:
        log.warning(
            "tvl_async: skipping sample %d of %s (frames %s): %s (logged once per file; "
            "see Prefetcher.stats().skipped)",
            r.sample_id,
            r.index.path,
            r.frames,
            why,
        )


def shutdown(
    stop: threading.Event,
    thread: threading.Thread | None,
    q: janus.Queue[Item],
    pool_holder: list[DecodePool],
) -> None:
    """Stop the service: set the flag, shut the queue down (dropping what it holds, waking
    every blocked put and get), join with a timeout. Idempotent; any thread."""
    stop.set()
    q.close()
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(JOIN_SECONDS)
        if thread.is_alive():
            where = pool_holder[0].activity() if pool_holder else "unknown"
            log.warning(
                "tvl_async: the service thread did not stop within %.0f s (busy with: %s); "
                "it is a daemon thread and will not block interpreter exit",
                JOIN_SECONDS,
                where,
            )

"""The service thread's body: plan, decode, process, collate, queue (``Prefetcher``'s engine).

:func:`service_main` runs in the thread ``Prefetcher`` starts (``tvl-async-service``). It gets
everything it uses in one :class:`ServicePlan` (no reference to the ``Prefetcher``), owns the
decoders (and, on a GPU, sets the device and works on its own CUDA stream), walks the sampler
through the lookahead planner (``planning.py``), processes frames on the target device
(``processing.py``), collates :class:`~tvl_async._batch.Batch` objects in sampler order and puts
them into the bounded janus queue. It ends with :class:`End` or a :class:`Failure` carrying the
exception, at its place in the stream.

Every put waits in slices of :data:`POLL_SECONDS` and re-checks the stop flag; :func:`shutdown`
(the consumer's side of ``close()``) sets the flag, drains the queue and joins with a timeout.
"""

from __future__ import annotations

import logging
import queue as std_queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import janus
import numpy as np
import torch

from tvl_async._backends import create_backend
from tvl_async._batch import Batch, SkippedSample
from tvl_async._config import PrefetchConfig, ProcessDesc
from tvl_async._dataset import VideoDataset
from tvl_async._errors import DecodeError
from tvl_async._planning import DecodePool, LookaheadPlanner, SampleRequest, SampleResult
from tvl_async._processing import AugmentParams, draw_augment, process_clip
from tvl_async._sampling import EpochIterator

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # slice of every bounded wait
JOIN_SECONDS = 10.0  # how long close() waits for the service thread
# Containers (with their decoders) each CPU decode thread keeps open. An open 1080p H.264
# decoder holds ~26 MB of frame buffers; reopening a file costs far less than decoding a GOP
# (docs/benchmarks.md), and random sampling over many files rarely hits an open one anyway.
OPEN_FILES_PER_THREAD = 4


@dataclass
class Counters:
    """Counters written by the service thread and read by the consumer (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    skipped: list[SkippedSample] = field(default_factory=list)
    samples_skipped: int = 0
    dropped_files: list[str] = field(default_factory=list)
    fallback_files: list[str] = field(default_factory=list)
    peak_buffer_bytes: int = 0
    started: float = 0.0
    transforming: str = ""  # what the user's transform is running on, while it runs


@dataclass
class End:
    """Put by the service after the last batch."""


@dataclass
class Failure:
    """An exception from the service, delivered at its place in the stream."""

    error: BaseException


Item = Batch | End | Failure


@dataclass
class ServicePlan:
    """Everything the service thread uses; it gets no reference to the Prefetcher itself."""

    config: PrefetchConfig
    dataset: VideoDataset
    epochs: EpochIterator
    processing: dict[str, ProcessDesc]
    positions: list[int]
    device: torch.device
    backend: str
    decode_threads: int
    ffmpeg_threads: int
    lookahead: int
    transform: Callable[[Batch], Any] | None
    queue: janus.Queue[Item]
    stop: threading.Event
    counters: Counters
    pool_holder: list[DecodePool] = field(default_factory=list)
    # failures per file so far (service thread only; from the resumed state, if any)
    failures: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(init=False)  # files given up (service thread only)

    def __post_init__(self) -> None:
        self.dropped = dropped_files(self.failures, self.config.max_file_failures)


def dropped_files(failures: Mapping[str, int], max_failures: int) -> set[str]:
    """Files given up: those that failed ``max_failures`` times."""
    return {path for path, n in failures.items() if n >= max_failures}


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of a sample's random draws from its place in the epoch's global order: every rank
    draws differently, and a sample gets the same crop whatever the number of ranks."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0] >> 1)


def _requests(plan: ServicePlan) -> Iterator[SampleRequest]:
    """Sample requests in sampler order, with their random draws (made here, so they do not
    depend on the order in which samples finish decoding). Samples of files given up
    (``plan.dropped``) come as failed requests: they are skipped in their place, not decoded."""
    ds = plan.dataset
    indexes = ds.indexes
    for seq, (epoch, position, sample_id) in enumerate(plan.epochs):
        file_index, _ = ds.locate(sample_id)
        index = indexes[file_index]
        seed = plan.epochs.sampler.seed  # the resumed state's seed after load_state_dict
        where = plan.epochs.sampler.global_position(position)
        gen = torch.Generator().manual_seed(_sample_seed(seed, epoch, where))
        augment: dict[str, AugmentParams] = {}
        label: Any = None
        error: Exception | None = None
        try:  # a failure here (get_label, a draw) is this sample's, delivered in its place
            augment = {name: draw_augment(desc, index.height, index.width, gen)
                       for name, desc in plan.processing.items()}
            label = ds.label(sample_id)
        except Exception as e:
            error = e
        if index.path in plan.dropped:
            error = DecodeError(f"{index.path}: file dropped after repeated failures")
        yield SampleRequest(seq=seq, epoch=epoch, position=position, sample_id=sample_id,
                            file_index=file_index, index=index, frames=ds.clip_frames(sample_id),
                            positions=plan.positions, label=label, augment=augment, error=error)


def _process_sample(processing: dict[str, ProcessDesc], r: SampleRequest,
                    clip: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: process_clip(clip, desc, r.augment[name], positions=r.positions)
            for name, desc in processing.items()}


def _put(plan: ServicePlan, item: Item, pump: Callable[[float], bool] | None = None) -> bool:
    """Put into the queue, waiting in slices; False if asked to stop meanwhile.

    While the queue is full, ``pump`` (the planner's) keeps the decode threads working ahead
    within the lookahead window, so that a consumer slower than decoding never waits for work
    that could have been done while it was busy."""
    q = plan.queue.sync_q
    while not plan.stop.is_set():
        if pump is not None:
            try:
                q.put_nowait(item)
                return True
            except std_queue.Full:
                if pump(POLL_SECONDS):  # waited (bounded) for a decode job, scheduled more
                    continue
        try:
            q.put(item, timeout=POLL_SECONDS)
            return True
        except std_queue.Full:
            continue
    return False


def _collate(results: list[SampleResult], plan: ServicePlan) -> Batch:
    reqs = [r.request for r in results]
    names = list(results[0].outputs or {})
    outputs: dict[str, torch.Tensor] = {}
    for name in names:
        tensors = [r.outputs[name] for r in results if r.outputs is not None]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"output '{name}': clips of different sizes cannot share a batch ({sorted(shapes)} "
                f"from {sorted({r.index.path for r in reqs})}); add scale_width/scale_height or "
                f"width/height to the ProcessDesc")
        outputs[name] = torch.stack(tensors)
    labels: Any = [r.label for r in reqs]
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels):
        labels = torch.tensor(labels)
    elif all(x is None for x in labels):
        labels = None
    paths = plan.dataset.files  # as the user gave them (the index holds resolved paths)
    return Batch(
        outputs,
        sample_ids=torch.tensor([r.sample_id for r in reqs], dtype=torch.int64),
        files=[paths[r.file_index] for r in reqs],
        frame_indices=torch.tensor([r.frames for r in reqs], dtype=torch.int64),
        timestamps=torch.tensor(np.array([r.index.times[r.frames] for r in reqs])),
        labels=labels, epoch=reqs[0].epoch,
        augment={name: [r.augment[name].as_dict() for r in reqs] for name in plan.processing},
    )


def _make_backend(plan: ServicePlan) -> Any:
    if plan.backend == "pyav":
        return create_backend("pyav", "cpu", threads=plan.ffmpeg_threads,
                              max_open_files=OPEN_FILES_PER_THREAD)

    def on_fallback(path: str, reason: str) -> None:
        with plan.counters.lock:
            plan.counters.fallback_files.append(path)

    return create_backend(plan.backend, plan.device, on_fallback=on_fallback)


def service_main(plan: ServicePlan) -> None:
    """Body of the service thread: plan, decode, process, batch, queue; ends with End or a
    Failure. Owns the decoders (and the CUDA device and stream on a GPU)."""
    from tvl_async._devices import ServiceStream, to_device_async

    pool: DecodePool | None = None
    try:
        stream = ServiceStream(plan.device)
        on_cpu = plan.device.type == "cpu"
        gpu_decode = plan.backend == "nvdec"

        def process(r: SampleRequest, clip: torch.Tensor) -> dict[str, torch.Tensor]:
            return _process_sample(plan.processing, r, clip)

        pool = DecodePool(lambda: _make_backend(plan), 0 if gpu_decode else plan.decode_threads,
                          process=process if on_cpu or gpu_decode else None)
        plan.pool_holder.append(pool)
        planner = LookaheadPlanner(_requests(plan), pool, plan.lookahead)
        with stream.context():  # GPU decoding, processing and collation on the service stream
            _run_batches(plan, planner, stream, to_device_async)
    except BaseException as e:
        if not any(n.startswith("tvl_async:") for n in getattr(e, "__notes__", ())):
            name = threading.current_thread().name
            e.add_note(f"tvl_async: raised in the service thread ({name})")
        _put(plan, Failure(e))
    finally:
        if pool is not None:
            stuck = pool.close()
            if stuck:
                log.warning("decode threads did not stop in time: %s", ", ".join(stuck))


def _run_batches(plan: ServicePlan, planner: LookaheadPlanner, stream: Any,
                 to_device: Callable[..., torch.Tensor]) -> None:
    cfg = plan.config
    pending: list[SampleResult] = []
    failures = plan.failures
    dropped = plan.dropped
    epoch = -1

    def flush(final: bool) -> bool:
        nonlocal pending
        if not pending or (final and cfg.drop_last and len(pending) < cfg.batch_size):
            pending = []
            return True
        with stream.context():
            batch = _collate(pending, plan)
            if plan.transform is not None:
                with plan.counters.lock:
                    plan.counters.transforming = (f"the transform, on samples "
                                                  f"{batch.sample_ids.tolist()[:8]} (epoch "
                                                  f"{batch.epoch})")
                try:
                    batch = _apply_transform(plan.transform, batch)
                finally:
                    with plan.counters.lock:
                        plan.counters.transforming = ""
            batch.event = stream.record_event()
        last = pending[-1].request
        batch.resume_at = (last.epoch, last.position + 1)  # set here: a transform may replace it
        batch.resume_failures = dict(failures)
        pending = []
        return _put(plan, batch, planner.pump)

    while True:
        result = planner.next_result(plan.stop.is_set)
        if result is None:
            break
        with plan.counters.lock:
            plan.counters.peak_buffer_bytes = planner.peak_bytes
        r = result.request
        if r.epoch != epoch:
            if not flush(final=True):
                return
            epoch = r.epoch
        if r.index.path in dropped:
            _skip(plan, r, "file dropped after repeated failures")
            continue
        if result.error is None and result.outputs is None and result.frames is not None:
            try:
                with stream.context():
                    clip = to_device(result.frames, plan.device, stream)
                    result.outputs = _process_sample(plan.processing, r, clip)
            except Exception as e:
                result.error = e
        if result.error is not None:
            err = result.error
            if cfg.on_error == "raise":
                err.add_note(f"tvl_async: raised in the service thread for sample {r.sample_id} "
                             f"(epoch {r.epoch}): {r.where()}")
                _put(plan, Failure(err))
                return
            failures[r.index.path] = failures.get(r.index.path, 0) + 1
            _skip(plan, r, f"{type(err).__name__}: {err}", first=failures[r.index.path] == 1)
            if failures[r.index.path] >= cfg.max_file_failures and r.index.path not in dropped:
                dropped.add(r.index.path)
                with plan.counters.lock:
                    plan.counters.dropped_files.append(r.index.path)
                log.warning("tvl_async: giving up %s after %d failures; its remaining samples "
                            "are skipped for the rest of the run", r.index.path,
                            failures[r.index.path])
            continue
        pending.append(result)
        if len(pending) == cfg.batch_size and not flush(final=False):
            return
    if plan.stop.is_set() or not flush(final=True):
        return
    _put(plan, End())


def _apply_transform(transform: Callable[[Batch], Any], batch: Batch) -> Batch:
    out = transform(batch)
    if out is None or out is batch:
        return batch
    if isinstance(out, Batch):
        return out
    if isinstance(out, Mapping):
        batch.outputs = dict(out)
        return batch
    raise TypeError(f"transform must return a Batch, a mapping of tensors or None; got "
                    f"{type(out).__name__}")


def _skip(plan: ServicePlan, r: SampleRequest, why: str, first: bool = False) -> None:
    with plan.counters.lock:
        plan.counters.samples_skipped += 1
        if len(plan.counters.skipped) < 1000:
            plan.counters.skipped.append(SkippedSample(r.epoch, r.sample_id, r.index.path,
                                                       list(r.frames), why))
    if first:
        log.warning("tvl_async: skipping sample %d of %s (frames %s): %s (logged once per file; "
                    "see Prefetcher.stats().skipped)", r.sample_id, r.index.path, r.frames, why)


def shutdown(stop: threading.Event, thread: threading.Thread | None,
              q: janus.Queue[Item], pool_holder: list[DecodePool]) -> None:
    """Stop the service: set the flag, drain the queue, join with a timeout. Idempotent."""
    stop.set()
    drain(q)
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(JOIN_SECONDS)
        if thread.is_alive():
            where = pool_holder[0].activity() if pool_holder else "unknown"
            log.warning("tvl_async: the service thread did not stop within %.0f s (busy with: %s); "
                        "it is a daemon thread and will not block interpreter exit",
                        JOIN_SECONDS, where)
    drain(q)


def drain(q: janus.Queue[Item]) -> None:
    while True:
        try:
            q.sync_q.get_nowait()
        except (std_queue.Empty, RuntimeError):
            return
        except Exception:
            return

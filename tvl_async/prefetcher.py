"""The prefetch service: one background thread decodes, processes and batches while you train.

``Prefetcher`` starts a named service thread (``tvl-async-service``) on ``__enter__`` (or on the
first iteration). That thread owns the decoders and, on a GPU, sets the device and works on its
own CUDA stream; it walks the sampler, plans decode jobs (``planning.py``), processes frames on the
target device (``processing.py``), collates :class:`Batch` objects in sampler order and puts them
into a bounded janus queue. The consumer takes them with ``for`` or ``async for``.

Lifecycle: not started → running → closed. Every wait is bounded: the service puts with short
timeouts and re-checks its stop flag; the consumer waits in short slices, notices a dead service
thread, and turns a stall longer than ``timeout`` into ``TimeoutError``. ``close()`` (idempotent;
also run by ``__exit__``, garbage collection and interpreter exit) stops the thread, drains the
queue and joins with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue as std_queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import janus
import numpy as np
import torch

from tvl_async.backends import create_backend, resolve_backend
from tvl_async.config import PrefetchConfig, ProcessDesc
from tvl_async.errors import (
    BackendUnavailableError,
    DecodeError,
    PrefetcherClosedError,
    ServiceError,
)
from tvl_async.index import VIDEO_SUFFIXES
from tvl_async.planning import DecodePool, LookaheadPlanner, SampleRequest, SampleResult
from tvl_async.processing import AugmentParams, draw_augment, needed_frames, process_clip
from tvl_async.sampling import EpochIterator, VideoDataset, make_sampler

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # slice of every bounded wait
JOIN_SECONDS = 10.0  # how long close() waits for the service thread
# samples; the memory budget is the real bound (1 GiB holds ~7000 224x224 RGB images): the
# planner's gain keeps growing with the window (docs/benchmarks.md) and jobs go out earliest
# sample first, so the first batch does not wait for the whole window
MAX_DEFAULT_LOOKAHEAD = 16384
# Containers (with their decoders) each CPU decode thread keeps open. An open 1080p H.264
# decoder holds ~26 MB of frame buffers; reopening a file costs far less than decoding a GOP
# (docs/benchmarks.md), and random sampling over many files rarely hits an open one anyway.
OPEN_FILES_PER_THREAD = 4


# ---------------------------------------------------------------------------------- batch


class Batch(Mapping[str, torch.Tensor]):
    """A ready batch: output tensors by name (``"default"`` without processing) plus metadata.

    Attributes:
        sample_ids: ``[B]`` int64 dataset indices of the clips.
        files: ``B`` file paths.
        frame_indices: ``[B, F]`` int64 frame indices of each clip (F = ``seq_len``).
        timestamps: ``[B, F]`` float64 presentation times in seconds.
        labels: ``B`` labels (a tensor when they are all numbers, else a list; None without
            ``get_label``).
        epoch: the epoch the samples belong to.
        augment: per output name, the random crop/flip drawn for each clip.
    """

    def __init__(self, outputs: dict[str, torch.Tensor], *, sample_ids: torch.Tensor,
                 files: list[str], frame_indices: torch.Tensor, timestamps: torch.Tensor,
                 labels: Any, epoch: int, augment: dict[str, list[dict[str, Any]]]) -> None:
        self.outputs = outputs
        self.sample_ids = sample_ids
        self.files = files
        self.frame_indices = frame_indices
        self.timestamps = timestamps
        self.labels = labels
        self.epoch = epoch
        self.augment = augment
        self.event: Any = None  # CUDA event recorded after the batch was produced
        self.resume_at: tuple[int, int] = (epoch, 0)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def batch_size(self) -> int:
        """Number of clips."""
        return len(self.files)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype} {v.device}"
                           for k, v in self.outputs.items())
        return f"Batch(epoch={self.epoch}, samples={self.sample_ids.tolist()}, {shapes})"


# ---------------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class SkippedSample:
    """A sample dropped with ``on_error="skip"``."""

    epoch: int
    sample_id: int
    file: str
    frames: list[int]
    error: str


@dataclass(frozen=True)
class PrefetchStats:
    """A snapshot of the service's counters (see :meth:`Prefetcher.stats`). Times in seconds.

    Attributes:
        batches_delivered, samples_delivered, frames_delivered: handed to the consumer.
        frames_decoded: frames the decoders produced.
        decoded_per_delivered: frames decoded per frame delivered (1.0 = no wasted decoding).
        decode_rate: frames decoded per second of decoder busy time (all decode threads).
        wait_time: total time the consumer waited for batches.
        wait_time_after_first: the same, not counting the first batch.
        queue_fill: batches ready in the queue now; queue_depth: its capacity.
        samples_skipped: samples dropped (``on_error="skip"``); skipped: the first 1000 of them.
        dropped_files: files given up after repeated failures.
        fallback_files: files the GPU decoder could not handle, decoded on the CPU instead.
        lookahead: samples planned ahead; memory_bound_bytes: lookahead × output bytes per sample;
        peak_buffer_bytes: most bytes the reorder buffer held.
        elapsed: seconds since the service started.
    """

    batches_delivered: int
    samples_delivered: int
    frames_delivered: int
    frames_decoded: int
    decoded_per_delivered: float
    decode_rate: float
    wait_time: float
    wait_time_after_first: float
    queue_fill: int
    queue_depth: int
    samples_skipped: int
    skipped: list[SkippedSample]
    dropped_files: list[str]
    fallback_files: list[str]
    lookahead: int
    memory_bound_bytes: int
    peak_buffer_bytes: int
    elapsed: float
    decode_threads: int


@dataclass
class _Counters:
    """Counters written by the service thread and read by the consumer (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    skipped: list[SkippedSample] = field(default_factory=list)
    samples_skipped: int = 0
    dropped_files: list[str] = field(default_factory=list)
    fallback_files: list[str] = field(default_factory=list)
    peak_buffer_bytes: int = 0
    started: float = 0.0


# ---------------------------------------------------------------------------------- messages


@dataclass
class _End:
    """Put by the service after the last batch."""


@dataclass
class _Failure:
    """An exception from the service, delivered at its place in the stream."""

    error: BaseException


_Item = Batch | _End | _Failure


# ---------------------------------------------------------------------------------- service


@dataclass
class _ServicePlan:
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
    queue: janus.Queue[_Item]
    stop: threading.Event
    counters: _Counters
    pool_holder: list[DecodePool] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # files given up (service thread only)


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0] >> 1)


def _requests(plan: _ServicePlan) -> Iterator[SampleRequest]:
    """Sample requests in sampler order, with their random draws (made here, so they do not
    depend on the order in which samples finish decoding). Samples of files given up
    (``plan.dropped``) come as failed requests: they are skipped in their place, not decoded."""
    ds = plan.dataset
    indexes = ds.indexes
    for seq, (epoch, position, sample_id) in enumerate(plan.epochs):
        file_index, _ = ds.locate(sample_id)
        index = indexes[file_index]
        seed = plan.epochs.sampler.seed  # the resumed state's seed after load_state_dict
        gen = torch.Generator().manual_seed(_sample_seed(seed, epoch, position))
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


def _put(plan: _ServicePlan, item: _Item, pump: Callable[[float], bool] | None = None) -> bool:
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


def _collate(results: list[SampleResult], plan: _ServicePlan) -> Batch:
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
    batch = Batch(
        outputs,
        sample_ids=torch.tensor([r.sample_id for r in reqs], dtype=torch.int64),
        files=[r.index.path for r in reqs],
        frame_indices=torch.tensor([r.frames for r in reqs], dtype=torch.int64),
        timestamps=torch.tensor(np.array([r.index.times[r.frames] for r in reqs])),
        labels=labels, epoch=reqs[0].epoch,
        augment={name: [r.augment[name].as_dict() for r in reqs] for name in plan.processing},
    )
    batch.resume_at = (reqs[-1].epoch, reqs[-1].position + 1)
    return batch


def _make_backend(plan: _ServicePlan) -> Any:
    if plan.backend == "pyav":
        return create_backend("pyav", "cpu", threads=plan.ffmpeg_threads,
                              max_open_files=OPEN_FILES_PER_THREAD)

    def on_fallback(path: str, reason: str) -> None:
        with plan.counters.lock:
            plan.counters.fallback_files.append(path)

    return create_backend(plan.backend, plan.device, on_fallback=on_fallback)


def _service_main(plan: _ServicePlan) -> None:
    """Body of the service thread: plan, decode, process, batch, queue; ends with _End or a
    _Failure. Owns the decoders (and the CUDA device and stream on a GPU)."""
    from tvl_async.devices import ServiceStream, to_device_async

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
        _put(plan, _Failure(e))
    finally:
        if pool is not None:
            stuck = pool.close()
            if stuck:
                log.warning("decode threads did not stop in time: %s", ", ".join(stuck))


def _run_batches(plan: _ServicePlan, planner: LookaheadPlanner, stream: Any,
                 to_device: Callable[..., torch.Tensor]) -> None:
    cfg = plan.config
    pending: list[SampleResult] = []
    failures: dict[str, int] = {}
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
                batch = _apply_transform(plan.transform, batch)
            batch.event = stream.record_event()
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
                _put(plan, _Failure(err))
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
    _put(plan, _End())


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


def _skip(plan: _ServicePlan, r: SampleRequest, why: str, first: bool = False) -> None:
    with plan.counters.lock:
        plan.counters.samples_skipped += 1
        if len(plan.counters.skipped) < 1000:
            plan.counters.skipped.append(SkippedSample(r.epoch, r.sample_id, r.index.path,
                                                       list(r.frames), why))
    if first:
        log.warning("tvl_async: skipping sample %d of %s (frames %s): %s (logged once per file; "
                    "see Prefetcher.stats().skipped)", r.sample_id, r.index.path, r.frames, why)


def _shutdown(stop: threading.Event, thread: threading.Thread | None,
              q: janus.Queue[_Item], pool_holder: list[DecodePool]) -> None:
    """Stop the service: set the flag, drain the queue, join with a timeout. Idempotent."""
    stop.set()
    _drain(q)
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(JOIN_SECONDS)
        if thread.is_alive():
            where = pool_holder[0].activity() if pool_holder else "unknown"
            log.warning("tvl_async: the service thread did not stop within %.0f s (busy with: %s); "
                        "it is a daemon thread and will not block interpreter exit",
                        JOIN_SECONDS, where)
    _drain(q)


def _drain(q: janus.Queue[_Item]) -> None:
    while True:
        try:
            q.sync_q.get_nowait()
        except (std_queue.Empty, RuntimeError):
            return
        except Exception:
            return


# ---------------------------------------------------------------------------------- public


def _default_decode_threads(device: torch.device, backend: str) -> int:
    if backend == "nvdec":
        return 0
    return max(1, min(os.cpu_count() or 1, 8))


def _default_ffmpeg_threads(decode_threads: int) -> int:
    """FFmpeg threads per decode thread: the cores left over by the decode threads."""
    return max(1, (os.cpu_count() or 1) // max(decode_threads, 1))


class Prefetcher:
    """Decode, process and batch video clips in a background service thread.

    Args:
        files_or_dataset: video files, a folder, or a :class:`VideoDataset`.
        seq_len: frames per clip (ignored when a dataset is given: it has its own).
        batch_size: clips per batch.
        device: where batches are delivered (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        backend: ``"auto"``, ``"pyav"`` or ``"nvdec"``.
        shuffle, sampling, seed, epochs, replacement, chunk_size, shuffle_buffer, drop_last,
        rank, world_size: sampling options (see ``tvl_async.sampling``); ``epochs=None`` runs
            forever.
        lookahead: samples planned ahead (None: as many as ``memory_budget`` bytes of outputs
            allow, at most 16384 and at most one epoch).
        processing: a :class:`ProcessDesc` or a dict of named ones (several outputs from one
            decode); None gives ``"default"``: uint8 ``[F, 3, H, W]`` clips.
        queue_depth: ready batches held at most.
        decode_threads: CPU decode threads (None: one per core, at most 8).
        ffmpeg_threads: FFmpeg threads inside each decode thread (None: the cores left over,
            ``cpu_count // decode_threads``, at least 1); see docs/benchmarks.md.
        on_error: ``"raise"`` (the consumer gets the exception at that sample) or ``"skip"``
            (the sample is dropped, counted in :meth:`stats` and logged once per file).
        timeout: seconds the consumer waits for one batch before ``TimeoutError`` (None: wait
            as long as the service is alive).
        transform: callable applied to each :class:`Batch` in the service thread.
        stride, step, get_label: as for :class:`VideoDataset`.
        memory_budget: bytes of finished samples the planner may hold.
        max_file_failures: with ``on_error="skip"``, failures after which a file is given up.

    The consumer side (iteration, ``stats``, ``state_dict``, ``close``) may be used from one
    thread (or one asyncio event loop) at a time; ``close`` may be called from any thread.
    """

    def __init__(self, files_or_dataset: VideoDataset | str | os.PathLike[str]
                 | Iterable[str | os.PathLike[str]], seq_len: int = 1, *, batch_size: int = 1,
                 device: str | torch.device = "cpu", backend: str = "auto", shuffle: bool = True,
                 sampling: str = "uniform", seed: int = 0, epochs: int | None = 1,
                 lookahead: int | None = None,
                 processing: ProcessDesc | Mapping[str, ProcessDesc] | None = None,
                 queue_depth: int = 4, decode_threads: int | None = None,
                 ffmpeg_threads: int | None = None, drop_last: bool = False,
                 rank: int | None = None, world_size: int | None = None, on_error: str = "raise",
                 timeout: float | None = None, transform: Callable[[Batch], Any] | None = None,
                 replacement: bool = False, chunk_size: int = 8, shuffle_buffer: int = 1024,
                 stride: int = 1, step: int = 1, get_label: Callable[[str], Any] | None = None,
                 memory_budget: int = 1 << 30, max_file_failures: int = 3) -> None:
        dataset = files_or_dataset if isinstance(files_or_dataset, VideoDataset) else None
        if dataset is not None:
            seq_len, stride, step = dataset.seq_len, dataset.stride, dataset.step
        self.config = PrefetchConfig(
            seq_len=seq_len, batch_size=batch_size, device=str(device), backend=backend,
            shuffle=shuffle, sampling=sampling, seed=seed, epochs=epochs, lookahead=lookahead,
            processing=processing, queue_depth=queue_depth, decode_threads=decode_threads,
            ffmpeg_threads=ffmpeg_threads,
            drop_last=drop_last, rank=rank, world_size=world_size, on_error=on_error,
            timeout=timeout, replacement=replacement, chunk_size=chunk_size,
            shuffle_buffer=shuffle_buffer, stride=stride, step=step, memory_budget=memory_budget,
            max_file_failures=max_file_failures)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {transform!r}")
        cfg = self.config
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device '{cfg.device}' asked for, but PyTorch sees no CUDA device "
                f"(torch.cuda.is_available() is False; torch {torch.__version__})")
        self.backend_name = resolve_backend(cfg.backend, self.device)
        if dataset is None:
            files = _file_list(files_or_dataset)  # type: ignore[arg-type]
            dataset = VideoDataset(files, cfg.seq_len, stride=cfg.stride, step=cfg.step,
                                   get_label=get_label)
        self.dataset = dataset
        self._processing = dict(cfg.processing) if cfg.processing else {"default": ProcessDesc()}
        self._check_output_sizes()
        self._positions = sorted({p for d in self._processing.values()
                                  for p in needed_frames(d, cfg.seq_len)})
        sampler = make_sampler(dataset, cfg.sampling, shuffle=cfg.shuffle, seed=cfg.seed,
                               replacement=cfg.replacement, chunk_size=cfg.chunk_size,
                               shuffle_buffer=cfg.shuffle_buffer, rank=cfg.rank,
                               world_size=cfg.world_size, drop_last=cfg.drop_last)
        self._epochs = EpochIterator(sampler, cfg.epochs)
        self.sampler = sampler
        self.lookahead = cfg.lookahead or self._default_lookahead()
        threads = cfg.decode_threads or _default_decode_threads(self.device, self.backend_name)
        self.decode_threads = 0 if self.backend_name == "nvdec" else threads
        self._ffmpeg_threads = cfg.ffmpeg_threads or _default_ffmpeg_threads(self.decode_threads)
        self._transform = transform
        self._queue: janus.Queue[_Item] | None = None
        self._stop = threading.Event()
        self._counters = _Counters()
        self._thread: threading.Thread | None = None
        self._pool_holder: list[DecodePool] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._state = "new"
        self._resume_at: tuple[int, int] | None = None
        self._batches = self._samples = 0
        self._wait = self._wait_first = 0.0

    # ------------------------------------------------------------------ setup helpers

    def _check_output_sizes(self) -> None:
        fixed = all((d.width and d.height) or (d.scale_width and d.scale_height)
                    for d in self._processing.values())
        if not fixed:
            self.dataset.check_uniform_size()
        # A crop larger than some file's frames: fail now, naming the file (not later, in the
        # service thread, with a message that names no file).
        counts = self.dataset.samples_per_file
        sizes = {(ix.height, ix.width): ix.path
                 for k, ix in enumerate(self.dataset.indexes) if counts[k] > 0}
        for (h, w), path in sizes.items():
            for name, desc in self._processing.items():
                try:
                    desc.output_size(h, w)
                except ValueError as e:
                    raise ValueError(f"processing[{name!r}] does not fit '{path}' "
                                     f"({w}x{h}, width x height): {e}") from None

    def sample_bytes(self) -> int:
        """Bytes of one finished sample (all outputs), for the largest file."""
        h = max(ix.height for ix in self.dataset.indexes)
        w = max(ix.width for ix in self.dataset.indexes)
        total = 0
        for desc in self._processing.values():
            shape = desc.output_shape(self.config.seq_len, h, w)
            total += math.prod(shape) * torch.empty((), dtype=desc.dtype).element_size()
        return max(total, 1)

    def _held_sample_bytes(self) -> int:
        """Bytes the reorder buffer holds per sample: the outputs, or the decoded uint8 frames
        where those wait there to be processed on the device in order (CPU decoding for a GPU
        device)."""
        out = self.sample_bytes()
        if self.device.type == "cpu" or self.backend_name == "nvdec":
            return out
        h = max(ix.height for ix in self.dataset.indexes)
        w = max(ix.width for ix in self.dataset.indexes)
        return max(out, len(self._positions) * 3 * h * w)

    def _default_lookahead(self) -> int:
        """As many samples as ``memory_budget`` holds, at most 16384 and at most one epoch (more
        would only add latency before the first batch)."""
        by_memory = self.config.memory_budget // self._held_sample_bytes()
        epoch = max(len(self.sampler), self.config.batch_size)
        return int(max(1, min(by_memory, MAX_DEFAULT_LOOKAHEAD, epoch)))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Prefetcher:
        """Start the service thread (done by ``with``/``async with``/iteration); idempotent."""
        if self._state == "running":
            return self
        if self._state == "closed":
            raise PrefetcherClosedError("this Prefetcher is closed; create a new one")
        self._queue = janus.Queue(maxsize=self.config.queue_depth)
        plan = _ServicePlan(
            config=self.config, dataset=self.dataset, epochs=self._epochs,
            processing=self._processing, positions=self._positions, device=self.device,
            backend=self.backend_name, decode_threads=self.decode_threads,
            ffmpeg_threads=self._ffmpeg_threads, lookahead=self.lookahead,
            transform=self._transform, queue=self._queue, stop=self._stop,
            counters=self._counters, pool_holder=self._pool_holder)
        self._thread = threading.Thread(target=_service_main, args=(plan,), daemon=True,
                                        name="tvl-async-service")
        self._counters.started = time.perf_counter()
        if self._resume_at is None:  # the service reads ahead: remember where it began
            self._resume_at = (self._epochs.epoch, self._epochs.position)
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._thread,
                                           self._queue, self._pool_holder)
        self._state = "running"
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the service thread, drain the queue, join (bounded); safe to call twice and
        from any thread."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._finalizer is not None:
            self._finalizer()
        self._stop.set()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._state == "closed"

    def __enter__(self) -> Prefetcher:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Prefetcher:
        return self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()  # type: ignore[misc]

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[Batch]:
        self._ensure_started()
        return self

    def __next__(self) -> Batch:
        self._ensure_started()
        assert self._queue is not None
        t0 = time.perf_counter()
        waited_slices = 0.0
        while True:
            try:
                item = self._queue.sync_q.get(timeout=POLL_SECONDS)
                break
            except std_queue.Empty:
                waited_slices = time.perf_counter() - t0
                self._check_stall(waited_slices)
        return self._deliver(item, time.perf_counter() - t0)

    def __aiter__(self) -> AsyncIterator[Batch]:
        self._ensure_started()
        return self

    async def __anext__(self) -> Batch:
        self._ensure_started()
        assert self._queue is not None
        t0 = time.perf_counter()
        while True:
            try:
                item = await asyncio.wait_for(self._queue.async_q.get(), POLL_SECONDS * 4)
                break
            except TimeoutError:
                self._check_stall(time.perf_counter() - t0)
            except RuntimeError as e:
                if "different event loop" in str(e) or "bound to" in str(e):
                    self.close()
                    raise RuntimeError(
                        "this Prefetcher was already iterated from another asyncio event loop; "
                        "iterate one Prefetcher from one event loop (create one per loop)") from e
                raise
        try:
            return self._deliver(item, time.perf_counter() - t0)
        except StopIteration:
            raise StopAsyncIteration from None

    def _ensure_started(self) -> None:
        if self._state == "new":
            self.start()
        elif self._state == "closed":
            raise PrefetcherClosedError("this Prefetcher is closed; create a new one to iterate "
                                        "again")

    def _check_stall(self, waited: float) -> None:
        """Called while the consumer waits: raise if the service died or the timeout passed."""
        if self._state == "closed":
            raise PrefetcherClosedError("the Prefetcher was closed while waiting for a batch")
        thread = self._thread
        if thread is not None and not thread.is_alive():
            assert self._queue is not None
            if self._queue.sync_q.qsize() == 0:
                self.close()
                raise ServiceError("the tvl_async service thread died without delivering its "
                                   "last batches or an error")
        timeout = self.config.timeout
        if timeout is not None and waited > timeout:
            busy = self._pool_holder[0].activity() if self._pool_holder else "starting up"
            self._abandon()
            raise TimeoutError(f"no batch arrived within {timeout:g} s; the service was busy "
                               f"with: {busy}")

    def _abandon(self) -> None:
        """Close without joining, after a timeout: the service is stuck in a call that may not
        return soon (joining would block the consumer for seconds). The stop flag makes the
        service and its decode threads (daemons) end as soon as that call returns."""
        self._state = "closed"
        self._stop.set()
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._queue is not None:
            _drain(self._queue)

    def _deliver(self, item: _Item, waited: float) -> Batch:
        self._wait += waited
        if self._batches == 0:
            self._wait_first = waited
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        from tvl_async.devices import hand_over

        hand_over(item.outputs.values(), item.event)
        self._batches += 1
        self._samples += item.batch_size
        self._resume_at = item.resume_at
        return item

    # ------------------------------------------------------------------ stats and state

    def stats(self) -> PrefetchStats:
        """A snapshot of the counters; cheap, any time (consumer's thread)."""
        pool = self._pool_holder[0] if self._pool_holder else None
        decoded = round(pool.frames_decoded) if pool else 0
        busy = pool.busy_seconds if pool else 0.0
        frames_out = self._samples * len(self._positions)
        c = self._counters
        with c.lock:
            skipped = list(c.skipped)
            n_skipped = c.samples_skipped
            dropped = list(c.dropped_files)
            fallback = list(c.fallback_files)
            peak = c.peak_buffer_bytes
        return PrefetchStats(
            batches_delivered=self._batches, samples_delivered=self._samples,
            frames_delivered=frames_out, frames_decoded=decoded,
            decoded_per_delivered=decoded / frames_out if frames_out else 0.0,
            decode_rate=decoded / busy if busy > 0 else 0.0,
            wait_time=self._wait, wait_time_after_first=self._wait - self._wait_first,
            queue_fill=self._queue.sync_q.qsize() if self._queue is not None else 0,
            queue_depth=self.config.queue_depth, samples_skipped=n_skipped, skipped=skipped,
            dropped_files=dropped, fallback_files=fallback, lookahead=self.lookahead,
            memory_bound_bytes=self.lookahead * self._held_sample_bytes(),
            peak_buffer_bytes=peak,
            elapsed=time.perf_counter() - c.started if c.started else 0.0,
            decode_threads=self.decode_threads)

    def state_dict(self) -> dict[str, Any]:
        """Where to resume: just after the last batch handed to the consumer."""
        at = self._resume_at
        if at is None:  # not started: the cursor is exact (no service reads ahead of it)
            return {"sampler": self._epochs.state_dict(), "batches_delivered": 0}
        return {"sampler": self._epochs.state_dict(at=at), "batches_delivered": self._batches}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the exact next sample of ``state`` (before iterating)."""
        if self._state != "new":
            raise RuntimeError("load_state_dict must be called before the Prefetcher starts")
        if "sampler" not in state:
            raise ValueError("not a Prefetcher state: missing 'sampler'")
        self._epochs.load_state_dict(state["sampler"])

    def set_epoch(self, epoch: int) -> None:
        """Start from the first sample of ``epoch`` (before iterating)."""
        if self._state != "new":
            raise RuntimeError("set_epoch must be called before the Prefetcher starts")
        self._epochs.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        n = len(self.sampler)
        b = self.config.batch_size
        return n // b if self.config.drop_last else -(-n // b)

    def __repr__(self) -> str:
        return (f"Prefetcher({len(self.dataset)} samples from {len(self.dataset.files)} files, "
                f"seq_len={self.config.seq_len}, batch_size={self.config.batch_size}, "
                f"device='{self.device}', backend={self.backend_name!r}, state={self._state})")


def _file_list(files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files as given; a folder (or a single folder in a list) expands to its videos."""
    items: Sequence[str | os.PathLike[str]] = (
        [files] if isinstance(files, (str, os.PathLike)) else list(files))
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(str(q) for q in sorted(p.rglob("*")) if q.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(str(p))
    if not out:
        raise ValueError(f"no video files given (got {files!r})")
    return out

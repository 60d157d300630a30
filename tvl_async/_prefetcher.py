"""The service's public face: ``Prefetcher`` decodes, processes and batches while you train.

``Prefetcher`` starts a named service thread (``tvl-async-service``) on ``__enter__`` (or on the
first iteration). That thread (its body is ``tvl_async._service``) owns the decoders and, on a
GPU, sets the device and works on its own CUDA stream; it walks the sampler, plans decode jobs
(``planning.py``), processes frames on the target device (``processing.py``), collates
:class:`~tvl_async._batch.Batch` objects in sampler order and puts them into a bounded janus
queue. The consumer takes them with ``for`` or ``async for``; this module is the consumer's side.

Lifecycle: not started → running → closed. Every wait is bounded: the service puts with short
timeouts and re-checks its stop flag; the consumer waits in short slices, notices a dead service
thread, and turns a stall longer than ``timeout`` into ``TimeoutError``. ``close()`` (idempotent;
also run by ``__exit__``, garbage collection and interpreter exit) stops the thread, drains the
queue and joins with a timeout.
"""

from __future__ import annotations

import asyncio
import math
import os
import queue as std_queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

import janus
import torch

from tvl_async import _service as service
from tvl_async._backends import resolve_backend
from tvl_async._batch import Batch, PrefetchStats, SkippedSample
from tvl_async._config import DEFAULT_MEMORY_BUDGET, PrefetchConfig, ProcessDesc
from tvl_async._dataset import VideoDataset
from tvl_async._errors import (
    BackendUnavailableError,
    PrefetcherClosedError,
    ServiceError,
)
from tvl_async._index import find_videos
from tvl_async._planning import DecodePool
from tvl_async._processing import needed_frames
from tvl_async._sampling import EpochIterator, make_sampler

__all__ = ["Batch", "PrefetchStats", "Prefetcher", "SkippedSample"]

# samples; the memory budget is the real bound (2 GiB hold ~14000 224x224 RGB images): the
# planner's gain keeps growing with the window (docs/benchmarks.md) and jobs go out earliest
# sample first, so the first batch does not wait for the whole window
MAX_DEFAULT_LOOKAHEAD = 16384


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
        rank, world_size: sampling options (see ``tvl_async._sampling``); ``epochs=None`` runs
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
        frame_rate, stream_index, autorotate, progress, index_timeout: as for
            :class:`VideoDataset` (with ``on_error="skip"``, files that cannot be indexed are
            left out and listed in ``stats().unindexed_files``).

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
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, max_file_failures: int = 3,
                 frame_rate: float | None = None, stream_index: int | None = None,
                 autorotate: bool = True, progress: bool = False,
                 index_timeout: float | None = 300.0) -> None:
        dataset = files_or_dataset if isinstance(files_or_dataset, VideoDataset) else None
        if dataset is not None:
            _check_dataset_options(dataset, seq_len=seq_len, stride=stride, step=step,
                                   get_label=get_label)
            if frame_rate is not None and frame_rate != dataset.frame_rate:
                raise ValueError(f"frame_rate={frame_rate!r} given with a VideoDataset whose "
                                 f"frame_rate is {dataset.frame_rate}; set frame_rate on the "
                                 f"VideoDataset instead")
            seq_len, stride, step = dataset.seq_len, dataset.stride, dataset.step
        self.config = PrefetchConfig(
            seq_len=seq_len, batch_size=batch_size, device=str(device), backend=backend,
            shuffle=shuffle, sampling=sampling, seed=seed, epochs=epochs, lookahead=lookahead,
            processing=processing, queue_depth=queue_depth, decode_threads=decode_threads,
            ffmpeg_threads=ffmpeg_threads,
            drop_last=drop_last, rank=rank, world_size=world_size, on_error=on_error,
            timeout=timeout, replacement=replacement, chunk_size=chunk_size,
            shuffle_buffer=shuffle_buffer, stride=stride, step=step, memory_budget=memory_budget,
            max_file_failures=max_file_failures, frame_rate=frame_rate,
            stream_index=stream_index, autorotate=autorotate, progress=progress,
            index_timeout=index_timeout)
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
            files = [str(p) for p in find_videos(files_or_dataset)]  # type: ignore[arg-type]
            dataset = VideoDataset(files, cfg.seq_len, stride=cfg.stride, step=cfg.step,
                                   get_label=get_label, frame_rate=cfg.frame_rate,
                                   stream_index=cfg.stream_index, autorotate=cfg.autorotate,
                                   on_error=cfg.on_error, progress=cfg.progress,
                                   index_timeout=cfg.index_timeout)
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
        self._queue: janus.Queue[service.Item] | None = None
        self._stop = threading.Event()
        self._counters = service.Counters()
        self._thread: threading.Thread | None = None
        self._pool_holder: list[DecodePool] = []
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._state = "new"
        self._exhausted = False  # every batch delivered (then closed): next() says StopIteration
        self._resume_at: tuple[int, int] | None = None
        self._failures: dict[str, int] = {}  # per file, as of the last batch delivered
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
        plan = service.ServicePlan(
            config=self.config, dataset=self.dataset, epochs=self._epochs,
            processing=self._processing, positions=self._positions, device=self.device,
            backend=self.backend_name, decode_threads=self.decode_threads,
            ffmpeg_threads=self._ffmpeg_threads, lookahead=self.lookahead,
            transform=self._transform, queue=self._queue, stop=self._stop,
            counters=self._counters, pool_holder=self._pool_holder,
            failures=dict(self._failures))
        self._thread = threading.Thread(target=service.service_main, args=(plan,), daemon=True,
                                        name="tvl-async-service")
        self._counters.started = time.perf_counter()
        if self._resume_at is None:  # the service reads ahead: remember where it began
            self._resume_at = (self._epochs.epoch, self._epochs.position)
        self._finalizer = weakref.finalize(self, service.shutdown, self._stop, self._thread,
                                           self._queue, self._pool_holder)
        self._state = "running"
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the service thread, service.drain the queue, join (bounded); safe to call twice and
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
        self._ensure_started(iterating=True)
        return self

    def __next__(self) -> Batch:
        if self._exhausted:
            raise StopIteration
        self._ensure_started()
        assert self._queue is not None
        t0 = time.perf_counter()
        waited_slices = 0.0
        while True:
            try:
                item = self._queue.sync_q.get(timeout=service.POLL_SECONDS)
                break
            except std_queue.Empty:
                waited_slices = time.perf_counter() - t0
                self._check_stall(waited_slices)
        return self._deliver(item, time.perf_counter() - t0)

    def __aiter__(self) -> AsyncIterator[Batch]:
        self._ensure_started(iterating=True)
        return self

    async def __anext__(self) -> Batch:
        if self._exhausted:
            raise StopAsyncIteration
        self._ensure_started()
        assert self._queue is not None
        t0 = time.perf_counter()
        while True:
            try:
                item = await asyncio.wait_for(self._queue.async_q.get(), service.POLL_SECONDS * 4)
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

    def _ensure_started(self, iterating: bool = False) -> None:
        if self._state == "new":
            self.start()
        elif self._exhausted and iterating:  # a second `for` loop would silently get nothing
            raise PrefetcherClosedError(
                f"this Prefetcher has delivered all its batches (epochs={self.config.epochs}); "
                f"create a new one to iterate again, or pass epochs=N / epochs=None")
        elif self._state == "closed" and not self._exhausted:
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
            with self._counters.lock:
                if self._counters.transforming:
                    busy = f"{self._counters.transforming}; decoders: {busy}"
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
            service.drain(self._queue)

    def _deliver(self, item: service.Item, waited: float) -> Batch:
        self._wait += waited
        if self._batches == 0:
            self._wait_first = waited
        if isinstance(item, service.End):
            self._exhausted = True
            self.close()
            raise StopIteration
        if isinstance(item, service.Failure):
            self.close()
            raise item.error
        from tvl_async._devices import hand_over

        hand_over(item.outputs.values(), item.event)
        self._batches += 1
        self._samples += item.batch_size
        self._resume_at = item.resume_at
        self._failures = item.resume_failures
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
            decode_threads=self.decode_threads,
            unindexed_files=[p for p, _ in self.dataset.unindexed_files])

    def state_dict(self) -> dict[str, Any]:
        """Where to resume: just after the last batch handed to the consumer (a plain,
        picklable dict: the sampler's cursor and seed, and with ``on_error="skip"`` the failures
        per file so far, so that files given up stay given up)."""
        at = self._resume_at
        sampler = self._epochs.state_dict() if at is None else self._epochs.state_dict(at=at)
        # not started: the cursor is exact (no service reads ahead of it)
        return {"sampler": sampler, "batches_delivered": self._batches if at else 0,
                "file_failures": dict(self._failures)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at the exact next sample of ``state`` (before iterating)."""
        if self._state != "new":
            raise RuntimeError("load_state_dict must be called before the Prefetcher starts")
        if "sampler" not in state:
            raise ValueError("not a Prefetcher state: missing 'sampler'")
        failures = state.get("file_failures", {})
        if not isinstance(failures, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) for k, v in failures.items()):
            raise ValueError(f"not a Prefetcher state: file_failures must map paths to counts, "
                             f"got {failures!r}")
        self._epochs.load_state_dict(state["sampler"])
        self._failures = dict(failures)
        with self._counters.lock:
            self._counters.dropped_files = sorted(
                service.dropped_files(self._failures, self.config.max_file_failures))

    def set_epoch(self, epoch: int) -> None:
        """Run ``epochs`` epochs starting with ``epoch`` (before iterating): with ``epochs=1``,
        exactly that epoch (the ``DistributedSampler.set_epoch`` idiom)."""
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


def _check_dataset_options(dataset: VideoDataset, *, seq_len: int, stride: int, step: int,
                           get_label: Callable[[str], Any] | None) -> None:
    """A :class:`VideoDataset` brings its own clip options: refuse different ones, which would
    otherwise be ignored without a word."""
    given = {"seq_len": (seq_len, 1, dataset.seq_len), "stride": (stride, 1, dataset.stride),
             "step": (step, 1, dataset.step)}
    for name, (value, default, own) in given.items():
        if value != default and value != own:
            raise ValueError(f"{name}={value!r} given with a VideoDataset whose {name} is {own}; "
                             f"set {name} on the VideoDataset instead")
    if get_label is not None:
        raise ValueError("get_label given with a VideoDataset: pass it to "
                         "VideoDataset(files, seq_len, get_label=...) instead")

"""Decoding: run the planner's decode jobs on backends and finish each sample as it completes.

A :class:`DecodePool` runs :class:`~tvl_async._planning.DecodeJob` objects on worker threads
(``tvl-async-decode-K``), each owning one backend that it creates, uses and closes itself
(``n_workers=0`` runs jobs inline in the owner's thread: that is how the GPU backend runs inside
the service thread). :func:`run_decode_job` decodes a job's frames once and splits them per
sample.

Processing runs in one place: here, as the last step of decoding a sample (:func:`_finish`),
through the one ``process`` function the pool is given. It runs in the first thread that may
use the output device: a decode worker when the output is on the CPU (so processing is spread
over the decode threads, in parallel with decoding), the owner's thread (the service thread,
which owns the CUDA context and stream) when the output is on a GPU, because decode workers
never touch CUDA. Either way the reorder buffer behind the pool only ever holds finished
outputs, never full-size frames.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tvl_async._backends import create_backend
from tvl_async._backends.base import Backend
from tvl_async._errors import short_list
from tvl_async._planning import DecodeJob, SampleRequest, SampleResult

ProcessFn = Callable[[SampleRequest, torch.Tensor], dict[str, torch.Tensor]]

#: Backends without ``on_frame`` (see :class:`~tvl_async._backends.pyav.PyAVBackend`) decode a
#: job in segments of whole GOPs holding at least this many wanted frames, so that a worker
#: holds about one segment of full-size frames at a time, not a whole job's.
SEGMENT_FRAMES = 8


def default_decode_threads(backend: str) -> int:
    """CPU decode threads by default: one per core, at most 8 (none for NVDEC)."""
    if backend == "nvdec":
        return 0
    return max(1, min(os.cpu_count() or 1, 8))


def default_ffmpeg_threads(decode_threads: int) -> int:
    """FFmpeg threads per decode thread: the cores left over by the decode threads."""
    return max(1, (os.cpu_count() or 1) // max(decode_threads, 1))


@dataclass(frozen=True)
class BackendSpec:
    """What each decode thread creates with ``create_backend(name, device, **options)``."""

    name: str
    device: str | torch.device
    options: dict[str, Any] = field(default_factory=dict)

    def create(self) -> Backend:
        """A new backend; call in the thread that will use it."""
        return create_backend(self.name, self.device, **self.options)


def run_decode_job(
    backend: Backend,
    job: DecodeJob,
    *,
    size: tuple[int, int] | None = None,
    process: ProcessFn | None = None,
) -> list[SampleResult]:
    """Decode a job's frames once, then split them per sample (and process them); blocks.

    Each sample is finished (stacked and processed) as soon as its last frame is decoded, and
    full-size frames are dropped as soon as no unfinished sample needs them: frame by frame with
    a backend that hands frames over as it decodes them (``streams_frames``), else per segment
    of whole GOPs (:data:`SEGMENT_FRAMES`; no GOP is decoded twice). If decoding fails, each
    sample not finished yet is retried alone so that only the samples that really fail carry
    an error. Runs in whichever thread owns ``backend``.
    """
    wanted = sorted({f for r in job.requests for f in r.decode_frames})
    collector = _Collector(job.requests, process)
    streaming = bool(getattr(backend, "streams_frames", False))
    n_decoded = 0
    for segment in [wanted] if streaming else _segments(job, wanted):
        try:
            if streaming:
                result = backend.decode(
                    job.index,
                    segment,
                    size=size,  # type: ignore[call-arg]
                    on_frame=collector.add,
                )
            else:
                result = backend.decode(job.index, segment, size=size)
                for f, frame in zip(segment, result.frames, strict=True):
                    collector.add(f, frame)
        except Exception:
            if len(job.requests) == 1:
                return [_decode_one(backend, job.requests[0], size, process)]
            _share(collector.done, n_decoded, len(job.requests))
            rest = [r for r in job.requests if r.seq not in collector.finished]
            return collector.done + [_decode_one(backend, r, size, process) for r in rest]
        n_decoded += result.n_decoded
    _share(collector.done, n_decoded, len(job.requests))
    return collector.done


class _Collector:
    """Gathers a job's decoded frames; finishes each sample as soon as it has all its frames and
    drops the frames that no unfinished sample needs."""

    def __init__(self, requests: list[SampleRequest], process: ProcessFn | None) -> None:
        self.process = process
        self.users: dict[int, list[SampleRequest]] = {}
        self.refs: dict[int, int] = {}
        self.missing: dict[int, int] = {}
        for r in requests:
            mine = set(r.decode_frames)
            self.missing[r.seq] = len(mine)
            for f in mine:
                self.users.setdefault(f, []).append(r)
                self.refs[f] = self.refs.get(f, 0) + 1
        self.frames: dict[int, torch.Tensor] = {}
        self.arrived: set[int] = set()
        self.done: list[SampleResult] = []
        self.finished: set[int] = set()

    def add(self, i: int, frame: torch.Tensor) -> None:
        if i in self.arrived or i not in self.users:
            return
        self.arrived.add(i)
        self.frames[i] = frame
        for r in self.users[i]:
            self.missing[r.seq] -= 1
            if self.missing[r.seq]:
                continue
            frames = r.decode_frames
            if len(frames) == 1 and self.process is not None:  # processed here: skip a copy
                clip = self.frames[frames[0]].unsqueeze(0)
            else:
                clip = torch.stack([self.frames[f] for f in frames])
            self.done.append(_finish(r, clip, 0.0, self.process))
            self.finished.add(r.seq)
            for f in set(r.decode_frames):
                self.refs[f] -= 1
                if not self.refs[f]:
                    del self.frames[f]


def _segments(job: DecodeJob, wanted: list[int]) -> list[list[int]]:
    """Split sorted frame indices into runs of whole GOPs with >= SEGMENT_FRAMES frames each."""
    if len(wanted) <= SEGMENT_FRAMES:
        return [wanted]
    keys = job.index.seek_key[wanted].tolist()
    segments: list[list[int]] = [[]]
    for j, f in enumerate(wanted):
        if len(segments[-1]) >= SEGMENT_FRAMES and keys[j] != keys[j - 1]:
            segments.append([])
        segments[-1].append(f)
    return segments


def _share(results: list[SampleResult], n_decoded: int, n_requests: int) -> None:
    """Give each finished sample its share of the frames the job decoded."""
    for r in results:
        r.n_decoded = n_decoded / max(n_requests, 1)


def _decode_one(
    backend: Backend, r: SampleRequest, size: tuple[int, int] | None, process: ProcessFn | None
) -> SampleResult:
    try:
        result = backend.decode(r.index, r.decode_frames, size=size)
    except Exception as e:
        return SampleResult(r, error=e)
    return _finish(r, torch.stack(result.frames), result.n_decoded, process)


def _finish(
    r: SampleRequest, clip: torch.Tensor, n_decoded: float, process: ProcessFn | None
) -> SampleResult:
    """The one place a sample is processed (``process`` None: its frames wait for the owner)."""
    if process is None:
        return SampleResult(r, frames=clip, n_decoded=n_decoded)
    try:
        return SampleResult(r, outputs=process(r, clip), n_decoded=n_decoded)
    except Exception as e:
        return SampleResult(r, error=e, n_decoded=n_decoded)


class DecodePool:
    """Worker threads that run decode jobs, each with a backend it creates and closes itself.

    Args:
        backend: what each worker creates (in its own thread).
        n_workers: threads; 0 runs every job inline in the owner's thread (with one backend
            made on first use in that thread).
        process: per-sample processing (see the module docstring for where it runs).
        process_in_workers: True runs ``process`` in the workers (outputs on the CPU); False in
            :meth:`get`, in the owner's thread (outputs on a GPU).
        size: optional decode-time resize ``(width, height)``.
        name: thread name prefix.

    ``submit`` and ``get`` are called by one thread, the owner (the service thread); ``close``
    stops the workers (bounded join) and may be called from any thread.
    """

    def __init__(
        self,
        backend: BackendSpec,
        n_workers: int,
        *,
        process: ProcessFn,
        process_in_workers: bool,
        size: tuple[int, int] | None = None,
        name: str = "tvl-async-decode",
    ) -> None:
        self._backend = backend
        self._size = size
        self._process = process
        self._worker_process = process if process_in_workers or not n_workers else None
        self._jobs: queue.Queue[DecodeJob | None] = queue.Queue()
        self._results: queue.Queue[list[SampleResult] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._inline_backend: Backend | None = None
        self.frames_decoded = 0.0
        self.busy_seconds = 0.0
        self._current: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=_worker_main, name=f"{name}-{k}", daemon=True, args=(self,))
            for k in range(n_workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def n_workers(self) -> int:
        """Number of worker threads (0: inline)."""
        return len(self._threads)

    def submit(self, job: DecodeJob) -> None:
        """Queue a job (inline mode: run it now, in this thread; blocks while it decodes)."""
        if self._threads:
            self._jobs.put(job)
            return
        if self._inline_backend is None:
            self._inline_backend = self._backend.create()
        self._results.put(self._run(self._inline_backend, job, "inline"))

    def get(self, timeout: float) -> list[SampleResult] | None:
        """The next finished job's results, processed; None after ``timeout`` seconds.

        Re-raises a worker's crash (an error outside decoding, e.g. creating its backend).
        """
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        if self._worker_process is None:  # finished here, in the owner's thread
            item = [self._finish_here(r) for r in item]
        return item

    def _finish_here(self, r: SampleResult) -> SampleResult:
        if r.frames is None or r.error is not None:
            return r
        done = _finish(r.request, r.frames, r.n_decoded, self._process)
        done.job_decoded = r.job_decoded
        return done

    def _run(self, backend: Backend, job: DecodeJob, worker: str) -> list[SampleResult]:
        """Run one job on ``backend``, keeping the counters; called by the owning thread."""
        frames = sorted({f for r in job.requests for f in r.decode_frames})
        with self._lock:
            self._current[worker] = f"{job.index.path} frames {short_list(frames)}"
        t0 = time.perf_counter()
        try:
            results = run_decode_job(backend, job, size=self._size, process=self._worker_process)
        except BaseException as e:  # not a decode error (those are per sample): say where
            where = "the service thread" if worker == "inline" else f"decode thread {worker}"
            e.add_note(f"tvl_async: raised in {where} while decoding {self._current.get(worker)}")
            raise
        finally:
            with self._lock:
                self._current.pop(worker, None)
                self.busy_seconds += time.perf_counter() - t0
        total = sum(r.n_decoded for r in results)
        if results:
            min(results, key=lambda r: r.request.seq).job_decoded = total
        with self._lock:
            self.frames_decoded += total
        return results

    def activity(self) -> str:
        """What the workers are decoding right now (for timeout messages); any thread."""
        with self._lock:
            return "; ".join(self._current.values()) or "nothing (waiting for work)"

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop the workers and close their backends; returns names of threads still alive."""
        self._stop.set()
        for _ in self._threads:
            self._jobs.put(None)
        stuck = []
        for t in self._threads:
            t.join(timeout)
            if t.is_alive():
                stuck.append(t.name)
        if self._inline_backend is not None:
            self._inline_backend.close()
            self._inline_backend = None
        return stuck


def _worker_main(pool: DecodePool) -> None:
    """Body of a decode worker thread: make a backend, run jobs until told to stop."""
    name = threading.current_thread().name
    try:
        backend = pool._backend.create()
    except BaseException as e:
        pool._results.put(e)
        return
    try:
        while not pool._stop.is_set():
            job = pool._jobs.get()
            if job is None or pool._stop.is_set():  # queued jobs are dropped on close
                break
            try:
                pool._results.put(pool._run(backend, job, name))
            except BaseException as e:  # a bug, not a decode error: the service re-raises it
                pool._results.put(e)
    finally:
        backend.close()

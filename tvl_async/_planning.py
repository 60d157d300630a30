"""Planning: turn the next ``lookahead`` samples into decode jobs and give results back in order.

The planner keeps a window of up to ``lookahead`` sample requests in sampler order. It sends one
:class:`DecodeJob` per file and GOP run for all the window's not-yet-scheduled samples in it (the
backend then decodes each GOP once for all of them), earliest sample first, keeps its decode
threads busy as long as the window has work, and holds finished samples in a reorder buffer
until their turn. Output order is exactly the sampler's
order, whatever ``lookahead`` is; only memory (``lookahead`` finished samples at most) is traded
for speed.

Decode jobs run on a :class:`DecodePool`: daemon worker threads, each owning one backend that it
creates, uses and closes itself (``n_workers=0`` runs jobs inline in the calling thread: that is
how the GPU backend runs inside the service thread). Workers never touch CUDA unless the backend
they were given does. The planner itself is used by the service thread only.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tvl_async._backends.base import Backend
from tvl_async._index import VideoIndex
from tvl_async._processing import AugmentParams

log = logging.getLogger(__name__)


@dataclass
class SampleRequest:
    """One sample to produce.

    Attributes:
        seq: running number in the service's output order (0, 1, 2, …).
        epoch: epoch of the sample; position: its position in the epoch (this rank).
        sample_id: dataset index of the clip.
        file_index: index of the file in the dataset's file list; index: that file's index.
        frames: the clip's frame indices (``seq_len`` of them).
        positions: clip positions that some output uses (only these are decoded).
        label: the sample's label (or None).
        augment: random draws per output name.
        error: an exception raised while preparing the request (``get_label``, random draws);
            the sample is not decoded and comes out, in its place, as a failed result.
    """

    seq: int
    epoch: int
    position: int
    sample_id: int
    file_index: int
    index: VideoIndex
    frames: list[int]
    positions: list[int]
    label: Any = None
    augment: dict[str, AugmentParams] = field(default_factory=dict)
    error: BaseException | None = None

    @property
    def decode_frames(self) -> list[int]:
        """Frame indices to decode, in clip-position order."""
        return [self.frames[p] for p in self.positions]

    def where(self) -> str:
        """``file frames [..]`` for error messages."""
        return f"{self.index.path} frames {self.frames}"


@dataclass
class SampleResult:
    """A finished (or failed) sample.

    Attributes:
        request: what was asked.
        frames: ``[P, 3, H, W]`` uint8 decoded frames (``positions`` of the clip), until processed.
        outputs: processed tensors by output name, once processed.
        error: the exception when decoding or processing failed.
        n_decoded: this sample's share of the frames its job decoded.
    """

    request: SampleRequest
    frames: torch.Tensor | None = None
    outputs: dict[str, torch.Tensor] | None = None
    error: BaseException | None = None
    n_decoded: float = 0.0

    def nbytes(self) -> int:
        """Bytes of memory this result's tensors keep alive (each storage counted once)."""
        tensors = [] if self.frames is None else [self.frames]
        tensors += list((self.outputs or {}).values())
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return sum(storages.values())


@dataclass
class DecodeJob:
    """The window's samples of one file whose frames lie in one run of GOPs, decoded together."""

    index: VideoIndex
    requests: list[SampleRequest]


ProcessFn = Callable[[SampleRequest, torch.Tensor], dict[str, torch.Tensor]]


#: Backends without ``on_frame`` (see :class:`~tvl_async._backends.pyav.PyAVBackend`) decode a
#: job in segments of whole GOPs holding at least this many wanted frames, so that a worker
#: holds about one segment of full-size frames at a time, not a whole job's.
SEGMENT_FRAMES = 8

#: Jobs go out for samples at most ``lookahead // LEAD_FRACTION`` ahead of the next one due.
LEAD_FRACTION = 8


def run_decode_job(backend: Backend, job: DecodeJob, *, size: tuple[int, int] | None = None,
                   process: ProcessFn | None = None) -> list[SampleResult]:
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
    for segment in [wanted] if streaming else _segments(job.index, wanted):
        try:
            if streaming:
                result = backend.decode(job.index, segment, size=size,  # type: ignore[call-arg]
                                        on_frame=collector.add)
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


def _segments(index: VideoIndex, wanted: list[int]) -> list[list[int]]:
    """Split sorted frame indices into runs of whole GOPs with >= SEGMENT_FRAMES frames each."""
    if len(wanted) <= SEGMENT_FRAMES:
        return [wanted]
    keys = index.seek_key[wanted].tolist()
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


def _decode_one(backend: Backend, r: SampleRequest, size: tuple[int, int] | None,
                process: ProcessFn | None) -> SampleResult:
    try:
        result = backend.decode(r.index, r.decode_frames, size=size)
    except Exception as e:
        return SampleResult(r, error=e)
    return _finish(r, torch.stack(result.frames), result.n_decoded, process)


def _finish(r: SampleRequest, clip: torch.Tensor, n_decoded: float,
            process: ProcessFn | None) -> SampleResult:
    if process is None:
        return SampleResult(r, frames=clip, n_decoded=n_decoded)
    try:
        return SampleResult(r, outputs=process(r, clip), n_decoded=n_decoded)
    except Exception as e:
        return SampleResult(r, error=e, n_decoded=n_decoded)


class DecodePool:
    """Worker threads that run decode jobs, each with a backend it creates and closes itself.

    Args:
        backend_factory: called once in each worker thread to make its backend.
        n_workers: threads; 0 runs every job inline in the caller's thread (with one backend
            made on first use in that thread).
        size: optional decode-time resize ``(width, height)``.
        process: optional per-sample processing run right after decoding, in the worker.
        name: thread name prefix.

    ``submit`` and ``get`` are called by one thread (the service thread); ``close`` stops the
    workers (bounded join) and may be called from any thread.
    """

    def __init__(self, backend_factory: Callable[[], Backend], n_workers: int, *,
                 size: tuple[int, int] | None = None, process: ProcessFn | None = None,
                 name: str = "tvl-async-decode") -> None:
        self._factory = backend_factory
        self._size = size
        self._process = process
        self._jobs: queue.Queue[DecodeJob | None] = queue.Queue()
        self._results: queue.Queue[list[SampleResult] | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._inline_backend: Backend | None = None
        self.frames_decoded = 0.0
        self.busy_seconds = 0.0
        self.current: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=_worker_main, name=f"{name}-{k}", daemon=True,
                                          args=(self, k)) for k in range(n_workers)]
        for t in self._threads:
            t.start()

    @property
    def n_workers(self) -> int:
        """Number of worker threads (0: inline)."""
        return len(self._threads)

    def submit(self, job: DecodeJob) -> None:
        """Queue a job (inline mode: run it now, in this thread)."""
        if self._threads:
            self._jobs.put(job)
            return
        if self._inline_backend is None:
            self._inline_backend = self._factory()
        self._results.put(self.run(self._inline_backend, job, "inline"))

    def get(self, timeout: float) -> list[SampleResult] | None:
        """The next finished job's results, or None after ``timeout`` seconds; re-raises a
        worker's crash (an error outside decoding, e.g. creating its backend)."""
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def run(self, backend: Backend, job: DecodeJob, worker: str) -> list[SampleResult]:
        """Run one job on ``backend``, keeping the counters; called by the owning thread."""
        import time

        with self._lock:
            self.current[worker] = f"{job.index.path} frames {_short_frames(job)}"
        t0 = time.perf_counter()
        try:
            results = run_decode_job(backend, job, size=self._size, process=self._process)
        except BaseException as e:  # not a decode error (those are per sample): say where
            where = "the service thread" if worker == "inline" else f"decode thread {worker}"
            e.add_note(f"tvl_async: raised in {where} while decoding {self.current.get(worker)}")
            raise
        finally:
            with self._lock:
                self.current.pop(worker, None)
                self.busy_seconds += time.perf_counter() - t0
        with self._lock:
            self.frames_decoded += sum(r.n_decoded for r in results)
        return results

    def activity(self) -> str:
        """What the workers are decoding right now (for timeout messages)."""
        with self._lock:
            return "; ".join(self.current.values()) or "nothing (waiting for work)"

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


def _short_frames(job: DecodeJob) -> str:
    frames = sorted({f for r in job.requests for f in r.decode_frames})
    return str(frames if len(frames) <= 8 else [*frames[:8], "…"])


def _worker_main(pool: DecodePool, k: int) -> None:
    """Body of a decode worker thread: make a backend, run jobs until told to stop."""
    name = threading.current_thread().name
    try:
        backend = pool._factory()
    except BaseException as e:
        pool._results.put(e)
        return
    try:
        while not pool._stop.is_set():
            job = pool._jobs.get()
            if job is None or pool._stop.is_set():  # queued jobs are dropped on close
                break
            try:
                pool._results.put(pool.run(backend, job, name))
            except BaseException as e:  # a bug, not a decode error: the service re-raises it
                pool._results.put(e)
    finally:
        backend.close()


class LookaheadPlanner:
    """Reorder buffer over a :class:`DecodePool`; used by the service thread only.

    Args:
        requests: sample requests in sampler order (``seq`` 0, 1, 2, …).
        pool: where jobs run.
        lookahead: samples held at most (requested, decoding or finished, not yet returned).
        max_jobs: jobs in flight at most (default: twice the workers, at least 1).
    """

    def __init__(self, requests: Iterator[SampleRequest], pool: DecodePool, lookahead: int,
                 max_jobs: int | None = None) -> None:
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self._requests = requests
        self._pool = pool
        self.lookahead = lookahead
        self._max_jobs = max_jobs or max(1, 2 * pool.n_workers)
        # Jobs are sent for samples at most this far ahead of the next one to return (the
        # queue of ready batches adds its own slack). Every job takes all the samples of its
        # GOPs in the window ahead of it, so the later a job goes out the more samples share
        # its decoding: with a consumer slower than decoding, lookahead/2 decoded 10.5 frames
        # per frame delivered, lookahead/8 7.8 and lookahead/32 7.4, the consumer waiting
        # <= 0.15 s after the first window in each (tools/planner_lead.py, docs/benchmarks.md);
        # /8 keeps some slack for uneven decoding times.
        self._lead = max(1, lookahead // LEAD_FRACTION)
        self._window: deque[SampleRequest] = deque()  # not yet scheduled, in order (*)
        # not yet scheduled, per file: (first GOP, last GOP, request), in order
        self._by_file: dict[str, list[tuple[int, int, SampleRequest]]] = {}
        self._taken: set[int] = set()  # (*) seqs already sent with an earlier sample's job
        self._next_seq = 0
        self._in_window = 0  # requested and not yet returned
        self._jobs_in_flight = 0
        self._ready: dict[int, SampleResult] = {}
        self._ready_bytes = 0
        self.peak_bytes = 0
        self.peak_samples = 0
        self._exhausted = False

    def next_result(self, should_stop: Callable[[], bool],
                    poll: float = 0.05) -> SampleResult | None:
        """The next sample in sampler order (blocks while it decodes); None when all are done
        or ``should_stop()`` turned true."""
        while not should_stop():
            self._fill()
            # Collect every finished job first (without waiting), so that freed job slots are
            # refilled at once: the decoders keep working ahead while the consumer is served
            # from the reorder buffer, instead of idling until the buffer runs dry.
            while (results := self._pool.get(timeout=0)) is not None:
                self._collect(results)
            self._schedule()
            found = self._ready.pop(self._next_seq, None)
            if found is not None:
                self._next_seq += 1
                self._in_window -= 1
                self._ready_bytes -= found.nbytes()
                return found
            if self._in_window == 0 and self._exhausted:
                return None
            results = self._pool.get(timeout=poll)
            if results is not None:
                self._collect(results)
        return None

    def pump(self, timeout: float) -> bool:
        """Collect finished jobs and send new ones without returning a sample; waits up to
        ``timeout`` seconds for a job to finish. The service calls this while its output queue
        is full. Returns whether jobs are in flight (False: nothing to do until a sample is
        taken)."""
        self._fill()
        while (results := self._pool.get(timeout=0)) is not None:
            self._collect(results)
        self._schedule()
        if self._jobs_in_flight == 0:
            return False
        results = self._pool.get(timeout=timeout)
        if results is not None:
            self._collect(results)
            self._schedule()
        return True

    def _collect(self, results: list[SampleResult]) -> None:
        self._jobs_in_flight -= 1
        for r in results:
            self._ready[r.request.seq] = r
            self._ready_bytes += r.nbytes()
        self.peak_bytes = max(self.peak_bytes, self._ready_bytes)
        self.peak_samples = max(self.peak_samples, len(self._ready))

    def _fill(self) -> None:
        while not self._exhausted and self._in_window < self.lookahead:
            try:
                r = next(self._requests)
            except StopIteration:
                self._exhausted = True
                break
            self._in_window += 1
            if r.error is not None:  # nothing to decode: fails in its place in the order
                self._ready[r.seq] = SampleResult(r, error=r.error)
                continue
            self._window.append(r)
            keys = r.index.seek_key
            frames = r.decode_frames
            self._by_file.setdefault(r.index.path, []).append(
                (int(keys[min(frames)]), int(keys[max(frames)]), r))

    def _schedule(self) -> None:
        """While job slots are free: send the earliest unscheduled sample as a job, with every
        unscheduled sample of the window whose frames share a GOP with the job's (transitively:
        the job covers one run of GOPs of one file)."""
        window, taken = self._window, self._taken
        while self._jobs_in_flight < self._max_jobs:
            while window and window[0].seq in taken:  # already sent with an earlier job
                taken.discard(window.popleft().seq)
            if not window or window[0].seq - self._next_seq >= self._lead:
                return
            first = window.popleft()
            path = first.index.path
            pending = self._by_file[path]
            lo, hi, _ = pending[0]  # pending[0] is `first`: the earliest of its file
            mine = [first]
            others = pending[1:]
            grew = True
            while grew and others:  # one pass, two when a clip reaches into another GOP
                grew = False
                keep = []
                for item in others:
                    a, b, r = item
                    if a <= hi and b >= lo:
                        mine.append(r)
                        taken.add(r.seq)
                        grew = grew or a < lo or b > hi
                        lo, hi = min(lo, a), max(hi, b)
                    else:
                        keep.append(item)
                others = keep
            if others:
                self._by_file[path] = others
            else:
                del self._by_file[path]
            self._jobs_in_flight += 1
            self._pool.submit(DecodeJob(first.index, mine))

"""Planning: decide what to decode and when, and give finished samples back in sampler order.

The :class:`LookaheadPlanner` keeps a window of up to ``lookahead`` sample requests in sampler
order. It makes one :class:`DecodeJob` per file and GOP run for all the window's not-yet-scheduled
samples in it (the backend then decodes each GOP once for all of them), earliest sample first,
and holds finished samples in a reorder buffer until their turn. Output order is exactly the
sampler's order, whatever ``lookahead`` is; only memory (``lookahead`` finished samples at most)
is traded for speed. The memory arithmetic behind the default ``lookahead`` is in
``tvl_async._budget``.

The planner runs nothing: its owner (the service thread) asks it for jobs
(:meth:`LookaheadPlanner.next_jobs`), runs them wherever it likes (``tvl_async._decoding``),
hands the results back (:meth:`~LookaheadPlanner.collect`) and takes finished samples in order
(:meth:`~LookaheadPlanner.pop_next`). It knows neither backends nor processing: a request's
``augment`` draws travel through it as opaque data. Used by one thread; never blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tvl_async._checks import env_number
from tvl_async._index import VideoIndex


def _lead_fraction() -> int:
    """``TVL_ASYNC_LEAD_FRACTION`` (default 8), read once at import: the knob that
    ``tools/planner_lead.py`` turns, one process per value."""
    return env_number("TVL_ASYNC_LEAD_FRACTION", 8, 1)


#: Jobs go out for samples at most ``lookahead // LEAD_FRACTION`` ahead of the next one due.
LEAD_FRACTION = _lead_fraction()


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
        augment: random draws per output name; opaque here (the processing stage reads them).
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
    augment: dict[str, Any] = field(default_factory=dict)
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
        job_decoded: on the job's earliest sample, every frame the job decoded (0 on the
            others): decoding counted where the stream first needed it.
    """

    request: SampleRequest
    frames: torch.Tensor | None = None
    outputs: dict[str, torch.Tensor] | None = None
    error: BaseException | None = None
    n_decoded: float = 0.0
    job_decoded: float = 0.0

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


class LookaheadPlanner:
    """Reorder buffer and job scheduler over a stream of sample requests; one thread only.

    Args:
        requests: sample requests in sampler order (``seq`` consecutive from the first one).
        lookahead: samples held at most (requested, decoding or finished, not yet returned).
        max_jobs: jobs in flight at most, >= 1.
        first_batch: the first this many samples are urgent (the consumer waits for all of them
            before its first batch): no later request is drawn until they are all returned, and
            their jobs decode no further into a GOP than an urgent sample needs; the later
            samples of those GOPs get jobs of their own (see :meth:`_fill`). 0: none.
    """

    def __init__(
        self,
        requests: Iterator[SampleRequest],
        lookahead: int,
        max_jobs: int,
        first_batch: int = 0,
    ) -> None:
        if lookahead < 1:
            raise ValueError(f"Invalid lookahead ({lookahead}). Supported values are >= 1")
        self._requests = requests
        self.lookahead = lookahead
        self._max_jobs = max(1, max_jobs)
        # Jobs are sent for samples at most this far ahead of the next one to return (the
        # queue of ready batches adds its own slack). Every job takes all the samples of its
        # GOPs in the window ahead of it, so the later a job goes out the more samples share
        # its decoding: with a consumer slower than decoding, lookahead/2 decoded 10.5 frames
        # per frame delivered, lookahead/8 7.8 and lookahead/32 7.4, the consumer waiting
        # <= 0.15 s after the first window in each (tools/planner_lead.py, docs/benchmarks.md);
        # /8 keeps some slack for uneven decoding times.
        self._lead = max(1, lookahead // LEAD_FRACTION)
        self._first_batch = max(0, first_batch)
        self._urgent_until = 0  # seqs below this are urgent (set by the first request)
        self._window: deque[SampleRequest] = deque()  # not yet scheduled, in order (*)
        # not yet scheduled, per file: (first GOP, last GOP, request), in order
        self._by_file: dict[str, list[tuple[int, int, SampleRequest]]] = {}
        self._taken: set[int] = set()  # (*) seqs already sent with an earlier sample's job
        self._next_seq: int | None = None  # seq of the next sample to return
        self._in_window = 0  # requested and not yet returned
        self._received = 0  # requests taken so far
        self.jobs_in_flight = 0
        self._ready: dict[int, SampleResult] = {}
        self._ready_bytes = 0
        self.peak_bytes = 0
        self._exhausted = False

    @property
    def held_samples(self) -> int:
        """Finished samples waiting in the reorder buffer now."""
        return len(self._ready)

    @property
    def held_bytes(self) -> int:
        """Bytes the finished samples waiting in the reorder buffer keep alive now."""
        return self._ready_bytes

    @property
    def done(self) -> bool:
        """True once every request was returned by :meth:`pop_next`."""
        return self._exhausted and self._in_window == 0

    def owns(self, results: Sequence[SampleResult]) -> bool:
        """Whether ``results`` (one job's) belong to this planner's requests."""
        first = self._next_seq
        return bool(results) and first is not None and results[0].request.seq >= first

    def next_jobs(self) -> list[DecodeJob]:
        """Take requests into the window and return the jobs to run now (possibly none).

        While job slots are free: the earliest unscheduled sample goes out as a job, with every
        unscheduled sample of the window whose frames share a GOP with the job's (transitively:
        the job covers one run of GOPs of one file).
        """
        self._fill()
        jobs: list[DecodeJob] = []
        window, taken = self._window, self._taken
        while self.jobs_in_flight < self._max_jobs:
            while window and window[0].seq in taken:  # already sent with an earlier job
                taken.discard(window.popleft().seq)
            if not window or window[0].seq - (self._next_seq or 0) >= self._lead:
                break
            jobs.append(self._job_for(window.popleft()))
            self.jobs_in_flight += 1
        return jobs

    def collect(self, results: list[SampleResult]) -> None:
        """Take one finished job's results into the reorder buffer."""
        self.jobs_in_flight -= 1
        for r in results:
            self._ready[r.request.seq] = r
            self._ready_bytes += r.nbytes()
        self.peak_bytes = max(self.peak_bytes, self._ready_bytes)

    def pop_next(self) -> SampleResult | None:
        """The next sample in sampler order if it is finished, else None."""
        self._fill()
        if self._next_seq is None:
            return None
        found = self._ready.pop(self._next_seq, None)
        if found is not None:
            self._next_seq += 1
            self._in_window -= 1
            self._ready_bytes -= found.nbytes()
        return found

    def _fill(self) -> None:
        """Take requests into the window: up to ``lookahead`` of them, or, until the urgent
        first batch has been returned, that batch only. Drawing a whole window first (its
        random crops: ~45 µs a request) and decoding and processing the samples its GOPs share
        with the first batch made the first batch 1.7x slower (27 s against 15 s at a lookahead
        of 40 000, docs/benchmarks.md); those samples get jobs of their own later anyway."""
        urgent = self._first_batch and (
            self._next_seq is None or self._next_seq < self._urgent_until
        )
        while not self._exhausted and self._in_window < self.lookahead:
            if urgent and self._received >= self._first_batch:
                break
            try:
                r = next(self._requests)
            except StopIteration:
                self._exhausted = True
                break
            self._received += 1
            if self._next_seq is None:
                self._next_seq = r.seq
                self._urgent_until = r.seq + self._first_batch
            self._in_window += 1
            if r.error is not None:  # nothing to decode: fails in its place in the order
                self._ready[r.seq] = SampleResult(r, error=r.error)
                continue
            self._window.append(r)
            keys = r.index.seek_key
            frames = r.decode_frames
            self._by_file.setdefault(r.index.path, []).append(
                (int(keys[min(frames)]), int(keys[max(frames)]), r)
            )

    def _job_for(self, first: SampleRequest) -> DecodeJob:
        """The job of ``first`` (the earliest unscheduled sample): every unscheduled sample of
        its file whose GOPs overlap the job's (transitively), or, while ``first`` is urgent,
        the urgent ones among them."""
        path = first.index.path
        pending = self._by_file[path]
        if first.seq < self._urgent_until:
            mine, others = self._urgent_group(pending)
        else:
            mine, others = self._gop_group(pending)
        for r in mine[1:]:
            self._taken.add(r.seq)
        if others:
            self._by_file[path] = others
        else:
            del self._by_file[path]
        return DecodeJob(first.index, mine)

    def _gop_group(
        self, pending: list[tuple[int, int, SampleRequest]]
    ) -> tuple[list[SampleRequest], list[tuple[int, int, SampleRequest]]]:
        """``pending[0]`` and every sample whose GOP run overlaps (transitively); the rest."""
        lo, hi, first = pending[0]
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
                    grew = grew or a < lo or b > hi
                    lo, hi = min(lo, a), max(hi, b)
                else:
                    keep.append(item)
            others = keep
        return mine, others

    def _urgent_group(
        self, pending: list[tuple[int, int, SampleRequest]]
    ) -> tuple[list[SampleRequest], list[tuple[int, int, SampleRequest]]]:
        """``pending[0]`` (urgent) and the urgent samples whose GOP runs overlap its own; the
        rest. (While the first batch is urgent the window holds nothing else.)"""
        lo, hi, first = pending[0]
        mine = [first]
        others = []
        for item in pending[1:]:
            a, b, r = item
            if r.seq < self._urgent_until and a <= hi and b >= lo:
                mine.append(r)
                lo, hi = min(lo, a), max(hi, b)
            else:
                others.append(item)
        return mine, others

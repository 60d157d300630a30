"""Planning: decide what to decode and when, and give finished samples back in sampler order.

The :class:`LookaheadPlanner` keeps a window of up to ``lookahead`` sample requests in sampler
order. It makes one :class:`DecodeJob` per file and GOP run for all the window's not-yet-scheduled
samples in it (the backend then decodes each GOP once for all of them), earliest sample first,
and holds finished samples in a reorder buffer until their turn. Output order is exactly the
sampler's order, whatever ``lookahead`` is; only memory (``lookahead`` finished samples at most)
is traded for speed. The memory arithmetic behind the default ``lookahead`` lives here too.

The planner runs nothing: its owner (the service thread) asks it for jobs
(:meth:`LookaheadPlanner.next_jobs`), runs them wherever it likes (``tvl_async._decoding``),
hands the results back (:meth:`~LookaheadPlanner.collect`) and takes finished samples in order
(:meth:`~LookaheadPlanner.pop_next`). It knows neither backends nor processing: a request's
``augment`` draws travel through it as opaque data. Used by one thread; never blocks.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tvl_async._index import VideoIndex

if TYPE_CHECKING:
    from tvl_async._config import ProcessDesc
    from tvl_async._dataset import VideoDataset

#: Jobs go out for samples at most ``lookahead // LEAD_FRACTION`` ahead of the next one due.
LEAD_FRACTION = 8

#: Default lookahead cap, in samples. The memory budget is the real bound (2 GiB hold ~14000
#: 224x224 RGB images): the planner's gain keeps growing with the window (docs/benchmarks.md)
#: and jobs go out earliest sample first, so the first batch does not wait for the whole window.
MAX_DEFAULT_LOOKAHEAD = 16384


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
    """

    def __init__(self, requests: Iterator[SampleRequest], lookahead: int, max_jobs: int) -> None:
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
        self._window: deque[SampleRequest] = deque()  # not yet scheduled, in order (*)
        # not yet scheduled, per file: (first GOP, last GOP, request), in order
        self._by_file: dict[str, list[tuple[int, int, SampleRequest]]] = {}
        self._taken: set[int] = set()  # (*) seqs already sent with an earlier sample's job
        self._next_seq: int | None = None  # seq of the next sample to return
        self._in_window = 0  # requested and not yet returned
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
        while not self._exhausted and self._in_window < self.lookahead:
            try:
                r = next(self._requests)
            except StopIteration:
                self._exhausted = True
                break
            if self._next_seq is None:
                self._next_seq = r.seq
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
                    self._taken.add(r.seq)
                    grew = grew or a < lo or b > hi
                    lo, hi = min(lo, a), max(hi, b)
                else:
                    keep.append(item)
            others = keep
        if others:
            self._by_file[path] = others
        else:
            del self._by_file[path]
        return DecodeJob(first.index, mine)


# ------------------------------------------------------------------------- memory arithmetic


def _largest_frame(indexes: Sequence[VideoIndex]) -> tuple[int, int]:
    return max(ix.height for ix in indexes), max(ix.width for ix in indexes)


def check_output_sizes(processing: Mapping[str, ProcessDesc], dataset: VideoDataset) -> None:
    """Fail early, naming the file, if an output does not fit some file's frames.

    Raises:
        ValueError: files of different sizes without a fixed output size, or a crop larger
            than some file's frames.
    """
    fixed = all(
        (d.width and d.height) or (d.scale_width and d.scale_height) for d in processing.values()
    )
    if not fixed:
        dataset.check_uniform_size()
    # A crop larger than some file's frames: fail now, naming the file (not later, in the
    # service thread, with a message that names no file).
    counts = dataset.samples_per_file
    sizes = {
        (ix.height, ix.width): ix.path for k, ix in enumerate(dataset.indexes) if counts[k] > 0
    }
    for (h, w), path in sizes.items():
        for name, desc in processing.items():
            try:
                desc.output_size(h, w)
            except ValueError as e:
                raise ValueError(
                    f"processing[{name!r}] does not fit '{path}' ({w}x{h}, width x height): {e}"
                ) from None


def sample_bytes(
    processing: Mapping[str, ProcessDesc],
    seq_len: int,
    indexes: Sequence[VideoIndex],
    bytes_per_pixel: Callable[[ProcessDesc], int] | None = None,
) -> int:
    """Bytes of one finished sample (all outputs) as the reorder buffer holds it, for the
    largest file. ``bytes_per_pixel(desc)``: bytes per output pixel (all channels) as held
    (the processing stage's ``held_bytes_per_pixel``); default: the output's own."""
    h, w = _largest_frame(indexes)
    total = 0
    for desc in processing.values():
        shape = desc.output_shape(seq_len, h, w)
        pixels = math.prod(shape) // desc.channels
        if bytes_per_pixel is None:
            per = desc.channels * torch.empty((), dtype=desc.dtype).element_size()
        else:
            per = bytes_per_pixel(desc)
        total += pixels * per
    return max(total, 1)


def default_lookahead(
    memory_budget: int, held_bytes: int, samples_per_epoch: int, batch_size: int
) -> int:
    """As many samples as ``memory_budget`` bytes hold (``held_bytes`` each: the reorder buffer
    holds finished samples in their compact form, :func:`sample_bytes`), at most
    :data:`MAX_DEFAULT_LOOKAHEAD` and at most one epoch (more would only add latency before
    the first batch)."""
    by_memory = memory_budget // max(held_bytes, 1)
    epoch = max(samples_per_epoch, batch_size)
    return int(max(1, min(by_memory, MAX_DEFAULT_LOOKAHEAD, epoch)))

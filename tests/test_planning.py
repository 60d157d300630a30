"""The planner's jobs: which samples one decode job takes, and the first batch's shorter jobs.

The planner only reads ``index.path`` and ``index.seek_key`` (the GOP of each frame), so a
stand-in index with a keyframe every 60 frames is enough here; exactness of the decoded frames
is checked end to end in test_prefetcher.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tvl_async._planning import LookaheadPlanner, SampleRequest, SampleResult

GOP = 60


def _index(path: str = "a.mp4", n: int = 600) -> Any:
    return SimpleNamespace(path=path, seek_key=np.arange(n) // GOP * GOP)


def _requests(frames: list[tuple[str, int]]) -> list[SampleRequest]:
    indexes: dict[str, Any] = {}
    out = []
    for seq, (path, frame) in enumerate(frames):
        ix = indexes.setdefault(path, _index(path))
        out.append(SampleRequest(seq, 0, seq, seq, 0, ix, [frame], [0]))
    return out


def _drain(frames: list[tuple[str, int]], first_batch: int) -> list[list[int]]:
    """Run the planner to the end, each job finished at once: the jobs, as the seqs each takes
    (the samples come back in the sampler's order, checked here)."""
    planner = LookaheadPlanner(
        iter(_requests(frames)), lookahead=64, max_jobs=1, first_batch=first_batch
    )
    jobs: list[list[int]] = []
    order: list[int] = []
    while not planner.done:
        for job in planner.next_jobs():
            jobs.append([r.seq for r in job.requests])
            planner.collect([SampleResult(r) for r in job.requests])
        while (found := planner.pop_next()) is not None:
            order.append(found.request.seq)
    assert order == list(range(len(frames)))  # the sampler's order, exactly
    return jobs


def test_a_job_takes_every_sample_of_its_gop_in_the_window() -> None:
    frames = [("a.mp4", 30), ("a.mp4", 10), ("a.mp4", 50), ("a.mp4", 70), ("b.mp4", 5)]
    assert _drain(frames, first_batch=0) == [[0, 1, 2], [3], [4]]


def test_first_batch_jobs_take_only_the_first_batch() -> None:
    # seq 0 alone is urgent: its job is sent before any later request is drawn, so frame 10
    # (seq 1), in the same GOP, goes with the later samples of that GOP
    frames = [("a.mp4", 30), ("a.mp4", 10), ("a.mp4", 50), ("a.mp4", 70), ("b.mp4", 5)]
    assert _drain(frames, first_batch=1) == [[0], [1, 2], [3], [4]]


def test_no_request_past_the_first_batch_is_drawn_before_it_is_returned() -> None:
    drawn: list[int] = []

    def requests() -> Any:
        for r in _requests([("a.mp4", f) for f in range(0, 600, 7)]):
            drawn.append(r.seq)
            yield r

    planner = LookaheadPlanner(requests(), lookahead=64, max_jobs=8, first_batch=3)
    jobs = planner.next_jobs()
    assert [[r.seq for r in job.requests] for job in jobs] == [[0, 1, 2]]
    assert drawn == [0, 1, 2]
    planner.collect([SampleResult(r) for r in jobs[0].requests])
    assert [planner.pop_next().request.seq for _ in range(2)] == [0, 1]  # type: ignore[union-attr]
    assert drawn == [0, 1, 2]  # the first batch is not returned yet
    assert planner.pop_next().request.seq == 2  # type: ignore[union-attr]
    assert planner.next_jobs() and drawn == list(range(3 + 64))  # then the whole window


def test_urgent_samples_stop_at_the_last_frame_the_batch_needs() -> None:
    # seqs 0-2 are the first batch, all in GOP 0: one job for the three, whose last frame is
    # 50; frame 55 (seq 3), after the first batch, waits for a job of its own
    frames = [("a.mp4", 30), ("a.mp4", 40), ("a.mp4", 50), ("a.mp4", 55)]
    assert _drain(frames, first_batch=3) == [[0, 1, 2], [3]]


def test_urgent_samples_of_other_gops_are_not_taken_along() -> None:
    # seqs 0 and 1 are urgent; 0 is in GOP 0, 1 in GOP 1: two jobs, each to its own frame
    frames = [("a.mp4", 30), ("a.mp4", 70), ("a.mp4", 10), ("a.mp4", 100)]
    assert _drain(frames, first_batch=2) == [[0], [1], [2], [3]]


def test_after_the_first_batch_jobs_take_whole_gops_again() -> None:
    frames = [("a.mp4", 30), ("b.mp4", 30), ("b.mp4", 50), ("a.mp4", 50)]
    # seq 0 urgent (a: 30 only); seq 1 is past the first batch: b's whole GOP (1, 2)
    assert _drain(frames, first_batch=1) == [[0], [1, 2], [3]]


@pytest.mark.parametrize("first_batch", [0, 1, 3, 100])
def test_every_sample_is_in_exactly_one_job(first_batch: int) -> None:
    rng = np.random.default_rng(0)
    frames = [(f"{'abc'[k % 3]}.mp4", int(f)) for k, f in enumerate(rng.integers(0, 600, 200))]
    jobs = _drain(frames, first_batch)
    seqs = sorted(s for job in jobs for s in job)
    assert seqs == list(range(len(frames)))


def simulate_decoding(n_files: int, frames: int, lookahead: int, seed: int = 0) -> float:
    """Frames decoded per frame delivered when every frame of ``n_files`` files of ``frames``
    frames (a keyframe every :data:`GOP`) is taken once in a uniformly random order, with
    ``lookahead``: a job decodes each of its GOPs from the keyframe to its last wanted frame.
    Jobs finish at once (decoding far faster than needed), so each job takes every sample of
    its GOP in the window ahead of it. ``simulate_decoding(200, 300, L)`` is the reference
    set of docs/benchmarks.md."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_files * frames)
    indexes = [_index(f"v{k}", frames) for k in range(n_files)]
    reqs = (
        SampleRequest(
            s, 0, s, int(i), int(i) // frames, indexes[int(i) // frames], [int(i) % frames], [0]
        )
        for s, i in enumerate(order)
    )
    planner = LookaheadPlanner(reqs, lookahead, max_jobs=4)
    decoded = delivered = 0
    while not planner.done:
        for job in planner.next_jobs():
            ends: dict[int, int] = {}
            for r in job.requests:
                gop, pos = divmod(r.frames[0], GOP)
                ends[gop] = max(ends.get(gop, 0), pos + 1)
            decoded += sum(ends.values())
            planner.collect([SampleResult(r) for r in job.requests])
        while planner.pop_next() is not None:
            delivered += 1
    return decoded / delivered


def test_decoding_per_frame_falls_as_the_window_grows() -> None:
    # 40 files of 5 GOPs: 12 000 samples; random access alone costs (GOP + 1) / 2 = 30.5
    per_window = [simulate_decoding(40, 300, la) for la in (1, 1000, 3000, 12000)]
    assert per_window[0] == pytest.approx(30.5, abs=0.5)
    assert per_window[0] > per_window[1] > per_window[2] > per_window[3]
    assert per_window[3] == 1.0  # the whole epoch in the window: every GOP decoded once

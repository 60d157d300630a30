"""Fuzzing: mutated bytes of valid videos never crash, hang, leak or raise an undocumented type.

Each case writes a mutated copy of a small valid video (bit flips, truncation, inserted garbage,
zeroed or duplicated runs of bytes) and opens and reads it with :class:`VideoLoader` (index,
random access, per-frame seeks, sequential reading) in a worker thread joined with a time
bound. The only acceptable outcomes are frames, or one of the documented exceptions: a
``tvl_async.TvlAsyncError`` or ``FileNotFoundError`` / ``IsADirectoryError`` /
``PermissionError``. ``TVL_ASYNC_FUZZ_EXAMPLES`` raises the number of examples (default 80).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tvl_async import TvlAsyncError, VideoLoader
from tvl_async._prefetcher import Prefetcher
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

EXAMPLES = int(os.environ.get("TVL_ASYNC_FUZZ_EXAMPLES", "80"))
CASE_SECONDS = 20.0  # time bound of one case (a healthy one takes ~10-50 ms)
DOCUMENTED = (TvlAsyncError, FileNotFoundError, IsADirectoryError, PermissionError)

SOURCES = {
    "h264.mp4": VideoSpec(codec="libx264", bframes=2),
    "h264.mkv": VideoSpec(codec="libx264", bframes=2),
    "h264.ts": VideoSpec(codec="libx264", bframes=2),
    "mpeg4.avi": VideoSpec(codec="mpeg4", bframes=2),
    "vp9.webm": VideoSpec(codec="libvpx-vp9"),
    "mjpeg.mov": VideoSpec(codec="mjpeg", pix_fmt="yuvj420p"),
    "raw.h264": VideoSpec(codec="libx264", bframes=2),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz-src")
    out = {}
    for name, spec in SOURCES.items():
        spec.n_frames, spec.width, spec.height, spec.gop, spec.texture = 24, 64, 48, 8, 0.3
        out[name] = write_video(d / name, spec).read_bytes()
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-cases")


# ----------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Mutation:
    kind: str  # flip, truncate, insert, zero, duplicate
    at: float  # where, as a fraction of the current length
    size: int
    payload: bytes = b""

    def apply(self, data: bytearray) -> bytearray:
        if not data:
            return data
        i = min(int(self.at * len(data)), len(data) - 1)
        if self.kind == "flip":
            data[i] ^= 1 << (self.size % 8)
        elif self.kind == "truncate":
            del data[i:]
        elif self.kind == "insert":
            data[i:i] = self.payload
        elif self.kind == "zero":
            data[i : i + self.size] = bytes(len(data[i : i + self.size]))
        elif self.kind == "duplicate":
            data[i:i] = data[i : i + self.size]
        return data


mutations = st.builds(
    Mutation,
    kind=st.sampled_from(["flip", "flip", "truncate", "insert", "zero", "duplicate"]),
    at=st.floats(0.0, 1.0, exclude_max=True),
    size=st.integers(1, 512),
    payload=st.binary(min_size=1, max_size=64),
)


def mutate(data: bytes, muts: list[Mutation]) -> bytes:
    buf = bytearray(data)
    for m in muts:
        buf = m.apply(buf)
    return bytes(buf)


_names = itertools.count()


def write_case(work: Path, source: str, data: bytes) -> Path:
    # A fresh name per case: the index cache is keyed by path, size and mtime, and two
    # same-size rewrites within the file system's timestamp granularity would share a key.
    p = work / f"case{next(_names):05d}.{source.rsplit('.', 1)[1]}"
    p.write_bytes(data)
    return p


# ----------------------------------------------------------------------------- running a case


def read_everything(path: Path) -> int:
    """Open, index and read the file every way VideoLoader offers; returns frames read."""
    got = 0
    with VideoLoader(path) as loader:
        n = loader.n_frames
        assert n > 0
        wanted = sorted({0, n // 2, n - 1})
        frames = list(loader.select_frames(wanted[::-1]))
        got += len(frames)
        assert all(f.shape == (3, loader.height, loader.width) for f in frames)
        got += len(loader.read_frames_at([n - 1, 0], mode="seek"))
        got += len(loader.read_frames_at(wanted, mode="stream"))
        for k, frame in enumerate(loader.read_all_frames()):
            frame_index_of(frame)
            got += 1
            if k >= 30:
                break
    return got


def run_bounded(fn: Any, *args: Any, seconds: float = CASE_SECONDS) -> BaseException | None:
    """Run ``fn`` in a worker thread joined with a time bound; the exception it raised."""
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too short" warnings for damaged files
                fn(*args)
            outcome.append(None)
        except BaseException as e:  # judged by the caller
            outcome.append(e)

    t = threading.Thread(target=body, name="fuzz-case", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"a case ran longer than {seconds:g} s (hang) on {args}")
    return outcome[0]


def judge(err: BaseException | None, path: Path) -> None:
    if err is None or isinstance(err, DOCUMENTED):
        return
    raise AssertionError(
        f"undocumented exception for {path}: {type(err).__module__}.{type(err).__name__}: {err}"
    ) from err


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- tests


@pytest.mark.timeout(300)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(source=st.sampled_from(sorted(SOURCES)), muts=st.lists(mutations, min_size=1, max_size=4))
def test_mutated_files_read_or_raise_documented(
    sources: dict[str, bytes], work: Path, source: str, muts: list[Mutation]
) -> None:
    path = write_case(work, source, mutate(sources[source], muts))
    err = run_bounded(read_everything, path)
    event("frames" if err is None else type(err).__name__)
    judge(err, path)


def test_many_cases_do_not_leak(sources: dict[str, bytes], work: Path) -> None:
    """A fixed set of random mutations, run after a warm-up: RSS and open files stay flat."""
    rng = random.Random(1234)

    def random_case() -> tuple[str, bytes]:
        source = rng.choice(sorted(SOURCES))
        muts = [
            Mutation(
                rng.choice(["flip", "truncate", "insert", "zero", "duplicate"]),
                rng.random(),
                rng.randint(1, 512),
                rng.randbytes(rng.randint(1, 64)),
            )
            for _ in range(rng.randint(1, 4))
        ]
        return source, mutate(sources[source], muts)

    def run(n: int) -> None:
        for _ in range(n):
            source, data = random_case()
            path = write_case(work, source, data)
            judge(run_bounded(read_everything, path), path)
            path.unlink()

    run(40)  # warm-up: allocator pools, FFmpeg's and torch's one-time allocations
    fds, rss = open_fds(), rss_bytes()
    t0 = time.perf_counter()
    run(160)
    grown = rss_bytes() - rss
    assert open_fds() <= fds, "file descriptors leaked"
    assert grown < 40 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 160 cases"
    assert time.perf_counter() - t0 < 120


def judge_prefetch(path: Path, good: Path) -> None:
    try:
        it = Prefetcher(
            [path, good], seq_len=2, batch_size=4, decode_threads=1, on_error="skip", seed=5
        )
    except DOCUMENTED:
        return
    except ValueError as e:  # files of different sizes cannot share a batch: stated up front
        assert "differ in frame size" in str(e) or "no clip of 2 frames" in str(e), e
        return
    with it:
        good_clips = 0
        for batch in it:
            for clip, idx, f in zip(
                batch["default"], batch.frame_indices, batch.files, strict=True
            ):
                if f == str(good.resolve()):
                    assert [frame_index_of(x) for x in clip] == idx.tolist()
                    good_clips += 1
        skipped = it.stats().skipped
    assert good_clips == 23  # every clip of the intact file arrives, exactly
    for s in skipped:
        assert s.file == str(path.resolve())
        assert s.error.split(":")[0] in (
            "DecodeError",
            "VideoOpenError",
            "file dropped after repeated failures",
        ), s.error


@pytest.mark.timeout(300)
@settings(
    max_examples=max(EXAMPLES // 5, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=st.sampled_from(["h264.mp4", "h264.mkv", "mpeg4.avi"]),
    muts=st.lists(mutations, min_size=1, max_size=3),
)
def test_mutated_file_in_prefetcher_skips_only_its_samples(
    sources: dict[str, bytes], work: Path, source: str, muts: list[Mutation]
) -> None:
    """A mutated file next to an intact one, ``on_error="skip"``: the intact file's clips all
    arrive exactly, and whatever is skipped is the mutated file's, with a documented error."""
    good = work / f"good.{source.rsplit('.', 1)[1]}"
    if not good.exists():
        good.write_bytes(sources[source])
    path = write_case(work, source, mutate(sources[source], muts))
    err = run_bounded(judge_prefetch, path, good, seconds=60)
    if err is not None:
        raise err

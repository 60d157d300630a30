"""Time indexing a dataset of many files: first build (per worker count), cached open, and the
extrapolation to 100 000 files.

Usage: python tools/index_timing.py [--files 10000] [--small] [--workers 1 2] [--per-file]
    [--dir DIR]

Writes 4 distinct videos (640x360, 300 frames; ``--small``: 64x48, 30 frames) and hard-links
them into ``--files`` names. For each ``--workers`` count, a fresh cache folder is filled by one
consolidated open (``VideoDataset``, which reads one consolidated entry; with more than
one worker always in processes, their start-up included); then the cached
open is timed (median of 3), with ``VideoDataset`` on top. Each line gives the wall time and
this process's CPU time: with ``workers > 1`` the build runs in worker processes, and the CPU
time is the parent's share (collecting results), which bounds how far the build scales.
``--per-file`` also times the former way, one cache entry per file (``load_index`` per file),
first and cached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from tvl_async import VideoDataset, load_index
from tvl_async.cli.synthetic import VideoSpec, write_video

TARGET = 100_000


def make_files(root: Path, n: int, small: bool) -> list[str]:
    src = []
    for k in range(4):
        p = root / f"src_{'small' if small else 'big'}_{k}.mp4"
        if not p.exists():
            spec = (
                VideoSpec(n_frames=30, width=64, height=48, fps=30, gop=10, start_pts=k)
                if small
                else VideoSpec(
                    n_frames=300, width=640, height=360, fps=30, gop=60, texture=0.5, start_pts=k
                )
            )
            write_video(p, spec)
        src.append(p)
    folder = root / f"set_{'small' if small else 'big'}"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(n):
        p = folder / f"v{i:06d}.mp4"
        if not p.exists():
            os.link(src[i % 4], p)
        files.append(str(p))
    return files


def cpu_timed(fn: Callable[[], object]) -> tuple[float, float]:
    """``(wall, CPU of this process)`` seconds: the CPU time does not count waiting for a core
    that other jobs hold."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def report(label: str, seconds: float, n: int, cpu: float | None = None) -> None:
    per = seconds / n
    extra = "" if cpu is None else f"  (CPU {cpu:.2f} s -> {cpu / n * TARGET:.1f} s)"
    print(
        f"{label:34s} {seconds:8.2f} s  {1e3 * per:7.3f} ms/file  "
        f"-> {TARGET // 1000}k files: {per * TARGET:8.1f} s{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--small", action="store_true", help="64x48 videos of 30 frames")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--per-file", action="store_true", help="also time per-file entries")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="tvl-index-timing-"))
    files = make_files(root, args.files, args.small)
    n = len(files)
    print(f"{n} files (hard links of 4 videos) in {root}; {os.cpu_count()} cores")
    cache = root / "cache"
    # workers > 1: in processes even when the build looks too small to pay for a pool (as a
    # build of 100k files would run); the pool's start-up is included in the time
    os.environ["TVL_ASYNC_INDEX_POOL_MIN_SECONDS"] = "0"
    for w in args.workers:
        cache = root / f"cache-w{w}-{time.time_ns()}"
        os.environ["TVL_ASYNC_CACHE"] = str(cache)
        os.environ["TVL_ASYNC_INDEX_WORKERS"] = str(w)
        wall, cpu = cpu_timed(lambda: VideoDataset(files, seq_len=1))
        report(f"first build, workers={w}", wall, n, cpu)
    os.environ.pop("TVL_ASYNC_INDEX_WORKERS")
    runs = [cpu_timed(lambda: VideoDataset(files, seq_len=1)) for _ in range(3)]
    wall, cpu = statistics.median(runs)  # the run of median wall time
    report("cached open (median of 3)", wall, n, cpu)
    print(f"{'':34s} runs: {', '.join(f'{r:.3f}' for r, _ in runs)} s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [cpu_timed(lambda: VideoDataset(files, seq_len=4)) for _ in range(3)]
    wall, cpu = statistics.median(runs)
    report("cached VideoDataset (median of 3)", wall, n, cpu)
    size = sum(p.stat().st_size for p in cache.glob("*.tvlidx"))
    print(f"{'':34s} entry: {size / 1e6:.1f} MB ({size / n:.0f} B/file)")
    if args.per_file:
        os.environ["TVL_ASYNC_CACHE"] = str(root / f"cache-per-file-{time.time_ns()}")
        for label in ("per-file entries, first (1 thread)", "per-file entries, cached"):
            wall, cpu = cpu_timed(lambda: [load_index(p) for p in files])
            report(label, wall, n, cpu)


if __name__ == "__main__":
    main()

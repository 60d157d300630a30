"""Consume a Prefetcher with ``async for`` while other coroutines run, and measure the overlap.

    python examples/async_dataloading.py            # makes its own small videos
    python examples/async_dataloading.py --quick    # a few seconds (what the tests run)
    python examples/async_dataloading.py DIR ...    # your videos

The same clips are read twice:

1. inline: each batch is decoded in the event loop (``VideoLoader.read_frames_at``), then the
   "other work" of the step runs (``await asyncio.sleep``: a stand-in for an awaited GPU step, a
   remote call or disk I/O). The loop is blocked while decoding, so the times add up.
2. async: ``async for batch in prefetcher`` while the same work is awaited. The Prefetcher's
   service thread decodes the next batches meanwhile; a heartbeat coroutine ticks every 10 ms
   and records how late it was woken, which shows the event loop is never blocked.

For a like-for-like comparison the Prefetcher uses one decode thread and a lookahead of one
batch here (the defaults decode faster still). The overlap printed is the decode time hidden
behind the other work: (inline wall time - async wall time) / inline decode time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tvl_async import Prefetcher, VideoDataset, VideoLoader, cache_dir, find_videos
from tvl_async.cli import exit_on_error
from tvl_async.cli.synthetic import frame_index_of, make_video_set


def video_folder(quick: bool) -> Path:
    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    return base / ("examples-async-quick" if quick else "examples-async")


def uniform_order(dataset: VideoDataset, seed: int) -> np.ndarray:
    """The sample ids of epoch 0 in the order a ``Prefetcher(dataset, seed=seed)`` reads them
    (from its sampler; the Prefetcher is never started, so nothing is decoded)."""
    with Prefetcher(dataset, seed=seed) as p:
        return p.sampler.epoch_order(0)


def inline_run(
    files: list[str], seq_len: int, batch_size: int, n_batches: int, seed: int, work_s: float | None
) -> tuple[float, float, float, list[list[int]]]:
    """Decode each batch in the event loop, then await the work. Returns wall, decode, work
    seconds and the clips read (``[file, start]`` per sample)."""

    async def main() -> tuple[float, float, float, list[list[int]]]:
        dataset = VideoDataset(files, seq_len)
        order = uniform_order(dataset, seed)
        loaders = {f: VideoLoader(f) for f in files}
        decode = work = 0.0
        clips: list[list[int]] = []
        t0 = time.perf_counter()
        for b in range(n_batches):
            t1 = time.perf_counter()
            batch = []
            for sample in order[b * batch_size : (b + 1) * batch_size]:
                f, start = dataset.locate(int(sample))
                frames = dataset.clip_frames(int(sample))
                batch.append(loaders[dataset.files[f]].read_frames_at(frames))
                clips.append([f, start])
            t2 = time.perf_counter()
            decode += t2 - t1
            await asyncio.sleep(work_s if work_s is not None else t2 - t1)
            work += time.perf_counter() - t2
        wall = time.perf_counter() - t0
        for loader in loaders.values():
            loader.close()
        return wall, decode, work, clips

    return asyncio.run(main())


async def heartbeat(stop: asyncio.Event, lags: list[float], period: float = 0.01) -> None:
    """Tick every ``period`` seconds; record how late each tick was (event loop latency)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(period)
        lags.append(loop.time() - t - period)


async def async_run(
    files: list[str], seq_len: int, batch_size: int, n_batches: int, seed: int, work_s: float
) -> dict[str, object]:
    """``async for`` over a Prefetcher while the work is awaited and a heartbeat ticks."""
    stop = asyncio.Event()
    lags: list[float] = []
    ticker = asyncio.create_task(heartbeat(stop, lags))
    clips: list[list[int]] = []
    checked = wrong = 0
    prefetcher = Prefetcher(
        files, seq_len, batch_size=batch_size, seed=seed, decode_threads=1, lookahead=batch_size
    )  # files indexed here, as the inline loaders
    t0 = time.perf_counter()
    async with prefetcher as it:
        async for batch in it:
            x = batch["default"]  # [B, F, 3, H, W] uint8, ready: nothing left to decode
            for b in range(x.shape[0]):
                clips.append([files.index(batch.files[b]), int(batch.frame_indices[b, 0])])
                checked += 1
                wrong += frame_index_of(x[b, -1]) != int(batch.frame_indices[b, -1])
            await asyncio.sleep(work_s)  # the other work of this step
            if len(clips) >= n_batches * batch_size:
                break
        stats = it.stats()
    wall = time.perf_counter() - t0
    stop.set()
    await ticker
    return {
        "wall": wall,
        "clips": clips,
        "lags": lags,
        "stats": stats,
        "checked": checked,
        "wrong": wrong,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="video files or folders (default: generated)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--batches", type=int, default=None, help="batches to read")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch")
    p.add_argument("--seq-len", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument(
        "--work-ms",
        type=float,
        default=None,
        help="other work per step in ms (default: as long as decoding a batch)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quick = args.quick
    n_batches = args.batches or (10 if quick else 30)
    batch_size = args.batch_size or (2 if quick else 4)
    if args.paths:
        files = [str(f) for f in find_videos(args.paths)]
    else:
        folder = video_folder(quick)
        print(f"videos: {folder}")
        size: dict[str, Any] = (
            dict(n_frames=48, width=128, height=96, gop=12)
            if quick
            else dict(n_frames=150, width=320, height=240, gop=30)
        )
        files = [str(f) for f in make_video_set(folder, n_files=4 if quick else 8, **size)]
    seq_len = args.seq_len
    work_s = None if args.work_ms is None else args.work_ms / 1000

    wall_i, decode_i, work_i, clips_i = inline_run(
        files, seq_len, batch_size, n_batches, args.seed, work_s
    )
    per_step = work_s if work_s is not None else work_i / n_batches
    res = asyncio.run(async_run(files, seq_len, batch_size, n_batches, args.seed, per_step))
    wall_a = float(res["wall"])  # type: ignore[arg-type]
    lags = np.array(res["lags"]) * 1000
    clips_a = res["clips"]
    work_a = per_step * n_batches
    hidden = max(0.0, wall_i - wall_a)
    frac = hidden / decode_i if decode_i > 0 else 0.0
    same = clips_a == clips_i

    print(
        f"{len(files)} files, {n_batches} batches of {batch_size} clips x {seq_len} frames; "
        f"other work {per_step * 1000:.0f} ms per step"
    )
    print(
        f"inline : decode {decode_i:6.2f} s + other work {work_i:6.2f} s -> {wall_i:6.2f} s "
        f"wall (the event loop is blocked while decoding)"
    )
    print(
        f"async  : other work {work_a:6.2f} s, decoding in the service thread  -> "
        f"{wall_a:6.2f} s wall"
    )
    median, worst = (float(np.median(lags)), float(lags.max())) if len(lags) else (0.0, 0.0)
    print(
        f"heartbeat coroutine: {len(lags)} ticks while iterating; event loop lag median "
        f"{median:.1f} ms, worst {worst:.1f} ms"
    )
    print(
        f"decoding overlapped with the other work: {hidden:.2f} s of {decode_i:.2f} s "
        f"({100 * frac:.0f}%); speed-up {wall_i / wall_a:.2f}x"
    )
    print(
        f"same clips in the same order as inline: {'yes' if same else 'NO'}; frame check: "
        f"{int(res['checked']) - int(res['wrong'])}/{res['checked']} clips "  # type: ignore[call-overload]
        f"end on the frame asked for"
    )
    return 0 if same and res["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "async_dataloading.py"))

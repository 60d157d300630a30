"""``tvl-async probe`` and ``tvl-async index``: inspect files, build the index cache.

``probe`` prints, per file, the streams, size, rate, frame count, GOP lengths and the cost of
random access; ``index`` builds the on-disk index cache of every video in the folders given
(the consolidated entry that ``VideoDataset`` reads, built across the cores), with a tqdm
progress bar. Both block until done (demuxing, no decoding).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from tvl_async import VideoDataset, cache_dir, find_videos, load_index


def add_parsers(sub: Any) -> None:
    """Register ``probe`` and ``index`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser("probe", help="streams, frame count, GOPs and random-access cost of files")
    p.add_argument("paths", nargs="+", help="video files or folders")
    _add_stream_index(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("index", help="build the index cache for folders of videos")
    p.add_argument("paths", nargs="+", help="video files or folders")
    _add_stream_index(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)


def _add_stream_index(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stream-index",
        type=int,
        default=None,
        help="the video stream to read (an index among all streams; default: ffmpeg's best)",
    )


def random_access_cost(gops: np.ndarray) -> float:
    """Expected frames decoded for one uniformly random frame, given the GOP lengths: the mean
    over frames of their position inside their GOP, plus one."""
    return float(np.sum(gops * (gops + 1) / 2) / max(int(gops.sum()), 1))


def cmd_probe(args: argparse.Namespace) -> int:
    """Print streams, size, rate, frame count, GOP lengths and random-access cost per file."""
    import av

    for path in find_videos(args.paths):
        idx = load_index(path, stream_index=args.stream_index)
        with av.open(str(path)) as c:
            streams = ", ".join(f"#{s.index} {s.type}:{s.codec_context.name}" for s in c.streams)
        gops = idx.gop_lengths()
        print(f"{path}")
        print(f"  streams: {streams}  (reading #{idx.stream_index})")
        print(
            f"  video: {idx.codec} {idx.width}x{idx.height} {idx.pix_fmt}  "
            f"{idx.frame_rate:.3f} fps  {idx.duration:.3f} s  start {idx.start_time:.3f} s"
        )
        print(
            f"  frames: {idx.n_frames} (header says {idx.header_frames or 'nothing'})  "
            f"timestamps: {'pts' if idx.timestamps_ok else 'none (decode-order fallback)'}"
        )
        print(
            f"  GOPs: {idx.n_keys}  length min/mean/max: {gops.min()}/{gops.mean():.1f}/"
            f"{gops.max()}"
        )
        print(f"  random access: ~{random_access_cost(gops):.1f} frames decoded per random frame")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build the index cache for every video in the folders given."""
    files = find_videos(args.paths)
    t0 = time.perf_counter()
    # one consolidated entry (what VideoDataset and Prefetcher read), built across the cores
    dataset = VideoDataset(
        files, 1, stream_index=args.stream_index, progress=not args.quiet, autorotate=False
    )
    frames = sum(i.n_frames for i in dataset.indexes)
    dt = time.perf_counter() - t0
    folder = cache_dir()
    where = str(folder) if folder else "off (TVL_ASYNC_CACHE=off): nothing was stored"
    print(f"indexed {len(files)} files, {frames} frames in {dt:.2f} s; cache: {where}")
    return 0

"""``tvl-async probe`` and ``tvl-async index``: inspect files, build the index cache.

``probe`` prints, per file, the streams, size, rate, frame count, GOP lengths and the cost of
random access; ``index`` builds the on-disk index cache of every video in the folders given
(the consolidated entry that ``VideoDataset`` reads, built across the cores), with a tqdm
progress bar. Both take local paths and fsspec URLs (``s3://bucket/set/``, a folder URL ending
in ``/``, is listed), with ``--storage-options JSON`` for the URLs. Both block in the calling
thread (demuxing, no decoding; URLs are read by byte ranges).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from tvl_async import VideoDataset, cache_dir, find_videos, load_index
from tvl_async.cli._common import json_object


def add_parsers(sub: Any) -> None:
    """Register ``probe`` and ``index`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser("probe", help="streams, frame count, GOPs and random-access cost of files")
    p.add_argument("paths", nargs="+", help="video files or folders (paths or fsspec URLs)")
    _add_stream_index(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("index", help="build the index cache for folders of videos")
    p.add_argument("paths", nargs="+", help="video files or folders (paths or fsspec URLs)")
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
    p.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="fsspec storage_options for URLs (credentials, endpoint_url...), e.g. "
        "'{\"anon\": true}'",
    )


def is_url(text: str) -> bool:
    """``scheme://...`` other than ``file://`` (read through fsspec)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme != "file"


def find_sources(paths: list[str], storage_options: dict[str, Any] | None) -> list[str]:
    """Local files and folders expanded (:func:`~tvl_async.find_videos`); a folder URL (ending
    in ``/``) listed by a :class:`~tvl_async.VideoDataset` (it indexes the videos); other URLs
    kept. Blocks."""
    out: list[str] = []
    for item in paths:
        if not is_url(item):
            out.extend(str(p) for p in find_videos([item]))
        elif item.endswith("/"):
            out.extend(VideoDataset(item, 1, storage_options=storage_options).files)
        else:
            out.append(item)
    return out


def _streams(path: str, storage_options: dict[str, Any] | None) -> str:
    import av

    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb", **(storage_options or {})) as f, av.open(f) as c:
            return ", ".join(f"#{s.index} {s.type}:{s.codec_context.name}" for s in c.streams)
    with av.open(path) as c:
        return ", ".join(f"#{s.index} {s.type}:{s.codec_context.name}" for s in c.streams)


def random_access_cost(gops: np.ndarray) -> float:
    """Expected frames decoded for one uniformly random frame, given the GOP lengths: the mean
    over frames of their position inside their GOP, plus one."""
    return float(np.sum(gops * (gops + 1) / 2) / max(int(gops.sum()), 1))


def cmd_probe(args: argparse.Namespace) -> int:
    """Print streams, size, rate, frame count, GOP lengths and random-access cost per file."""
    opts = args.storage_options
    for path in find_sources(args.paths, opts):
        idx = load_index(path, stream_index=args.stream_index, storage_options=opts)
        streams = _streams(path, opts)
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
    opts = args.storage_options
    files = find_sources(args.paths, opts)
    t0 = time.perf_counter()
    # one consolidated entry (what VideoDataset and Prefetcher read), built across the cores
    dataset = VideoDataset(
        files,
        1,
        stream_index=args.stream_index,
        storage_options=opts,
        progress=not args.quiet,
        autorotate=False,
    )
    frames = sum(i.n_frames for i in dataset.indexes)
    dt = time.perf_counter() - t0
    folder = cache_dir()
    where = str(folder) if folder else "off (TVL_ASYNC_CACHE=off): nothing was stored"
    print(f"indexed {len(files)} files, {frames} frames in {dt:.2f} s; cache: {where}")
    return 0

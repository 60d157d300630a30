"""The ``tvl-async`` command: demo, probe, index (more subcommands register themselves below).

Errors are printed as one line on stderr with exit code 2, never a traceback (``--debug`` shows
the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tvl_async.index import VIDEO_SUFFIXES


def find_videos(items: Sequence[str]) -> list[Path]:
    """Expand files and folders (recursively, by video suffix) into a sorted list of files."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(2, f"No such file or folder: '{p}'", str(p))
    if not out:
        raise ValueError(f"no video files found in {', '.join(items)}")
    return out


def default_demo_dir() -> Path:
    """Where ``demo`` writes its own small video set when given none."""
    from tvl_async.index import cache_dir

    return (cache_dir() or Path.home() / ".cache" / "tvl_async") / "demo-videos"


def progress(iterable: object, total: int | None, desc: str, enabled: bool = True) -> object:
    """Wrap an iterable in a tqdm progress bar on stderr when tqdm is installed and enabled."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)


# ---------------------------------------------------------------------------------- commands


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a Prefetcher over the given folder (or a generated one) and print the throughput."""
    from tvl_async.synthetic import make_video_set

    if args.paths:
        files = find_videos(args.paths)
    else:
        folder = default_demo_dir()
        print(f"writing a small demo video set to {folder} ...", file=sys.stderr)
        files = make_video_set(folder, n_files=8, n_frames=120, width=320, height=240, gop=30)
    try:
        from tvl_async.prefetcher import Prefetcher
    except ImportError:  # pragma: no cover - during bootstrap only
        return _demo_loader(files)
    from tvl_async.synthetic import frame_index_of

    t0 = time.perf_counter()
    n_batches = 0
    checked = mismatched = 0
    with Prefetcher(files, seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed,
                    epochs=args.epochs, device=args.device) as it:
        bar = progress(it, None, "batches", enabled=not args.quiet)
        for batch in bar:  # type: ignore[attr-defined]
            n_batches += 1
            if not args.paths:  # generated videos carry their frame index: verify every frame
                clips = batch["default"]
                for b in range(clips.shape[0]):
                    for f in range(clips.shape[1]):
                        checked += 1
                        if frame_index_of(clips[b, f]) != int(batch.frame_indices[b, f]):
                            mismatched += 1
        stats = it.stats()
    dt = time.perf_counter() - t0
    print(f"files: {len(files)}  batches: {n_batches}  samples: {stats.samples_delivered}  "
          f"frames: {stats.frames_delivered}")
    print(f"time: {dt:.2f} s  throughput: {stats.frames_delivered / dt:.1f} frames/s  "
          f"decoded per delivered: {stats.decoded_per_delivered:.2f}  "
          f"consumer waited: {stats.wait_time:.2f} s")
    if checked:
        print(f"frame check: {checked - mismatched}/{checked} frames are exactly the frame asked for")
    return 0 if mismatched == 0 else 1


def _demo_loader(files: list[Path]) -> int:
    from tvl_async.loader import VideoLoader

    t0 = time.perf_counter()
    n = 0
    for path in files:
        with VideoLoader(path) as loader:
            rng = np.random.default_rng(0)
            idx = rng.integers(0, loader.n_frames, size=16).tolist()
            n += loader.read_frames_at(idx).shape[0]
    dt = time.perf_counter() - t0
    print(f"read {n} random frames from {len(files)} files in {dt:.2f} s ({n / dt:.1f} frames/s)")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Print streams, size, rate, frame count, GOP lengths and random-access cost per file."""
    import av

    from tvl_async.index import load_index

    for path in find_videos(args.paths):
        idx = load_index(path)
        with av.open(str(path)) as c:
            streams = ", ".join(f"#{s.index} {s.type}:{s.codec_context.name}" for s in c.streams)
        gops = idx.gop_lengths()
        # expected frames decoded for one uniformly random frame: mean over frames of their
        # position inside their GOP, plus one
        cost = float(np.sum(gops * (gops + 1) / 2) / max(idx.n_frames, 1))
        print(f"{path}")
        print(f"  streams: {streams}")
        print(f"  video: {idx.codec} {idx.width}x{idx.height} {idx.pix_fmt}  "
              f"{idx.frame_rate:.3f} fps  {idx.duration:.3f} s  start {idx.start_time:.3f} s")
        print(f"  frames: {idx.n_frames} (header says {idx.header_frames or 'nothing'})  "
              f"timestamps: {'pts' if idx.timestamps_ok else 'none (decode-order fallback)'}")
        print(f"  GOPs: {idx.n_keys}  length min/mean/max: {gops.min()}/{gops.mean():.1f}/"
              f"{gops.max()}")
        print(f"  random access: ~{cost:.1f} frames decoded per random frame")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build the index cache for every video in the folders given."""
    from tvl_async.index import cache_dir, load_index

    files = find_videos(args.paths)
    t0 = time.perf_counter()
    frames = 0
    for path in progress(files, len(files), "indexing", enabled=not args.quiet):  # type: ignore[attr-defined]
        frames += load_index(path).n_frames
    dt = time.perf_counter() - t0
    print(f"indexed {len(files)} files, {frames} frames in {dt:.2f} s; cache: {cache_dir()}")
    return 0


# ---------------------------------------------------------------------------------- parser

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="tvl-async", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run a Prefetcher on videos (writes its own when given none)")
    p.add_argument("paths", nargs="*", help="video files or folders (default: a generated set)")
    p.add_argument("--seq-len", type=int, default=4, help="frames per clip (default 4)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--epochs", type=int, default=1, help="epochs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("probe", help="streams, frame count, GOPs and random-access cost of files")
    p.add_argument("paths", nargs="+", help="video files or folders")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("index", help="build the index cache for folders of videos")
    p.add_argument("paths", nargs="+", help="video files or folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tvl-async``; returns the exit code (2 for a clear error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("tvl-async: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"tvl-async {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The tvl-async command: demo, probe, index, transcode, play (and bench).

``tvl-async demo`` is the main job: a Prefetcher over your folder, or over a small set of videos
it writes itself, with a progress bar and the throughput at the end. ``probe`` and ``index``
inspect files; ``transcode`` re-encodes videos for training (NVVL's data preparation);
``play`` opens the Tk player (``tvl_async/player.py``). ``--help`` works on every command.

Errors (bad options included) are printed as one line on stderr with exit code 2, never a
traceback (``tvl-async --debug CMD`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import numpy as np

from tvl_async._index import find_videos
from tvl_async.cli.transcode import (
    CONTAINERS,
    ENCODERS,
    check_options,
    transcode_file,
    transcode_jobs,
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def human_bytes(n: float) -> str:
    """``n`` bytes as B, kB, MB or GB (powers of 1000)."""
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}; allowed: an integer >= 1")
    return value


def error_line(e: BaseException) -> str:
    """An exception as one line of text (pydantic's multi-line messages folded)."""
    from pydantic import ValidationError

    from tvl_async._errors import TvlAsyncError

    if isinstance(e, ValidationError):
        text = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
    elif isinstance(e, OSError) and e.strerror and e.filename:
        name = os.fspath(e.filename)
        text = e.strerror if str(name) in e.strerror else f"{e.strerror}: '{name}'"
    else:
        text = str(e)
        if not isinstance(e, ValueError | RuntimeError | OSError | TvlAsyncError) or not text:
            text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return " ".join(text.split())


def default_demo_dir() -> Path:
    """Where ``demo`` writes its own small video set when given none."""
    from tvl_async._index import cache_dir

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
    import torch

    from tvl_async._config import ProcessDesc
    from tvl_async._prefetcher import Prefetcher
    from tvl_async.cli.bench.videos import parse_size
    from tvl_async.cli.synthetic import frame_index_of, make_video_set

    if args.device.strip().lower().startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device here "
                         f"(torch.cuda.is_available() is False); use --device cpu")
    if args.paths:
        files = find_videos(args.paths)
    else:
        folder = default_demo_dir()
        if not (folder / "clip_007.mp4").exists():
            print(f"writing a small demo video set to {folder} ...", file=sys.stderr)
        files = make_video_set(folder, n_files=8, n_frames=120, width=320, height=240, gop=30)
    t0 = time.perf_counter()
    n_batches = 0
    checked = mismatched = 0
    processing = None
    if args.size:
        width, height = parse_size(args.size)
        processing = ProcessDesc(scale_width=width, scale_height=height)
    try:
        prefetcher = Prefetcher(files, seq_len=args.seq_len, batch_size=args.batch_size,
                                seed=args.seed, epochs=args.epochs, device=args.device,
                                backend=args.backend, sampling=args.sampling,
                                lookahead=args.lookahead, decode_threads=args.decode_threads,
                                processing=processing)
    except ValueError as e:
        if "differ in frame size" in str(e) and not args.size:
            raise ValueError(f"{e} (tvl-async demo: pass --size WxH)") from None
        raise
    with prefetcher as it:
        print(f"{len(files)} files, {len(it.dataset)} clips of {args.seq_len} frames; "
              f"batch {args.batch_size}, sampling {args.sampling}, lookahead {it.lookahead}, "
              f"backend {it.backend_name} on {it.device}, {it.decode_threads} decode threads")
        total = len(it) * args.epochs
        bar = progress(it, total, "batches", enabled=not args.quiet)
        for batch in bar:  # type: ignore[attr-defined]
            n_batches += 1
            if not args.paths and not args.size:  # generated videos carry their frame index
                clips = batch["default"].cpu()
                for b in range(clips.shape[0]):
                    for f in range(clips.shape[1]):
                        checked += 1
                        if frame_index_of(clips[b, f]) != int(batch.frame_indices[b, f]):
                            mismatched += 1
        stats = it.stats()
    dt = time.perf_counter() - t0
    print(f"batches: {n_batches}  clips: {stats.samples_delivered}  "
          f"frames: {stats.frames_delivered}  time: {dt:.2f} s")
    print(f"throughput: {stats.frames_delivered / dt:.1f} frames/s "
          f"({stats.samples_delivered / dt:.1f} clips/s); frames decoded per frame delivered: "
          f"{stats.decoded_per_delivered:.2f}; the loop waited {stats.wait_time:.2f} s "
          f"({stats.wait_time_after_first:.2f} s after the first batch)")
    if checked:
        print(f"frame check: {checked - mismatched}/{checked} frames are exactly the frame "
              f"asked for")
    return 0 if mismatched == 0 else 1


def cmd_probe(args: argparse.Namespace) -> int:
    """Print streams, size, rate, frame count, GOP lengths and random-access cost per file."""
    import av

    from tvl_async._index import load_index

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
    from tvl_async._index import cache_dir, load_index

    files = find_videos(args.paths)
    t0 = time.perf_counter()
    frames = 0
    for path in progress(files, len(files), "indexing", enabled=not args.quiet):  # type: ignore[attr-defined]
        frames += load_index(path).n_frames
    dt = time.perf_counter() - t0
    folder = cache_dir()
    where = str(folder) if folder else "off (TVL_ASYNC_CACHE=off): nothing was stored"
    print(f"indexed {len(files)} files, {frames} frames in {dt:.2f} s; cache: {where}")
    return 0


def cmd_transcode(args: argparse.Namespace) -> int:
    """Re-encode videos for training: fixed keyframe interval, size, codec, no audio."""
    import av

    codec = ENCODERS[args.codec]
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        raise ValueError(f"encoder {codec!r} is not in this FFmpeg build; allowed: "
                         f"{', '.join(sorted(set(ENCODERS.values())))} where built in") from None
    if codec not in CONTAINERS[args.format]:
        raise ValueError(f"--format {args.format}: cannot hold codec {args.codec!r}; allowed "
                         f"codecs: {', '.join(CONTAINERS[args.format])}")
    check_options(codec, gop=args.gop, bframes=args.bframes, crf=args.crf, preset=args.preset,
                  pix_fmt=args.pix_fmt)
    out_dir = Path(args.output)
    jobs = transcode_jobs(args.inputs, out_dir, "." + args.format)
    t0 = time.perf_counter()
    done = skipped = failed = 0
    bytes_in = bytes_out = frames = 0
    for k, (src, dst) in enumerate(jobs, 1):
        if dst.exists() and not args.overwrite:
            print(f"[{k}/{len(jobs)}] {dst} exists: skipped (--overwrite to redo)")
            skipped += 1
            continue
        t1 = time.perf_counter()
        try:
            r = transcode_file(src, dst, codec=codec, gop=args.gop, bframes=args.bframes,
                               crf=args.crf, preset=args.preset, width=args.width,
                               height=args.height, pix_fmt=args.pix_fmt,
                               show_progress=not args.quiet)
        except Exception as e:  # one line per failed file; the others go on
            if args.debug:
                raise
            failed += 1
            print(f"tvl-async transcode: error: {error_line(e)}", file=sys.stderr, flush=True)
            continue
        done += 1
        frames += r["frames"]
        bytes_in += r["bytes_in"]
        bytes_out += r["bytes_out"]
        (w, h), (ow, oh) = r["size"], r["out_size"]
        print(f"[{k}/{len(jobs)}] {src} -> {dst}: {r['frames']} frames, {w}x{h} -> {ow}x{oh}, "
              f"keyframe every {args.gop}, {human_bytes(r['bytes_in'])} -> "
              f"{human_bytes(r['bytes_out'])}, {time.perf_counter() - t1:.1f} s", flush=True)
    dt = time.perf_counter() - t0
    print(f"transcoded {done} files ({frames} frames, {human_bytes(bytes_in)} -> "
          f"{human_bytes(bytes_out)}) in {dt:.1f} s; skipped {skipped}, failed {failed}; "
          f"output: {out_dir}")
    return 2 if failed else 0


def cmd_play(args: argparse.Namespace) -> int:
    """Open the Tk player (tvl_async/player.py) on a file."""
    from tvl_async.cli.play.player import run

    return run(args)


# ---------------------------------------------------------------------------------- parser

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="tvl-async", description=__doc__.splitlines()[0],
                     epilog="tvl-async COMMAND --help shows the options of a command.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND"))  # its parsers are _Parser too

    p = sub.add_parser("demo", help="run a Prefetcher on videos (writes its own when given none)",
                       description="Run a Prefetcher over video files or folders (default: a "
                       "small generated set whose frames are checked one by one) with a progress "
                       "bar; print the throughput at the end.")
    p.add_argument("paths", nargs="*", help="video files or folders (default: a generated set)")
    p.add_argument("--seq-len", type=positive_int, default=4, help="frames per clip (default 4)")
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="clips per batch (default 8)")
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--sampling", default="uniform",
                   choices=["uniform", "sequential", "chunked", "gop_shuffle"],
                   help="sample order (default uniform; see docs/sampling.md)")
    p.add_argument("--lookahead", type=positive_int, default=None,
                   help="samples planned ahead (default: from the memory budget)")
    p.add_argument("--decode-threads", type=positive_int, default=None,
                   help="CPU decode threads (default: one per core, at most 8)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--backend", default="auto", choices=["auto", "pyav", "nvdec"],
                   help="decoder (default auto: nvdec on a GPU when available)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="resize every frame to W x H pixels (needed when files differ in size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("probe", help="streams, frame count, GOPs and random-access cost of files")
    p.add_argument("paths", nargs="+", help="video files or folders")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("index", help="build the index cache for folders of videos")
    p.add_argument("paths", nargs="+", help="video files or folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("transcode", help="re-encode videos for training (keyframe interval, "
                       "size, codec; drops audio)",
                       description="Re-encode video files or folders into OUTPUT for fast "
                       "random access (NVVL's data preparation): a keyframe every --gop frames, "
                       "optional resize, no audio. Every frame is kept, and the time between "
                       "frames (variable rates stay variable); timestamps start at 0. "
                       "Folders keep their layout under OUTPUT.")
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--gop", type=positive_int, default=16,
                   help="keyframe interval in frames (default 16; smaller = cheaper random "
                   "access, bigger files)")
    p.add_argument("--codec", default="h264", choices=sorted(ENCODERS),
                   help="encoder (default h264 = libx264)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="output width in pixels (alone: keeps the aspect ratio)")
    p.add_argument("--height", type=positive_int, default=None,
                   help="output height in pixels (alone: keeps the aspect ratio)")
    p.add_argument("--crf", type=int, default=18,
                   help="quality, lower is better (default 18; h264/hevc 0..51, vp9 0..63, "
                   "av1 1..63; mpeg4 uses a fixed quantiser)")
    p.add_argument("--bframes", type=int, default=0, choices=range(0, 17), metavar="0..16",
                   help="B-frames between references (default 0)")
    p.add_argument("--preset", default="fast",
                   help="x264/x265 preset, ultrafast..placebo (default fast)")
    p.add_argument("--pix-fmt", default="yuv420p", help="pixel format (default yuv420p)")
    p.add_argument("--format", default="mp4", choices=list(CONTAINERS),
                   help="container (default mp4)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_transcode)

    from tvl_async.cli.play.player import add_arguments

    p = sub.add_parser("play", help="open the Tk video player on a file",
                       description="Play a video with VideoLoader in a Tk window: play/pause at "
                       "the file's own frame rate, seek with the slider or the frame box, "
                       "Left/Right step one frame, slow motion. Needs a display.")
    add_arguments(p)
    p.set_defaults(func=cmd_play)

    from tvl_async.cli.bench.runner import add_bench_parser

    add_bench_parser(sub)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tvl-async``; returns the exit code (2 for a clear error). Warnings are
    printed as one line each (``tvl-async CMD: warning: ...``)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        print(f"tvl-async {args.command}: warning: {text}", file=sys.stderr, flush=True)

    shown, warnings.showwarning = warnings.showwarning, one_line
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("tvl-async: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"tvl-async {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


def exit_on_error(main: Callable[[], int], prog: str) -> int:
    """Run an example's or a tool's ``main()``: a failure becomes one line on stderr and exit
    code 2 (``TVL_ASYNC_DEBUG=1`` shows the traceback)."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("TVL_ASYNC_DEBUG"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

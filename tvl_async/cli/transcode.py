"""``tvl-async transcode``: re-encoding videos for training (NVVL's data preparation).

A fixed keyframe interval makes random access cheap and predictable (a frame costs at most one
GOP of decoding); a smaller size makes every decode cheaper. :func:`transcode_file` keeps every
frame and its timestamp and drops audio and subtitles; the command shows a tqdm bar (frames) per
file. Everything here blocks on encoding and runs in the calling thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from tvl_async import NoVideoStreamError, VideoOpenError, find_videos
from tvl_async.cli._common import error_line, human_bytes, invalid, positive_int, progress_bar
from tvl_async.cli._encoders import CONTAINERS, ENCODERS, check_options, encoder_options


def output_size(in_w: int, in_h: int, width: int | None, height: int | None) -> tuple[int, int]:
    """Output ``(width, height)``: one of the two given keeps the aspect ratio; even numbers."""
    if width is None and height is None:
        w, h = in_w, in_h
    elif width is None:
        assert height is not None
        w, h = round(in_w * height / in_h), height
    elif height is None:
        w, h = width, round(in_h * width / in_w)
    else:
        w, h = width, height
    return max(2, w - w % 2), max(2, h - h % 2)


def transcode_jobs(items: Sequence[str], out_dir: Path, suffix: str) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs; folders keep their layout under ``out_dir``."""
    jobs: list[tuple[Path, Path]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            for q in find_videos([item]):
                jobs.append((q, (out_dir / q.relative_to(p)).with_suffix(suffix)))
        else:
            for q in find_videos([item]):
                jobs.append((q, out_dir / (q.stem + suffix)))
    seen: dict[Path, Path] = {}
    for src, dst in jobs:
        if dst.resolve() == src.resolve():
            raise ValueError(f"output {dst} would overwrite its input; choose another --output")
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
    return jobs


def transcode_file(
    src: Path,
    dst: Path,
    *,
    codec: str,
    gop: int,
    bframes: int,
    crf: int,
    preset: str,
    width: int | None,
    height: int | None,
    pix_fmt: str,
    show_progress: bool,
) -> dict[str, Any]:
    """Re-encode the first video stream of ``src`` into ``dst`` (no audio, no subtitles).

    Keeps every frame and its timestamp (variable frame rates stay variable); writes to a
    temporary name and renames at the end, so an interrupted run leaves no half file. Blocks.
    """
    import av
    import av.video.frame

    try:
        inp = av.open(str(src))
    except av.FFmpegError as e:
        raise VideoOpenError(f"{src}: not a readable video ({e})") from e
    tmp = dst.with_name(f".{dst.stem}.part{dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        if not inp.streams.video:
            raise NoVideoStreamError(f"{src}: no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        ctx = vs.codec_context
        out_w, out_h = output_size(ctx.width, ctx.height, width, height)
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        in_tb = vs.time_base or Fraction(1, 1)
        with av.open(
            str(tmp), "w", format=dst.suffix.lstrip(".").replace("mkv", "matroska")
        ) as out:
            ost = out.add_stream(
                codec, rate=rate, options=encoder_options(codec, gop, bframes, crf, preset)
            )
            ost.width, ost.height, ost.pix_fmt = out_w, out_h, pix_fmt
            ost.codec_context.gop_size = gop
            if codec == "mpeg4":
                ost.codec_context.max_b_frames = bframes
            bar = progress_bar(
                total=vs.frames or None, desc=src.name, unit="frame", enabled=show_progress
            )
            first: int | None = None
            prev = -1
            tb: Fraction | None = None
            for frame in inp.decode(vs):
                if tb is None:  # timestamps from the file, or a frame counter when it has none
                    tb = in_tb if frame.pts is not None else Fraction(1) / Fraction(rate)
                    ost.time_base = tb
                    ost.codec_context.time_base = tb
                    first = frame.pts if frame.pts is not None else 0
                pts = n if frame.pts is None or first is None else frame.pts - first
                pts = max(pts, prev + 1)
                prev = pts
                out_frame = frame.reformat(width=out_w, height=out_h, format=pix_fmt)
                out_frame.pts, out_frame.time_base = pts, tb
                # the input's keyframes must not force keyframes in the output
                out_frame.pict_type = av.video.frame.PictureType.NONE
                for packet in ost.encode(out_frame):
                    out.mux(packet)
                n += 1
                bar.update(1)
            for packet in ost.encode(None):
                out.mux(packet)
            bar.close()
        if n == 0:
            raise VideoOpenError(f"{src}: no frame could be decoded")
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        inp.close()
    return {
        "frames": n,
        "size": (ctx.width, ctx.height),
        "out_size": (out_w, out_h),
        "bytes_in": src.stat().st_size,
        "bytes_out": dst.stat().st_size,
    }


# ---------------------------------------------------------------------------------- command


def add_parser(sub: Any) -> None:
    """Register ``transcode`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "transcode",
        help="re-encode videos for training (keyframe interval, size, codec; drops audio)",
        description="Re-encode video files or folders into OUTPUT for fast "
        "random access (NVVL's data preparation): a keyframe every --gop frames, "
        "optional resize, no audio. Every frame is kept, and the time between "
        "frames (variable rates stay variable); timestamps start at 0. "
        "Folders keep their layout under OUTPUT.",
    )
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--gop",
        type=positive_int,
        default=16,
        help="keyframe interval in frames (default 16; smaller = cheaper random "
        "access, bigger files)",
    )
    p.add_argument(
        "--codec", default="h264", choices=sorted(ENCODERS), help="encoder (default h264 = libx264)"
    )
    p.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="output width in pixels (alone: keeps the aspect ratio)",
    )
    p.add_argument(
        "--height",
        type=positive_int,
        default=None,
        help="output height in pixels (alone: keeps the aspect ratio)",
    )
    p.add_argument(
        "--crf",
        type=int,
        default=18,
        help="quality, lower is better (default 18; h264/hevc 0..51, vp9 0..63, "
        "av1 1..63; mpeg4 uses a fixed quantiser)",
    )
    p.add_argument(
        "--bframes",
        type=int,
        default=0,
        choices=range(0, 17),
        metavar="0..16",
        help="B-frames between references (default 0)",
    )
    p.add_argument(
        "--preset", default="fast", help="x264/x265 preset, ultrafast..placebo (default fast)"
    )
    p.add_argument("--pix-fmt", default="yuv420p", help="pixel format (default yuv420p)")
    p.add_argument(
        "--format", default="mp4", choices=list(CONTAINERS), help="container (default mp4)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_transcode)


def _check_codec(args: argparse.Namespace) -> str:
    """The encoder of ``--codec``, checked against this FFmpeg build and ``--format``."""
    import av

    codec = ENCODERS[args.codec]
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        built = f"{', '.join(sorted(set(ENCODERS.values())))} where built in"
        raise ValueError(
            invalid("encoder", codec, built, context="(not in this FFmpeg build)")
        ) from None
    if codec not in CONTAINERS[args.format]:
        raise ValueError(
            invalid(
                "--codec",
                args.codec,
                ", ".join(CONTAINERS[args.format]),
                context=f"for --format {args.format}",
            )
        )
    check_options(
        codec,
        gop=args.gop,
        bframes=args.bframes,
        crf=args.crf,
        preset=args.preset,
        pix_fmt=args.pix_fmt,
    )
    return codec


def cmd_transcode(args: argparse.Namespace) -> int:
    """Re-encode videos for training: fixed keyframe interval, size, codec, no audio.

    Returns 0, or 2 when a file failed (each failure is one line on stderr; the others go on).
    """
    codec = _check_codec(args)
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
            r = transcode_file(
                src,
                dst,
                codec=codec,
                gop=args.gop,
                bframes=args.bframes,
                crf=args.crf,
                preset=args.preset,
                width=args.width,
                height=args.height,
                pix_fmt=args.pix_fmt,
                show_progress=not args.quiet,
            )
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
        print(
            f"[{k}/{len(jobs)}] {src} -> {dst}: {r['frames']} frames, {w}x{h} -> {ow}x{oh}, "
            f"keyframe every {args.gop}, {human_bytes(r['bytes_in'])} -> "
            f"{human_bytes(r['bytes_out'])}, {time.perf_counter() - t1:.1f} s",
            flush=True,
        )
    dt = time.perf_counter() - t0
    print(
        f"transcoded {done} files ({frames} frames, {human_bytes(bytes_in)} -> "
        f"{human_bytes(bytes_out)}) in {dt:.1f} s; skipped {skipped}, failed {failed}; "
        f"output: {out_dir}"
    )
    return 2 if failed else 0

"""``tvl-async demo``: a Prefetcher over your folder, or over a small video set it writes itself.

The main job of the command: it shows a tqdm progress bar per batch and prints the throughput
at the end. On its own generated set (whose frames carry their index in their pixels) it checks
that every frame delivered is exactly the frame asked for. Blocks in the calling thread while
the Prefetcher's service thread decodes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, get_args

from tvl_async import PrefetchConfig, Prefetcher, ProcessDesc, cache_dir, find_videos
from tvl_async.cli._common import invalid, parse_size, positive_int, progress

# the choices of PrefetchConfig's Literal fields (written once, in the library)
SAMPLINGS: tuple[str, ...] = get_args(PrefetchConfig.model_fields["sampling"].annotation)
BACKENDS: tuple[str, ...] = get_args(PrefetchConfig.model_fields["backend"].annotation)


def default_demo_dir() -> Path:
    """Where ``demo`` writes its own small video set when given none."""
    return (cache_dir() or Path.home() / ".cache" / "tvl_async") / "demo-videos"


def add_parser(sub: Any) -> None:
    """Register ``demo`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "demo",
        help="run a Prefetcher on videos (writes its own when given none)",
        description="Run a Prefetcher over video files or folders (default: a "
        "small generated set whose frames are checked one by one) with a progress "
        "bar; print the throughput at the end.",
    )
    p.add_argument("paths", nargs="*", help="video files or folders (default: a generated set)")
    p.add_argument("--seq-len", type=positive_int, default=4, help="frames per clip (default 4)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch (default 8)")
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs (default 1)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--sampling",
        default="uniform",
        choices=SAMPLINGS,
        help="sample order (default uniform; see docs/sampling.md)",
    )
    p.add_argument(
        "--lookahead",
        type=positive_int,
        default=None,
        help="samples planned ahead (default: from the memory budget)",
    )
    p.add_argument(
        "--decode-threads",
        type=positive_int,
        default=None,
        help="CPU decode threads (default: one per core, at most 8)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="decoder (default auto: nvdec on a GPU when available)",
    )
    p.add_argument(
        "--size",
        default=None,
        metavar="WxH",
        help="resize every frame to W x H pixels (needed when files differ in size)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)


def _files(args: argparse.Namespace) -> list[Path]:
    """The files to load: the paths given, or the generated set (written on first use)."""
    from tvl_async.cli.synthetic import make_video_set

    if args.paths:
        return find_videos(args.paths)
    folder = default_demo_dir()
    if not (folder / "clip_007.mp4").exists():
        print(f"writing a small demo video set to {folder} ...", file=sys.stderr)
    return make_video_set(folder, n_files=8, n_frames=120, width=320, height=240, gop=30)


def _prefetcher(args: argparse.Namespace, files: list[Path]) -> Prefetcher:
    processing = None
    if args.size:
        width, height = parse_size(args.size)
        processing = ProcessDesc(scale_width=width, scale_height=height)
    try:
        return Prefetcher(
            files,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            seed=args.seed,
            epochs=args.epochs,
            device=args.device,
            backend=args.backend,
            sampling=args.sampling,
            lookahead=args.lookahead,
            decode_threads=args.decode_threads,
            processing=processing,
        )
    except ValueError as e:
        if "differ in frame size" in str(e) and not args.size:
            raise ValueError(f"{e} (tvl-async demo: pass --size WxH)") from None
        raise


def cmd_demo(args: argparse.Namespace) -> int:
    """Run a Prefetcher over the given folder (or a generated one) and print the throughput.

    Returns 0, or 1 when a frame of the generated set was not the frame asked for.
    """
    import torch

    from tvl_async.cli.synthetic import frame_index_of

    if args.device.strip().lower().startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            invalid(
                "--device",
                args.device,
                "cpu here",
                context="(no CUDA device: torch.cuda.is_available() is False)",
            )
        )
    files = _files(args)
    t0 = time.perf_counter()
    n_batches = checked = mismatched = 0
    check = not args.paths and not args.size  # generated videos carry their frame index
    with _prefetcher(args, files) as it:
        print(
            f"{len(files)} files, {len(it.dataset)} clips of {args.seq_len} frames; "
            f"batch {args.batch_size}, sampling {args.sampling}, lookahead {it.lookahead}, "
            f"backend {it.backend_name} on {it.device}, {it.decode_threads} decode threads"
        )
        for batch in progress(
            it, total=len(it) * args.epochs, desc="batches", unit="batch", enabled=not args.quiet
        ):
            n_batches += 1
            if check:
                clips = batch["default"].cpu()
                for b in range(clips.shape[0]):
                    for f in range(clips.shape[1]):
                        checked += 1
                        if frame_index_of(clips[b, f]) != int(batch.frame_indices[b, f]):
                            mismatched += 1
        stats = it.stats()
    dt = time.perf_counter() - t0
    print(
        f"batches: {n_batches}  clips: {stats.samples_delivered}  "
        f"frames: {stats.frames_delivered}  time: {dt:.2f} s"
    )
    print(
        f"throughput: {stats.frames_delivered / dt:.1f} frames/s "
        f"({stats.samples_delivered / dt:.1f} clips/s); frames decoded per frame delivered: "
        f"{stats.decoded_per_delivered:.2f}; the loop waited {stats.wait_time:.2f} s "
        f"({stats.wait_time_after_first:.2f} s after the first batch)"
    )
    if checked:
        print(
            f"frame check: {checked - mismatched}/{checked} frames are exactly the frame asked for"
        )
    return 0 if mismatched == 0 else 1

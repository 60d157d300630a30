"""The configurations ``tvl-async bench`` measures, in order: the baseline, tvl_async's
samplers at several lookaheads, the slow consumers, the sequential ceiling.

Plain data and arithmetic; no thread, nothing blocks.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from typing import Any

from tvl_async.cli.bench.videos import VideoSetSpec

REFERENCE = VideoSetSpec()
DEFAULT_LOOKAHEADS = ("1", "4096", "default", "16384")
DEFAULT_CHUNKS = (4, 8, 16)
SLOW_FACTOR = 1.5  # the slow consumer's time per batch, relative to the decoding's


@dataclass
class BenchConfig:
    """One configuration to measure (what the child process gets on stdin, with the files)."""

    name: str
    kind: str  # baseline | tvl | ceiling | torchcodec | decord
    sampling: str = "uniform"
    lookahead: int | None = None
    chunk_size: int = 8
    slow_consumer: str | None = None  # name of the configuration whose rate sets the pace
    consumer_seconds: float = 0.0  # sleep per batch (seconds) standing for a training step
    warmup: int = 1
    batches: int = 4
    options: dict[str, Any] = field(default_factory=dict)
    output: str = "float32"  # tvl_async's ProcessDesc output: float32 normalised, or uint8
    n_files: int | None = None  # only the first n files (the whole-epoch runs)
    epochs: int | None = None  # 1: one whole epoch, every sample timed from the start
    # local | disk (the local side of the --s3/--remote pair) | remote (the spec's
    # remote_files, read with its storage_options)
    source: str = "local"


def build_configs(
    args: argparse.Namespace,
    default_lookahead: int,
    default_threads: int,
    *,
    peers: tuple[str, ...] = (),
    epoch_frames: int = 0,
) -> list[BenchConfig]:
    """The configurations to run, in order (baseline first, ceiling last).

    Args:
        args: the bench options.
        default_lookahead: what ``Prefetcher(lookahead=None)`` picks for the workload.
        default_threads: the Prefetcher's default number of CPU decode threads.
        peers: the peer loaders that import here (``torchcodec``, ``decord``).
        epoch_frames: frames in the first ``args.epoch_files`` files (0: no whole-epoch runs).
    """
    threads = {"decode_threads": args.decode_threads, "ffmpeg_threads": args.ffmpeg_threads}
    auto = args.warmup is None
    warmup = 1 if auto else args.warmup

    def tvl_warmup(lookahead: int) -> int:
        # --past-window: the first lookahead window is the exact order's cold start (every GOP
        # it touches decoded for the first time); skip it and time the steady state after it
        return math.ceil(lookahead / args.batch_size) + 1 if args.past_window else warmup

    def tvl_batches(lookahead: int) -> int:
        # Decoding work comes in waves as the window turns over (each GOP is decoded for all
        # the window's samples in it); time at least one whole window to average over a wave,
        # unless --tvl-batches says how many.
        if args.tvl_batches is not None:
            return int(args.tvl_batches)
        n: int = args.batches
        return max(n, math.ceil(lookahead / args.batch_size)) if auto else n

    out = [
        BenchConfig(
            "baseline",
            "baseline",
            warmup=args.workers if auto else args.warmup,
            batches=args.batches,
            options={"workers": args.workers},
        )
    ]
    for peer in peers:
        out.append(
            BenchConfig(
                f"{peer} DataLoader",
                peer,
                warmup=args.workers if auto else args.warmup,
                batches=args.batches,
                options={"workers": args.workers},
            )
        )
    after = ", after its window" if args.past_window else ""
    for text in args.lookaheads.split(","):
        text = text.strip()
        la = default_lookahead if text == "default" else int(text)
        name = f"uniform L={la}" + (" (default)" if text == "default" else "") + after
        out.append(
            BenchConfig(
                name,
                "tvl",
                "uniform",
                lookahead=la,
                warmup=tvl_warmup(la),
                batches=tvl_batches(la),
                options=dict(threads),
            )
        )
    out.append(
        BenchConfig(
            f"uint8 out: uniform L={default_lookahead} (default){after}",
            "tvl",
            "uniform",
            lookahead=default_lookahead,
            warmup=tvl_warmup(default_lookahead),
            batches=tvl_batches(default_lookahead),
            options=dict(threads),
            output="uint8",
        )
    )
    # the first batch when only its own frames are decoded (lookahead = one batch): the least
    # decoding work a first batch can cost, through the same pipeline
    out.append(
        BenchConfig(
            f"first-batch minimum (L={args.batch_size})",
            "tvl",
            "uniform",
            lookahead=args.batch_size,
            warmup=1,
            batches=max(2, args.batches // 2),
            options=dict(threads),
        )
    )
    for k in (int(v) for v in args.chunks.split(",") if v.strip()):
        out.append(
            BenchConfig(
                f"chunked k={k}",
                "tvl",
                "chunked",
                lookahead=default_lookahead,
                chunk_size=k,
                warmup=tvl_warmup(default_lookahead),
                batches=tvl_batches(default_lookahead),
                options=dict(threads),
            )
        )
    out.append(
        BenchConfig(
            "gop_shuffle",
            "tvl",
            "gop_shuffle",
            lookahead=default_lookahead,
            warmup=tvl_warmup(default_lookahead),
            batches=tvl_batches(default_lookahead),
            options=dict(threads),
        )
    )
    if not args.no_slow:
        paced = {
            "uniform": next((c.name for c in out if "(default)" in c.name), None),
            "gop_shuffle": "gop_shuffle",
        }
        for sampling, pace in paced.items():
            if pace is not None and any(c.name == pace for c in out):
                # past the first window: its cold start is paid once (docs/benchmarks.md)
                batches = 4 * args.batches + (tvl_batches(default_lookahead) if auto else 0)
                out.append(
                    BenchConfig(
                        f"{sampling} slow consumer",
                        "tvl",
                        sampling,
                        lookahead=default_lookahead,
                        slow_consumer=pace,
                        warmup=1,
                        batches=batches,
                        options=dict(threads),
                    )
                )
    if getattr(args, "s3", False) or getattr(args, "remote", None):
        out += remote_pair(args, warmup, dict(threads))
    decode_threads = args.decode_threads or default_threads
    ff = args.ffmpeg_threads or max(1, (os.cpu_count() or 1) // max(decode_threads, 1))
    ceiling = {"decode_threads": decode_threads, "ffmpeg_threads": ff}
    epoch_batches = epoch_frames // args.batch_size
    if epoch_batches >= 2:
        n = args.epoch_files
        for sampling in ("uniform", "gop_shuffle"):
            out.append(
                BenchConfig(
                    f"epoch {sampling} ({n} files)",
                    "tvl",
                    sampling,
                    warmup=0,
                    batches=epoch_batches,
                    options=dict(threads),
                    n_files=n,
                    epochs=1,
                )
            )
        out.append(
            BenchConfig(
                f"epoch ceiling ({n} files)",
                "ceiling",
                warmup=0,
                batches=epoch_batches,
                options=dict(ceiling),
                n_files=n,
            )
        )
    out.append(
        BenchConfig(
            "ceiling",
            "ceiling",
            warmup=warmup,
            batches=tvl_batches(default_lookahead),
            options=ceiling,
        )
    )
    return out


def remote_pair(
    args: argparse.Namespace, warmup: int, options: dict[str, Any]
) -> list[BenchConfig]:
    """The default uniform configuration over the first ``--remote-files`` files, from local
    disk and from the remote store, one after the other (the same batches are timed)."""
    n = args.remote_files
    where = "S3 (local SeaweedFS)" if args.s3 else "remote"
    return [
        BenchConfig(
            f"{name} uniform ({n} files)",
            "tvl",
            "uniform",
            warmup=warmup,
            batches=args.batches,
            options=dict(options),
            n_files=n,
            source=source,
        )
        for name, source in (("local disk", "disk"), (where, "remote"))
    ]


def slow_consumer_seconds(results: list[dict[str, Any]], pace: str, batch_size: int) -> float:
    """1.5x the time per batch (seconds) of configuration ``pace`` (measured before, with a
    fast consumer); 1 s when it has no figure."""
    for r in results:
        if r.get("name") == pace and r.get("images_per_s"):
            return SLOW_FACTOR * batch_size / float(r["images_per_s"])
    return 1.0

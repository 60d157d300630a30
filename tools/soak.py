#!/usr/bin/env python3
"""Soak test: many epochs over a few hundred small videos; memory, files and threads stay flat.

Generates ``--unique`` small H.264 videos (frame ``i`` shows ``i``) and hard-links them up to
``--files`` paths (copies where hard links are not possible), then runs ``--epochs`` epochs
through :class:`tvl_async.Prefetcher` and prints, after each epoch, the process's
resident memory (RSS), open file descriptors and live threads. Two modes:

* ``per-epoch`` (default): a new Prefetcher per epoch, closed after it; between epochs no thread
  of ours may remain and the open files must return to the baseline.
* ``single``: one Prefetcher running every epoch; figures are taken at each epoch boundary
  (its service and decode threads are alive then) and once more after it closed.

Exit status 1 when RSS grows by more than ``--max-rss-growth`` MiB between the end of the
``--warmup``-th epoch and the last one, or when files or threads do not return to the baseline.
Not part of the default test suite (``tests/test_soak.py`` runs a short version).

Example::

    python tools/soak.py --files 300 --epochs 30 --batch-size 16 --check 4
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import tvl_async  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tvl_async import Batch, Prefetcher
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

MAX_OPEN_PER_THREAD = 16  # PyAVBackend's default max_open_files: containers kept open
OPEN_FILES_SLACK = 8  # descriptors FFmpeg or the index cache may hold for a moment


@dataclass
class EpochRecord:
    """Figures taken after one epoch (``epoch = -1``: the baseline before the first one)."""

    epoch: int
    batches: int
    samples: int
    skipped: int
    seconds: float
    rss_mib: float
    open_files: int
    threads: int


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_files() -> int:
    """Open file descriptors of this process (Linux ``/proc``)."""
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return threading.active_count()


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Without the trim, RSS keeps memory that glibc caches in its per-thread arenas (one per
    thread that ever allocated, up to 8 per core): after a run that creates threads, RSS grows
    in steps over the first epochs without any leak. Trimming measures what is really held.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS as it is
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def snapshot(epoch: int, batches: int, samples: int, skipped: int, seconds: float) -> EpochRecord:
    release_free_memory()
    return EpochRecord(
        epoch,
        batches,
        samples,
        skipped,
        round(seconds, 3),
        round(rss_mib(), 1),
        open_files(),
        threads(),
    )


def make_files(
    folder: Path, n_files: int, unique: int, n_frames: int, width: int, height: int
) -> list[Path]:
    """``unique`` encoded videos, hard-linked (or copied) up to ``n_files`` paths."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(min(unique, n_files)):
        p = folder / f"src_{k:03d}.mp4"
        if not p.exists():
            spec = VideoSpec(
                n_frames=n_frames + k % 3, width=width, height=height, gop=8, bframes=2, texture=0.3
            )
            write_video(p, spec)
        sources.append(p)
    paths = list(sources)
    for k in range(len(sources), n_files):
        p = folder / f"link_{k:04d}.mp4"
        if not p.exists():
            try:
                os.link(sources[k % len(sources)], p)
            except OSError:
                shutil.copyfile(sources[k % len(sources)], p)
        paths.append(p)
    return paths


def check_batch(batch: Batch) -> None:
    for clip, idx in zip(batch["default"], batch.frame_indices, strict=True):
        got = [frame_index_of(f) for f in clip]
        if got != idx.tolist():
            raise AssertionError(f"{batch.files}: wrong frames {got} for {idx.tolist()}")


def run_soak(
    files: list[Path],
    *,
    epochs: int,
    mode: str = "per-epoch",
    seq_len: int = 4,
    batch_size: int = 8,
    decode_threads: int = 2,
    check: int = 0,
    seed: int = 0,
    on_error: str = "raise",
    report: Callable[[EpochRecord], None] | None = None,
) -> list[EpochRecord]:
    """Run the soak and return one record per epoch, after the baseline (``epoch=-1``).

    ``check``: verify the pixels of the first ``check`` batches of every epoch. Blocks; runs in
    the calling thread (the Prefetcher's threads come and go).
    """
    report = report or (lambda r: None)  # noqa: ARG005 (report's signature)
    records = [snapshot(-1, 0, 0, 0, 0.0)]
    report(records[0])
    common: dict[str, Any] = {
        "seq_len": seq_len,
        "batch_size": batch_size,
        "decode_threads": decode_threads,
        "on_error": on_error,
    }
    if mode == "per-epoch":
        for epoch in range(epochs):
            t0 = time.perf_counter()
            batches = samples = 0
            with Prefetcher(files, seed=seed + epoch, **common) as it:
                for batch in it:
                    if batches < check:
                        check_batch(batch)
                    batches += 1
                    samples += batch.batch_size
                skipped = it.stats().samples_skipped
            records.append(snapshot(epoch, batches, samples, skipped, time.perf_counter() - t0))
            report(records[-1])
        return records
    if mode != "single":
        raise ValueError(f"Invalid mode ({mode}). Supported values are per-epoch, single")
    with Prefetcher(files, seed=seed, epochs=epochs, **common) as it:
        for epoch, batches, samples, seconds in _per_epoch(it, check):
            records.append(snapshot(epoch, batches, samples, it.stats().samples_skipped, seconds))
            report(records[-1])
    records.append(snapshot(epochs, 0, 0, 0, 0.0))  # after close
    report(records[-1])
    return records


def _per_epoch(it: Prefetcher, check: int) -> Iterator[tuple[int, int, int, float]]:
    epoch, batches, samples, t0 = 0, 0, 0, time.perf_counter()
    for batch in it:
        if batch.epoch != epoch:
            yield epoch, batches, samples, time.perf_counter() - t0
            epoch, batches, samples, t0 = batch.epoch, 0, 0, time.perf_counter()
        if batches < check:
            check_batch(batch)
        batches += 1
        samples += batch.batch_size
    yield epoch, batches, samples, time.perf_counter() - t0


def verdict(
    records: list[EpochRecord],
    *,
    warmup: int,
    max_rss_growth: float,
    mode: str = "per-epoch",
    decode_threads: int = 2,
) -> list[str]:
    """Problems found in ``records`` (empty: flat)."""
    base = records[0]
    problems = []
    epochs = [r for r in records if r.epoch >= 0]
    ref = epochs[min(warmup, len(epochs)) - 1] if warmup > 0 else base
    last = records[-1]
    growth = last.rss_mib - ref.rss_mib
    if growth > max_rss_growth:
        problems.append(
            f"RSS grew by {growth:.1f} MiB after the warm-up (from epoch "
            f"{ref.epoch} to {last.epoch}), more than {max_rss_growth:g} MiB"
        )
    checked = epochs if mode == "per-epoch" else [last]
    for r in checked:
        if r.open_files > base.open_files:
            problems.append(
                f"epoch {r.epoch}: {r.open_files - base.open_files} more open "
                f"file(s) than at the start"
            )
        if r.threads > base.threads:
            problems.append(
                f"epoch {r.epoch}: {r.threads - base.threads} more thread(s) than at the start"
            )
    if mode == "single":
        # Epoch boundaries while it runs (the last epoch ends after the Prefetcher closed): the
        # threads are the same; the open files vary with what the decoders' caches of open
        # containers hold (MAX_OPEN_PER_THREAD each) but stay under that bound.
        middle = [r for r in epochs if r.epoch < last.epoch - 1]
        if len({r.threads for r in middle}) > 1:
            problems.append(
                "threads changed from epoch to epoch: " + ", ".join(str(r.threads) for r in middle)
            )
        bound = base.open_files + decode_threads * MAX_OPEN_PER_THREAD + OPEN_FILES_SLACK
        for r in middle:
            if r.open_files > bound:
                problems.append(
                    f"epoch {r.epoch}: {r.open_files} open files, more than the {bound} that "
                    f"{decode_threads} decode thread(s) may hold"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="video paths (default 300)")
    parser.add_argument(
        "--unique",
        type=int,
        default=12,
        help="distinct encodes; the other paths are hard links (default 12)",
    )
    parser.add_argument("--frames", type=int, default=24, help="frames per video (default 24)")
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT (default 64x48)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mode", choices=["per-epoch", "single"], default="per-epoch")
    parser.add_argument("--seq-len", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument(
        "--check",
        type=int,
        default=2,
        help="batches per epoch whose pixels are verified (default 2)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="epochs before RSS is expected to be flat (default 2)"
    )
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=64.0,
        help="MiB of RSS growth allowed after the warm-up (default 64)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where to write the videos (default: a temporary folder, removed)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the records here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="tvl-soak-")
    folder = args.dir or Path(tmp.name)  # type: ignore[union-attr]
    try:
        t0 = time.perf_counter()
        files = make_files(folder, args.files, args.unique, args.frames, width, height)
        print(
            f"{len(files)} files in {folder} ({args.unique} encodes) ready in "
            f"{time.perf_counter() - t0:.1f} s; mode {args.mode}",
            flush=True,
        )

        def report(r: EpochRecord) -> None:
            label = "start" if r.epoch < 0 else ("closed" if r.batches == 0 else f"{r.epoch:5d}")
            print(
                f"epoch {label:>6}  batches {r.batches:5d}  samples {r.samples:6d}  "
                f"skipped {r.skipped:3d}  {r.seconds:7.2f} s  rss {r.rss_mib:8.1f} MiB  "
                f"open files {r.open_files:4d}  threads {r.threads:3d}",
                flush=True,
            )

        records = run_soak(
            files,
            epochs=args.epochs,
            mode=args.mode,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            decode_threads=args.decode_threads,
            check=args.check,
            report=report,
        )
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in records], indent=1))
        problems = verdict(
            records,
            warmup=args.warmup,
            max_rss_growth=args.max_rss_growth,
            mode=args.mode,
            decode_threads=args.decode_threads,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("OK: memory, open files and threads stayed flat")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU scaling of PyAV decoding: decode threads x FFmpeg threads, on this machine.

Measures, for each combination of Python decode threads (each with its own decoder, as the
Prefetcher's ``decode_threads``) and FFmpeg threads per decoder (``ffmpeg_threads``, with an
FFmpeg ``thread_type``):

* ``sequential``: every frame of a file in order, converted to RGB (the sequential ceiling's
  work);
* ``gop``: the planner's job shape for random access: seek to a random GOP of a random file and
  decode up to the last of ``--per-gop`` random frames of it, converting those to RGB (plain
  PyAV, one open file per path and thread, as the Prefetcher's decoders keep them).

Each combination runs for ``--seconds`` of wall time per round; rounds go through the
combinations in a different order each time, so that a change in the machine's load (it is
shared) hits every combination alike. Figures are frames decoded per second of wall time, all
threads together. Run: ``python tools/bench_readers.py [FOLDER] [--seconds 6] [--rounds 2]``
(default folder: the bench's reference set, written if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tvl_async import load_index

#: (decode threads, FFmpeg threads per decoder, FFmpeg thread_type)
COMBOS: tuple[tuple[int, int, str], ...] = (
    (1, 1, "NONE"),
    (1, 2, "FRAME"),
    (1, 2, "SLICE"),
    (1, 2, "AUTO"),
    (2, 1, "NONE"),
    (2, 2, "AUTO"),
    (4, 1, "NONE"),
)


def _sequential(
    files: list[str], stop: threading.Event, threads: int, kind: str, counter: list[int], k: int
) -> None:
    i = k
    while not stop.is_set():
        with av.open(files[i % len(files)]) as c:
            s = c.streams.video[0]
            s.thread_type = kind
            s.codec_context.thread_count = threads
            for frame in c.decode(s):
                frame.to_ndarray(format="rgb24")
                counter[k] += 1
                if stop.is_set():
                    break
        i += 7


def _gop(
    files: list[str],
    stop: threading.Event,
    threads: int,
    kind: str,
    counter: list[int],
    k: int,
    per_gop: int,
) -> None:
    rng = random.Random(k)
    containers: dict[str, Any] = {}  # one open file per path, as a decoder keeps them
    try:
        while not stop.is_set():
            index = load_index(files[rng.randrange(len(files))])
            key = rng.randrange(index.n_keys)
            frames = index.gop_frames(key).tolist()
            wanted = {int(index.pts[i]) for i in rng.sample(frames, min(per_gop, len(frames)))}
            counter[k] += _decode_gop(
                containers, index.path, int(index.key_pts[key]), wanted, threads, kind
            )
    finally:
        for c in containers.values():
            c.close()


def _decode_gop(
    containers: dict[str, Any], path: str, key_pts: int, wanted: set[int], threads: int, kind: str
) -> int:
    """Seek to the keyframe at ``key_pts`` and decode until every frame whose pts is in
    ``wanted`` has been converted to RGB; returns the frames decoded."""
    c = containers.get(path)
    if c is None:
        c = containers[path] = av.open(path)
        s = c.streams.video[0]
        s.thread_type = kind
        s.codec_context.thread_count = threads
    s = c.streams.video[0]
    c.seek(key_pts, stream=s, backward=True, any_frame=False)
    left, decoded = set(wanted), 0
    for frame in c.decode(s):
        decoded += 1
        if frame.pts in left:
            frame.to_ndarray(format="rgb24")
            left.discard(frame.pts)
            if not left:
                break
    return decoded


def measure(
    files: list[str], workload: str, combo: tuple[int, int, str], seconds: float, per_gop: int
) -> tuple[float, float]:
    """Frames decoded per second of wall time with ``combo``, all threads together, and per
    second of CPU time of this process (all its threads)."""
    n_threads, ff_threads, kind = combo
    stop = threading.Event()
    counter = [0] * n_threads
    if workload == "sequential":
        target: Any = _sequential
        extra: tuple[Any, ...] = ()
    else:
        target, extra = _gop, (per_gop,)
    workers = [
        threading.Thread(target=target, args=(files, stop, ff_threads, kind, counter, k, *extra))
        for k in range(n_threads)
    ]
    t0 = time.perf_counter()
    c0 = time.process_time()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    done = sum(counter)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    for w in workers:
        w.join()
    return done / elapsed, done / max(cpu, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="videos (default: the bench's reference set)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per combination and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--per-gop",
        type=int,
        default=4,
        help="random frames wanted per GOP in the gop workload (default 4)",
    )
    parser.add_argument("--workloads", default="sequential,gop")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.folder:
        files = sorted(str(p) for p in Path(args.folder).rglob("*.mp4"))
    else:
        from tvl_async.cli.bench.videos import VideoSetSpec, make_bench_videos

        files = [str(p) for p in make_bench_videos(VideoSetSpec())]
    for f in files:
        load_index(f)
    results: dict[str, dict[str, list[float]]] = {}
    per_cpu: dict[str, dict[str, list[float]]] = {}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        order = list(COMBOS) if rnd % 2 == 0 else list(reversed(COMBOS))
        for workload in args.workloads.split(","):
            for combo in order:
                rate, cpu_rate = measure(files, workload, combo, args.seconds, args.per_gop)
                name = f"{combo[0]} decode x {combo[1]} ffmpeg {combo[2]}"
                results.setdefault(workload, {}).setdefault(name, []).append(rate)
                per_cpu.setdefault(workload, {}).setdefault(name, []).append(cpu_rate)
                print(
                    f"round {rnd} {workload:10s} {name:28s} {rate:7.1f} frames/s  "
                    f"{cpu_rate:6.1f} per CPU-s (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    print(f"\ncpu count {os.cpu_count()}, load before {load_before}, after {os.getloadavg()}")
    for workload, rows in results.items():
        best = max(sum(v) / len(v) for v in rows.values())
        print(
            f"\n{workload}: frames/s of wall time (mean of rounds), relative to the best; "
            f"frames per CPU-second"
        )
        for name, values in rows.items():
            mean = sum(values) / len(values)
            cpu_values = per_cpu[workload][name]
            print(
                f"  {name:28s} {mean:7.1f}  {mean / best:5.2f}  "
                f"{sum(cpu_values) / len(cpu_values):7.1f}"
            )
    if args.json:
        report = {
            "results": results,
            "per_cpu_second": per_cpu,
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        }
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

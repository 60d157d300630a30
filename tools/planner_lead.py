"""How far ahead the planner should send decode jobs: fast and slow consumers, exact uniform order.

The planner sends a job for a sample at most ``lookahead // LEAD_FRACTION`` samples before it is
due, with every sample of its GOPs in the window ahead of it (``tvl_async/_planning.py``). This
tool runs the reference workload (uniform random single frames, RandomResizedCrop 224 + jitter)
on a smaller set (40 files of 640x360 H.264, 10 s, a keyframe every 60 frames; 4 distinct videos)
for each lead fraction given, with a consumer that takes batches as fast as they come and one that
sleeps ``--slow`` times the fast one's steady time per batch, and prints per run: steady seconds
per batch and frames decoded per frame delivered (both after the first window), the consumer's
wait after the first batch and after the first window. The fraction is the planner's
``TVL_ASYNC_LEAD_FRACTION``, read once at import: each fraction runs in a child process of
this script with the variable set (only public names are imported).

    python tools/planner_lead.py                       # fractions 2, 8, 32; lookahead 1400
    python tools/planner_lead.py --fractions 8 --lookahead 700

Blocks for a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tvl_async.cli.bench.videos import VideoSetSpec, make_bench_videos
from tvl_async.cli.bench.workloads import run_tvl

BATCH = 32
ENV = "TVL_ASYNC_LEAD_FRACTION"


def measure(files: list[str], fraction: int, lookahead: int, consumer_s: float) -> dict[str, Any]:
    """One run of ``2 * lookahead / BATCH + 10`` batches; the planner's lead fraction is
    ``fraction`` (this process runs with ``TVL_ASYNC_LEAD_FRACTION`` set to it)."""
    if os.environ.get(ENV) != str(fraction):
        raise RuntimeError(f"run with {ENV}={fraction} (main() does)")
    n_batches = 2 * (lookahead // BATCH) + 10
    run = run_tvl(
        files,
        batch_size=BATCH,
        n_batches=n_batches,
        crop=224,
        seed=0,
        sampling="uniform",
        lookahead=lookahead,
        chunk_size=8,
        decode_threads=None,
        ffmpeg_threads=None,
        memory_budget=None,
        device="cpu",
        consumer_seconds=consumer_s,
        on_batch=lambda: None,
    )
    window = lookahead // BATCH
    steady = n_batches - 1 - window
    waits = run.extra["waits_s"]
    decoded = run.frames_decoded_at[-1] - run.frames_decoded_at[window]
    return {
        "fraction": fraction,
        "consumer_s": round(consumer_s, 3),
        "s_per_batch": round((run.arrivals[-1] - run.arrivals[window]) / steady, 3),
        "decoded_per_delivered": round(decoded / (steady * BATCH), 2),
        "wait_after_first_s": round(sum(waits[1:]), 2),
        "wait_after_window_s": round(sum(waits[window + 1 :]), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fractions", default="2,8,32", help="lead fractions to compare")
    p.add_argument("--lookahead", type=int, default=1400, help="samples planned ahead")
    p.add_argument(
        "--slow", type=float, default=1.5, help="slow consumer's time per batch over the fast one's"
    )
    p.add_argument("--videos", default="/tmp/tvl-planner-lead", help="where the set is written")
    args = p.parse_args(argv)
    spec = VideoSetSpec(files=40, seconds=10, width=640, height=360, fps=30, gop=60, distinct=4)
    files = [str(f) for f in make_bench_videos(spec, Path(args.videos))]
    fractions = [int(v) for v in args.fractions.split(",")]
    if len(fractions) > 1 or os.environ.get(ENV) != str(fractions[0]):
        for fraction in fractions:  # one child per fraction, the variable set before import
            child = [
                sys.executable,
                __file__,
                *(sys.argv[1:] if argv is None else argv),
                f"--fractions={fraction}",
            ]
            subprocess.run(child, env={**os.environ, ENV: str(fraction)}, check=True)
        return 0
    for fraction in fractions:
        fast = measure(files, fraction, args.lookahead, 0.0)
        slow = measure(files, fraction, args.lookahead, args.slow * fast["s_per_batch"])
        for row in (fast, slow):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two commits of tvl_async on one workload, alternating, in one run: did a change cost speed?

Each commit is checked out into a temporary git worktree and measured in a fresh process that
imports that checkout (``PYTHONPATH``) and uses only the public API both have: a ``Prefetcher``
over the bench's reference set (written by ``tvl-async bench`` into the cache on first use),
uniformly random single frames, batches of 128, ``ProcessDesc(width=224, height=224,
random_resized_crop=(0.08, 1.0))`` (uint8, as docs/benchmarks.md's figures before the float32
rows), a fixed ``lookahead``, one warm-up batch and ``--batches`` timed ones. The runs alternate
old, new, old, new... so that a change in the machine's load falls on both.

    python tools/compare_commits.py 0c37b51 HEAD        # 2 rounds, uniform + gop_shuffle
    python tools/compare_commits.py 0c37b51 HEAD --rounds 3 --samplings uniform --lookahead 4096

Blocks for many minutes (each run decodes 1080p video on the CPU); prints one JSON line per run
and a table of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import tvl_async
from tvl_async.cli.bench.videos import VideoSetSpec, make_bench_videos
args = json.loads(sys.argv[1])
files = [str(f) for f in make_bench_videos(VideoSetSpec())][: args["files"]]
desc = tvl_async.ProcessDesc(width=224, height=224, random_resized_crop=(0.08, 1.0))
t0 = time.perf_counter()
with tvl_async.Prefetcher(files, seq_len=1, batch_size=128, sampling=args["sampling"],
                          lookahead=args["lookahead"], seed=0, drop_last=True,
                          processing=desc) as it:
    arrivals = []
    for _, batch in zip(range(args["batches"] + 1), it):
        _ = batch["default"].sum()
        arrivals.append(time.perf_counter())
    decoded = it.stats().frames_decoded
timed = arrivals[-1] - arrivals[0]
print(json.dumps({"images_per_s": 128 * args["batches"] / timed,
                  "first_batch_s": arrivals[0] - t0, "frames_decoded": decoded}))
"""


def _bench_module(checkout: Path) -> str:
    """Where the checkout keeps its bench video set writer (moved by the house refactor)."""
    if (checkout / "tvl_async" / "cli" / "bench" / "videos.py").exists():
        return "tvl_async.cli.bench.videos"
    return "tvl_async._bench_videos"


def run_once(checkout: Path, sampling: str, lookahead: int, batches: int, files: int) -> dict:
    """One measurement in a fresh process importing ``checkout``; blocks."""
    code = CHILD.replace("tvl_async.cli.bench.videos", _bench_module(checkout))
    spec = {"sampling": sampling, "lookahead": lookahead, "batches": batches, "files": files}
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--samplings", default="uniform,gop_shuffle")
    p.add_argument("--lookahead", type=int, default=4096)
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--files", type=int, default=200)
    args = p.parse_args()
    repo = Path(__file__).resolve().parents[1]
    rows: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name in (args.old, args.new):
            tree = Path(tmp) / name.replace("/", "_")
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), name],
                check=True,
                capture_output=True,
            )
            trees[name] = tree
        try:
            for round_ in range(args.rounds):
                for sampling in args.samplings.split(","):
                    for name in (args.old, args.new):
                        r = run_once(
                            trees[name], sampling, args.lookahead, args.batches, args.files
                        )
                        r |= {"commit": name, "sampling": sampling, "round": round_}
                        r["load"] = os.getloadavg()[0]
                        print(json.dumps(r), flush=True)
                        rows.setdefault((sampling, name), []).append(r["images_per_s"])
        finally:
            for tree in trees.values():
                subprocess.run(
                    ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
    print(f"\n| sampling | {args.old} images/s | {args.new} images/s | new / old |")
    print("| --- | ---: | ---: | ---: |")
    for sampling in args.samplings.split(","):
        old = statistics.median(rows[(sampling, args.old)])
        new = statistics.median(rows[(sampling, args.new)])
        print(f"| {sampling} (L={args.lookahead}) | {old:.1f} | {new:.1f} | {new / old:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

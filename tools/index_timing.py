"""Time indexing a folder twice: cold (scan every file) and warm (index cache hits).

Usage: python tools/index_timing.py [--files 200] [--dir DIR]
Writes 4 distinct 640x360 10 s H.264 videos and hard-links them into ``--files`` names.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tvl_async import load_index
from tvl_async.cli.synthetic import VideoSpec, write_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="tvl-index-timing-"))
    src = []
    for k in range(4):
        p = root / f"src_{k}.mp4"
        if not p.exists():
            write_video(
                p,
                VideoSpec(
                    n_frames=300, width=640, height=360, fps=30, gop=60, texture=0.5, start_pts=k
                ),
            )
        src.append(p)
    files = []
    for i in range(args.files):
        p = root / "set" / f"v{i:03d}.mp4"
        p.parent.mkdir(exist_ok=True)
        if not p.exists():
            os.link(src[i % 4], p)
        files.append(p)
    os.environ["TVL_ASYNC_CACHE"] = str(root / "cache")
    for label in ("first open (scan)", "second open (cache)"):
        t0 = time.perf_counter()
        frames = sum(load_index(p).n_frames for p in files)
        dt = time.perf_counter() - t0
        print(
            f"{label:20s} {len(files)} files, {frames} frames: {dt:.3f} s "
            f"({1000 * dt / len(files):.2f} ms per file)"
        )


if __name__ == "__main__":
    main()

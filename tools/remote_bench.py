"""Local disk against a local S3 server (SeaweedFS), same files, same run: a thin wrapper over
``tvl-async bench --s3`` with the settings of the remote-sources measurement.

    python tools/remote_bench.py [FOLDER] [--files 8] [--batches 6] [--batch-size 32]

runs ``python -m tvl_async.cli.main bench [FOLDER] --s3 --remote-files FILES --only
"local disk,S3" ...`` on a generated 640x360 H.264 set (30 fps, 10 s, a keyframe every 30
frames) unless FOLDER is given: uniformly random single frames with the bench's reference
processing, read from the local files and from ``s3://`` in fresh processes, and prints
images/s, bytes read per sample and the compressed bytes of the GOP data decoded per sample
(frames decoded times the files' mean bytes per frame), whose ratio the remote issue bounds by 2.
Blocks for the whole run (about a minute per configuration on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from tvl_async.cli.bench.command import main as bench_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="videos (default: generated)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvl-remote-bench-") as tmp:
        argv = [*([args.folder] if args.folder else []), "--files", str(args.files)]
        argv += ["--size", "640x360", "--seconds", "10", "--fps", "30", "--gop", "30"]
        argv += ["--batches", str(args.batches), "--batch-size", str(args.batch_size)]
        argv += ["--lookaheads", "default", "--chunks", "", "--no-slow", "--epoch-files", "0"]
        argv += ["--only", "local disk,S3", "--s3", "--remote-files", str(args.files)]
        argv += ["--cache-dir", tmp, "--quiet"]
        return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())

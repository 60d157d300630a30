"""``tvl-async bench``, the parent side: write or find the videos, run every configuration in a
fresh child process (:mod:`tvl_async.cli.bench.child`) with a tqdm bar over all their batches,
and gather the report.

With no folder it writes the reference set into a cache folder (``<index cache>/bench-videos``):
200 files of 1920x1080 H.264, 30 fps, 10 s, a keyframe every 60 frames (4 distinct videos, the
rest hard links). Reference workload: uniformly random single frames, batches of 128, a
RandomResizedCrop to 224x224 and a ColorJitter (:mod:`tvl_async.cli.bench.workloads`).

Configurations (:mod:`tvl_async.cli.bench.configs`), each measured in its own process so that
peak RSS is its own:

* ``baseline``: torch DataLoader, 2 worker processes, per item: open, seek, decode, RGB, crop,
  jitter;
* ``uniform L=...``: tvl_async, exact uniform order, at several lookaheads;
* ``chunked k=...``, ``gop_shuffle``: the relaxed samplers (docs/sampling.md);
* ``... slow consumer``: the default uniform and the gop_shuffle configurations again, with a
  consumer that takes 1.5x the time per batch that the fast consumer's run took: it should never
  wait after the first batch (uniform: see docs/benchmarks.md on the first window);
* ``ceiling``: every frame in file order, same processing, no planner.

Timing: images/s counts the batches after a warm-up (one batch; for the baseline, one per
DataLoader worker, since its workers each build a whole batch at once). tvl_async decodes in
waves as its lookahead window turns over (each GOP once for all the window's samples in it), so
its timed part covers at least one window (``max(--batches, lookahead / batch size)`` batches):
a steady-state rate, not the draining of a buffer filled before the clock started. Blocking:
everything runs in the calling thread and its child processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tvl_async import Prefetcher, find_videos, load_index
from tvl_async.cli._common import parse_size, progress_bar
from tvl_async.cli.bench.child import PROGRESS, RESULT
from tvl_async.cli.bench.configs import build_configs, slow_consumer_seconds
from tvl_async.cli.bench.loaders import PEERS, peer_unavailable
from tvl_async.cli.bench.videos import VideoSetSpec, default_bench_dir, make_bench_videos
from tvl_async.cli.bench.workloads import CROP_SCALE, JITTER, output_desc
from tvl_async.cli.probe import random_access_cost
from tvl_async.cli.s3server import SeaweedS3


def run_config(spec: dict[str, Any], on_progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run one configuration in a fresh ``python -m tvl_async.cli.bench.child`` process.

    Blocks until it exits; ``on_progress(done, total)`` is called after each of its batches.
    A failed child gives ``{"name", "kind", "error"}`` with the end of its stderr.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvl_async.cli.bench.child"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    err_lines: list[str] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith(PROGRESS):
            done, total = (int(v) for v in line[len(PROGRESS) :].split())
            on_progress(done, total)
        elif line.startswith(RESULT):
            result = json.loads(line[len(RESULT) :])
    code = proc.wait()
    drain.join(5.0)
    if code != 0 or result is None:
        tail = "".join(err_lines[-20:]).strip()
        return {
            "name": spec["config"]["name"],
            "kind": spec["config"]["kind"],
            "error": f"exit code {code}: {tail[-2000:]}",
        }
    return result


def library_defaults(files: list[str], crop: int, memory_budget: int | None) -> tuple[int, int]:
    """``(lookahead, decode_threads)`` that ``Prefetcher`` picks for the reference workload on
    the CPU (read from a Prefetcher that is never started)."""
    kwargs: dict[str, Any] = {} if memory_budget is None else {"memory_budget": memory_budget}
    p = Prefetcher(
        files,
        seq_len=1,
        batch_size=1,
        epochs=1,
        processing=output_desc(crop, "float32"),
        **kwargs,
    )
    try:
        return p.lookahead, p.decode_threads
    finally:
        p.close()


def machine() -> dict[str, Any]:
    """CPU model and count, memory (GiB), Python, torch, PyAV and FFmpeg versions, platform."""
    import av
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "platform": platform.platform(),
    }


def _videos(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[list[str], dict[str, Any]]:
    """The files to measure and what the report says of them (writes the set when needed)."""
    if args.folder:
        return [str(p) for p in find_videos([args.folder])], {"folder": str(args.folder)}
    width, height = parse_size(args.size)
    spec = VideoSetSpec(
        files=args.files,
        seconds=args.seconds,
        width=width,
        height=height,
        fps=args.fps,
        gop=args.gop,
    )
    root = Path(args.cache_dir) if args.cache_dir else default_bench_dir()

    def encoding(k: int, n: int) -> None:
        say(
            f"bench: encoding distinct video {k + 1}/{n} ({spec.width}x{spec.height}, "
            f"{spec.n_frames} frames) into {root / spec.tag} ..."
        )

    files = [str(p) for p in make_bench_videos(spec, root, on_encode=encoding)]
    return files, asdict(spec) | {"folder": str(root / spec.tag)}


def _remote_files(
    args: argparse.Namespace, files: list[str], stack: contextlib.ExitStack
) -> dict[str, Any]:
    """With ``--s3`` or ``--remote``: the remote URLs of the first ``--remote-files`` files and
    their storage options, indexed once here (the cache), for the spec; ``{}`` otherwise.
    ``--s3`` starts SeaweedFS on 127.0.0.1 (stopped when ``stack`` closes) and uploads them."""
    if not (args.s3 or args.remote):
        return {}
    n = args.remote_files = min(args.remote_files, len(files))
    if args.s3:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tvl-bench-s3-")))
        store = SeaweedS3(tmp / "weed", bucket="bench")
        stack.callback(store.stop)
        urls = [
            store.upload(Path(f), f"set/{k:04d}-{Path(f).name}") for k, f in enumerate(files[:n])
        ]
        options: dict[str, Any] | None = store.options
        where = "s3://bench/set/ on SeaweedFS (weed server -s3) at 127.0.0.1"
    else:
        urls = [f"{args.remote.rstrip('/')}/{Path(f).name}" for f in files[:n]]
        options, where = args.storage_options, args.remote
    Prefetcher(urls, storage_options=options).close()  # index them (and fail early) here
    local = [load_index(f) for f in files[:n]]
    mean_packet = sum(ix.file_size for ix in local) / sum(ix.n_frames for ix in local)
    return {
        "remote_files": urls,
        "storage_options": options,
        "mean_packet_bytes": mean_packet,
        "remote_where": where,
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Write/find the videos, run every configuration, return the report (blocks)."""
    with contextlib.ExitStack() as stack:
        return _run_bench(args, stack)


def _run_bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)

    files, videos = _videos(args, say)
    indexes = [load_index(f) for f in files]  # builds the index cache once, before any timing
    videos |= {"n_files": len(files), "n_frames": sum(ix.n_frames for ix in indexes)}
    default_la, default_threads = library_defaults(files, args.crop, args.memory_budget)
    missing = {p: peer_unavailable(p) for p in PEERS}
    peers = tuple(p for p, why in missing.items() if why is None)
    n_epoch = min(args.epoch_files, len(files))
    args.epoch_files = n_epoch
    epoch_frames = sum(ix.n_frames for ix in indexes[:n_epoch])
    configs = build_configs(
        args, default_la, default_threads, peers=peers, epoch_frames=epoch_frames
    )
    if args.only:
        wanted = [v.strip() for v in args.only.split(",")]
        configs = [c for c in configs if any(c.name.startswith(w) for w in wanted)]
    # frames a seek-and-decode reader decodes per random frame (the baseline cannot count them)
    baseline_cost = random_access_cost(np.concatenate([ix.gop_lengths() for ix in indexes]))
    base_spec = {
        "files": files,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "seed": args.seed,
        "device": args.device,
        "baseline_decoded_per_frame": baseline_cost,
    }
    remote = _remote_files(args, files, stack)
    base_spec |= remote
    if args.memory_budget is not None:
        for c in configs:
            if c.kind == "tvl":
                c.options["memory_budget"] = args.memory_budget
    results: list[dict[str, Any]] = []
    bar = progress_bar(
        total=sum(c.warmup + c.batches for c in configs),
        desc="bench",
        unit="batch",
        enabled=not args.quiet,
    )
    done_before = 0
    for cfg in configs:
        if cfg.slow_consumer:
            cfg.consumer_seconds = slow_consumer_seconds(
                results, cfg.slow_consumer, args.batch_size
            )
        bar.set_description(cfg.name)
        load_before = list(os.getloadavg())

        def on_progress(done: int, total: int, base: int = done_before) -> None:  # noqa: ARG001
            bar.update(base + done - bar.n)

        r = run_config(base_spec | {"config": asdict(cfg)}, on_progress)
        r["load_before"] = load_before
        r["load_after"] = list(os.getloadavg())
        results.append(r)
        done_before += cfg.warmup + cfg.batches
        bar.update(done_before - bar.n)
        if "error" in r:
            say(f"bench: {cfg.name} failed: {r['error']}")
    bar.close()
    _ratios(results)
    return {
        "machine": machine(),
        "videos": videos,
        "workload": {
            "seq_len": 1,
            "batch_size": args.batch_size,
            "crop": args.crop,
            "random_resized_crop": list(CROP_SCALE),
            "color_jitter": JITTER,
            "device": args.device,
            "default_lookahead": default_la,
            "decode_threads": args.decode_threads or default_threads,
            "baseline_workers": args.workers,
            "output": "float32 normalised to [0, 1] (configurations named 'uint8 out': uint8)",
            "baseline_thread_type": "AUTO",
            "peers_unavailable": {p: why for p, why in missing.items() if why is not None},
            "epoch_files": n_epoch,
            "epoch_frames": epoch_frames,
        },
        "command": "tvl-async bench " + " ".join(args.argv),
        "remote": {"where": remote["remote_where"], "files": args.remote_files} if remote else None,
        "results": results,
    }


def _ratios(results: list[dict[str, Any]]) -> None:
    """Add ``vs_baseline`` and ``vs_ceiling`` (images/s ratios, same run; None without both
    figures). Whole-epoch runs compare with the ceiling over the same files."""
    ok = [r for r in results if "error" not in r]
    base = next((r for r in ok if r.get("kind") == "baseline"), None)
    ceil = next((r for r in ok if r["name"] == "ceiling"), None)
    epoch_ceil = next((r for r in ok if r["name"].startswith("epoch ceiling")), None)
    for r in results:
        rate = r.get("images_per_s")
        ref = epoch_ceil if r.get("name", "").startswith("epoch ") else ceil
        r["vs_baseline"] = rate / base["images_per_s"] if rate and base else None
        r["vs_ceiling"] = rate / ref["images_per_s"] if rate and ref else None

"""The child side of ``tvl-async bench``: one configuration measured in a fresh process
(``python -m tvl_async.cli.bench.child``, the spec as JSON on stdin), so that peak RSS is its own.

The child prints ``@progress DONE TOTAL`` after each batch and ``@result {json}`` at the end on
stdout. Everything runs in the child's main thread, plus one RSS sampling thread.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import threading
import time
from typing import Any

from tvl_async.cli.bench.configs import BenchConfig

RESULT = "@result "
PROGRESS = "@progress "


class RssSampler:
    """Peak of the summed RSS of this process and its descendants, sampled every 0.25 s
    (Linux /proc; 0 elsewhere), in a thread of its own until :meth:`stop`."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-rss")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_kb = max(self.peak_kb, tree_rss_kb(os.getpid()))

    def stop(self) -> int:
        """Stop sampling (joins the thread, at most 1 s); returns the peak in kB."""
        self._stop.set()
        self._thread.join(1.0)
        self.peak_kb = max(self.peak_kb, tree_rss_kb(os.getpid()))
        return self.peak_kb


def tree_rss_kb(pid: int) -> int:
    """Summed VmRSS (kB) of ``pid`` and its descendants; 0 where /proc is missing."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process; returns its figures. Blocks."""
    from tvl_async.cli.bench import loaders
    from tvl_async.cli.bench import workloads as w

    cfg = BenchConfig(**spec["config"])
    files: list[str] = spec["remote_files"] if cfg.source == "remote" else spec["files"]
    files = files[: cfg.n_files] if cfg.n_files else files
    common = {
        "batch_size": spec["batch_size"],
        "crop": spec["crop"],
        "seed": spec["seed"],
        "device": spec["device"],
    }
    total = cfg.warmup + cfg.batches
    done = [0]

    def on_batch() -> None:
        done[0] += 1
        print(f"{PROGRESS}{done[0]} {total}", flush=True)

    sampler = RssSampler()
    t0 = time.perf_counter()
    if cfg.kind == "baseline":
        run = loaders.run_baseline(
            files,
            n_batches=total,
            workers=cfg.options.get("workers", 2),
            on_batch=on_batch,
            **common,
        )
    elif cfg.kind in loaders.PEERS:
        run = loaders.run_peer(
            cfg.kind,
            files,
            n_batches=total,
            workers=cfg.options.get("workers", 2),
            on_batch=on_batch,
            **common,
        )
    elif cfg.kind == "ceiling":
        run = w.run_ceiling(
            files,
            n_batches=total,
            on_batch=on_batch,
            decode_threads=cfg.options["decode_threads"],
            ffmpeg_threads=cfg.options["ffmpeg_threads"],
            **common,
        )
    else:
        run = w.run_tvl(
            files,
            n_batches=total,
            sampling=cfg.sampling,
            lookahead=cfg.lookahead,
            chunk_size=cfg.chunk_size,
            on_batch=on_batch,
            decode_threads=cfg.options.get("decode_threads"),
            ffmpeg_threads=cfg.options.get("ffmpeg_threads"),
            memory_budget=cfg.options.get("memory_budget"),
            consumer_seconds=cfg.consumer_seconds,
            output=cfg.output,
            epochs=cfg.epochs,
            storage_options=spec.get("storage_options") if cfg.source == "remote" else None,
            **common,
        )
    tree_kb = sampler.stop()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    arrivals = run.arrivals
    # warmup 0 (whole epochs): timed from the start, loader construction included
    start = arrivals[cfg.warmup - 1] if cfg.warmup else run.started
    timed = arrivals[-1] - start
    images = cfg.batches * spec["batch_size"]
    out: dict[str, Any] = {
        "name": cfg.name,
        "kind": cfg.kind,
        "sampling": cfg.sampling,
        "images_per_s": images / timed if timed > 0 else float("nan"),
        "timed_s": timed,
        "timed_batches": cfg.batches,
        "warmup_batches": cfg.warmup,
        "first_batch_s": arrivals[0] - t0,
        "output": cfg.output if cfg.kind == "tvl" else "float32",
        "n_files": len(files),
        "total_s": arrivals[-1] - t0,
        "peak_rss_mb": (own + children) / 1024,
        "peak_rss_self_mb": own / 1024,
        "peak_rss_children_mb": children / 1024,
        "peak_tree_rss_mb": tree_kb / 1024,
        "lookahead": run.lookahead,
        "memory_bound_mb": _mb(run.memory_bound_bytes),
        "peak_buffer_mb": _mb(run.peak_buffer_bytes),
        "wait_after_first_s": run.wait_after_first,
        "consumer_s": cfg.consumer_seconds,
        "decoded_per_delivered": None,
        **run.extra,
    }
    if cfg.source in ("disk", "remote"):
        # compressed bytes of the GOP data decoded per sample: frames decoded x mean packet
        per_sample = run.extra.get("frames_decoded_per_sample", 0.0)
        out["gop_bytes_per_sample"] = per_sample * spec.get("mean_packet_bytes", 0.0)
        out["source"] = cfg.source
    if run.frames_decoded_at:
        before = run.frames_decoded_at[cfg.warmup - 1] if cfg.warmup else 0.0
        decoded = run.frames_decoded_at[-1] - before
        out["decoded_per_delivered"] = decoded / images
        out["first_batch_decoded"] = run.frames_decoded_at[0]
    if "waits_s" in run.extra and run.lookahead:
        # the consumer's wait once the first lookahead window has been delivered
        window = math.ceil(run.lookahead / spec["batch_size"])
        out["window_batches"] = window
        out["wait_after_window_s"] = sum(run.extra["waits_s"][window + 1 :])
    elif cfg.kind in ("baseline", *loaders.PEERS):
        out["decoded_per_delivered"] = spec.get("baseline_decoded_per_frame")
    return out


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def main() -> int:
    """Read the spec on stdin, measure, print the result line; returns 0."""
    spec = json.loads(sys.stdin.read())
    result = run_one(spec)
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

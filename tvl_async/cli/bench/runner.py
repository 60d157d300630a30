"""``tvl-async bench``: tvl_async against a DataLoader + PyAV-seek baseline and the sequential
ceiling, on one machine, in one run.

With no folder it writes the reference set into a cache folder (``<index cache>/bench-videos``):
200 files of 1920x1080 H.264, 30 fps, 10 s, a keyframe every 60 frames (4 distinct videos, the
rest hard links). Reference workload: uniformly random single frames, batches of 128, a
RandomResizedCrop to 224x224 and a ColorJitter (``tvl_async.cli.bench.workloads``).

Configurations (each measured in a fresh process:
``python -m tvl_async.cli.bench.runner --one``, the spec
on stdin, so that peak RSS is its own):

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
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tvl_async.cli.bench.videos import (
    VideoSetSpec,
    default_bench_dir,
    make_bench_videos,
    parse_size,
)

REFERENCE = VideoSetSpec()
DEFAULT_LOOKAHEADS = ("1", "4096", "default", "16384")
DEFAULT_CHUNKS = (4, 8, 16)
SLOW_FACTOR = 1.5  # the slow consumer's time per batch, relative to the decoding's
_RESULT = "@result "
_PROGRESS = "@progress "


@dataclass
class BenchConfig:
    """One configuration to measure (what the child process gets on stdin, with the files)."""

    name: str
    kind: str  # baseline | tvl | ceiling
    sampling: str = "uniform"
    lookahead: int | None = None
    chunk_size: int = 8
    slow_consumer: str | None = None  # name of the configuration whose rate sets the pace
    consumer_seconds: float = 0.0
    warmup: int = 1
    batches: int = 4
    options: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- child side


class _RssSampler:
    """Peak of the summed RSS of this process and its descendants, sampled every 0.25 s
    (Linux /proc; 0 elsewhere)."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-rss")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(1.0)
        self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))
        return self.peak_kb


def _tree_rss_kb(pid: int) -> int:
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
    """Measure one configuration in this process (the ``--one`` child); returns its figures."""
    from tvl_async.cli.bench import workloads as w

    cfg = BenchConfig(**spec["config"])
    files: list[str] = spec["files"]
    common = {"batch_size": spec["batch_size"], "crop": spec["crop"], "seed": spec["seed"],
              "device": spec["device"]}
    total = cfg.warmup + cfg.batches
    done = [0]

    def on_batch() -> None:
        done[0] += 1
        print(f"{_PROGRESS}{done[0]} {total}", flush=True)

    sampler = _RssSampler()
    t0 = time.perf_counter()
    if cfg.kind == "baseline":
        run = w.run_baseline(files, n_batches=total, workers=cfg.options.get("workers", 2),
                             on_batch=on_batch, **common)
    elif cfg.kind == "ceiling":
        run = w.run_ceiling(files, n_batches=total, on_batch=on_batch,
                            decode_threads=cfg.options["decode_threads"],
                            ffmpeg_threads=cfg.options["ffmpeg_threads"], **common)
    else:
        run = w.run_tvl(files, n_batches=total, sampling=cfg.sampling, lookahead=cfg.lookahead,
                        chunk_size=cfg.chunk_size, on_batch=on_batch,
                        decode_threads=cfg.options.get("decode_threads"),
                        ffmpeg_threads=cfg.options.get("ffmpeg_threads"),
                        memory_budget=cfg.options.get("memory_budget"),
                        consumer_seconds=cfg.consumer_seconds, **common)
    tree_kb = sampler.stop()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    arrivals = run.arrivals
    start = arrivals[cfg.warmup - 1]
    timed = arrivals[-1] - start
    images = cfg.batches * spec["batch_size"]
    out: dict[str, Any] = {
        "name": cfg.name, "kind": cfg.kind, "sampling": cfg.sampling,
        "images_per_s": images / timed if timed > 0 else float("nan"),
        "timed_s": timed, "timed_batches": cfg.batches, "warmup_batches": cfg.warmup,
        "first_batch_s": arrivals[0] - t0, "total_s": arrivals[-1] - t0,
        "peak_rss_mb": (own + children) / 1024, "peak_rss_self_mb": own / 1024,
        "peak_rss_children_mb": children / 1024, "peak_tree_rss_mb": tree_kb / 1024,
        "lookahead": run.lookahead, "memory_bound_mb": _mb(run.memory_bound_bytes),
        "peak_buffer_mb": _mb(run.peak_buffer_bytes),
        "wait_after_first_s": run.wait_after_first, "consumer_s": cfg.consumer_seconds,
        "decoded_per_delivered": None, **run.extra,
    }
    if run.frames_decoded_at:
        decoded = run.frames_decoded_at[-1] - run.frames_decoded_at[cfg.warmup - 1]
        out["decoded_per_delivered"] = decoded / images
    if "waits_s" in run.extra and run.lookahead:
        # the consumer's wait once the first lookahead window has been delivered
        window = math.ceil(run.lookahead / spec["batch_size"])
        out["window_batches"] = window
        out["wait_after_window_s"] = sum(run.extra["waits_s"][window + 1:])
    elif cfg.kind == "baseline":
        out["decoded_per_delivered"] = spec.get("baseline_decoded_per_frame")
    return out


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _child_main() -> int:
    spec = json.loads(sys.stdin.read())
    result = run_one(spec)
    print(_RESULT + json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------- parent side


def run_config(spec: dict[str, Any], on_progress: Callable[[int, int], None]) -> dict[str, Any]:
    """Run one configuration in a fresh ``python -m tvl_async.cli.bench.runner --one`` process.

    Blocks until it exits.
    """
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "tvl_async.cli.bench.runner", "--one"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    err_lines: list[str] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    result: dict[str, Any] | None = None
    for line in proc.stdout:
        if line.startswith(_PROGRESS):
            done, total = (int(v) for v in line[len(_PROGRESS):].split())
            on_progress(done, total)
        elif line.startswith(_RESULT):
            result = json.loads(line[len(_RESULT):])
    code = proc.wait()
    drain.join(5.0)
    if code != 0 or result is None:
        tail = "".join(err_lines[-20:]).strip()
        return {"name": spec["config"]["name"], "kind": spec["config"]["kind"],
                "error": f"exit code {code}: {tail[-2000:]}"}
    return result


def build_configs(args: argparse.Namespace, default_lookahead: int) -> list[BenchConfig]:
    """The configurations to run, in order (baseline first, ceiling last)."""
    threads = {"decode_threads": args.decode_threads, "ffmpeg_threads": args.ffmpeg_threads}
    auto = args.warmup is None
    warmup = 1 if auto else args.warmup

    def tvl_batches(lookahead: int) -> int:
        # Decoding work comes in waves as the window turns over (each GOP is decoded for all
        # the window's samples in it); time at least one whole window to average over a wave.
        n: int = args.batches
        return max(n, math.ceil(lookahead / args.batch_size)) if auto else n

    out = [BenchConfig("baseline", "baseline", warmup=args.workers if auto else args.warmup,
                       batches=args.batches, options={"workers": args.workers})]
    for text in args.lookaheads.split(","):
        text = text.strip()
        la = default_lookahead if text == "default" else int(text)
        name = f"uniform L={la}" + (" (default)" if text == "default" else "")
        out.append(BenchConfig(name, "tvl", "uniform", lookahead=la, warmup=warmup,
                               batches=tvl_batches(la), options=dict(threads)))
    for k in (int(v) for v in args.chunks.split(",") if v.strip()):
        out.append(BenchConfig(f"chunked k={k}", "tvl", "chunked", lookahead=default_lookahead,
                               chunk_size=k, warmup=warmup,
                               batches=tvl_batches(default_lookahead), options=dict(threads)))
    out.append(BenchConfig("gop_shuffle", "tvl", "gop_shuffle", lookahead=default_lookahead,
                           warmup=warmup, batches=tvl_batches(default_lookahead),
                           options=dict(threads)))
    if not args.no_slow:
        paced = {"uniform": next((c.name for c in out if c.name.endswith("(default)")), None),
                 "gop_shuffle": "gop_shuffle"}
        for sampling, pace in paced.items():
            if pace is not None and any(c.name == pace for c in out):
                # past the first window: its cold start is paid once (docs/benchmarks.md)
                batches = 4 * args.batches + (tvl_batches(default_lookahead) if auto else 0)
                out.append(BenchConfig(f"{sampling} slow consumer", "tvl", sampling,
                                       lookahead=default_lookahead, slow_consumer=pace,
                                       warmup=1, batches=batches, options=dict(threads)))
    ff = args.ffmpeg_threads or max(1, (os.cpu_count() or 1) // max(args.decode_threads or
                                                                      _cpu_threads(), 1))
    out.append(BenchConfig("ceiling", "ceiling", warmup=warmup,
                           batches=tvl_batches(default_lookahead),
                           options={"decode_threads": args.decode_threads or _cpu_threads(),
                                    "ffmpeg_threads": ff}))
    return out


def _cpu_threads() -> int:

    from tvl_async._decoding import default_decode_threads

    return default_decode_threads("pyav")


def _default_lookahead(files: list[str], crop: int, memory_budget: int | None) -> int:
    """What ``Prefetcher(lookahead=None)`` picks for the reference workload."""
    from tvl_async._config import ProcessDesc
    from tvl_async._prefetcher import Prefetcher
    from tvl_async.cli.bench.workloads import CROP_SCALE

    kwargs: dict[str, Any] = {} if memory_budget is None else {"memory_budget": memory_budget}
    p = Prefetcher(files, seq_len=1, batch_size=1, epochs=1,
                   processing=ProcessDesc(width=crop, height=crop, random_resized_crop=CROP_SCALE),
                   **kwargs)
    try:
        return p.lookahead
    finally:
        p.close()


def _machine() -> dict[str, Any]:
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
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "memory_gb": mem,
            "python": platform.python_version(), "torch": torch.__version__,
            "av": av.__version__, "ffmpeg": {k: ".".join(map(str, v))
                                             for k, v in av.library_versions.items()},
            "platform": platform.platform()}


def _baseline_cost(files: list[str]) -> float:
    """Frames a seek-and-decode reader decodes per random frame: the mean over frames of their
    position in their GOP plus one (the baseline cannot count them itself)."""
    import numpy as np

    from tvl_async._index import load_index

    total = frames = 0.0
    for f in files:
        gops = load_index(f).gop_lengths().astype(np.float64)
        total += float(np.sum(gops * (gops + 1) / 2))
        frames += float(gops.sum())
    return total / max(frames, 1.0)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Write/find the videos, run every configuration, return the report (blocks)."""
    from tvl_async._index import load_index

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr)
    if args.folder:
        from tvl_async._index import find_videos

        files = [str(p) for p in find_videos([args.folder])]
        videos: dict[str, Any] = {"folder": str(args.folder)}
    else:
        width, height = parse_size(args.size)
        spec = VideoSetSpec(files=args.files, seconds=args.seconds, width=width, height=height,
                            fps=args.fps, gop=args.gop)
        root = Path(args.cache_dir) if args.cache_dir else default_bench_dir()

        def encoding(k: int, n: int) -> None:
            say(f"bench: encoding distinct video {k + 1}/{n} ({spec.width}x{spec.height}, "
                f"{spec.n_frames} frames) into {root / spec.tag} ...")

        files = [str(p) for p in make_bench_videos(spec, root, on_encode=encoding)]
        videos = asdict(spec) | {"folder": str(root / spec.tag)}
    for f in files:
        load_index(f)  # build the index cache once, before any timing
    n_frames = sum(load_index(f).n_frames for f in files)
    videos |= {"n_files": len(files), "n_frames": n_frames}
    default_la = _default_lookahead(files, args.crop, args.memory_budget)
    configs = build_configs(args, default_la)
    if args.only:
        wanted = [v.strip() for v in args.only.split(",")]
        configs = [c for c in configs if any(c.name.startswith(w) for w in wanted)]
    base_spec = {"files": files, "batch_size": args.batch_size, "crop": args.crop,
                 "seed": args.seed, "device": args.device,
                 "baseline_decoded_per_frame": _baseline_cost(files)}
    if args.memory_budget is not None:
        for c in configs:
            if c.kind == "tvl":
                c.options["memory_budget"] = args.memory_budget
    results: list[dict[str, Any]] = []
    loads: list[tuple[str, list[float]]] = []
    bar = _progress_bar(sum(c.warmup + c.batches for c in configs), args.quiet)
    done_before = 0
    for cfg in configs:
        if cfg.slow_consumer:
            cfg.consumer_seconds = _slow_consumer_seconds(results, cfg.slow_consumer,
                                                          args.batch_size)
        bar.set_description(cfg.name)
        loads.append((cfg.name, list(os.getloadavg())))

        def progress(done: int, total: int, base: int = done_before) -> None:
            bar.update(base + done - bar.n)

        r = run_config(base_spec | {"config": asdict(cfg)}, progress)
        r["load_before"] = loads[-1][1]
        r["load_after"] = list(os.getloadavg())
        results.append(r)
        done_before += cfg.warmup + cfg.batches
        bar.update(done_before - bar.n)
        if "error" in r:
            say(f"bench: {cfg.name} failed: {r['error']}")
    bar.close()
    _ratios(results)
    return {"machine": _machine(), "videos": videos,
            "workload": {"seq_len": 1, "batch_size": args.batch_size, "crop": args.crop,
                         "random_resized_crop": [0.08, 1.0], "color_jitter": 0.4,
                         "device": args.device, "default_lookahead": default_la,
                         "decode_threads": args.decode_threads or _cpu_threads(),
                         "baseline_workers": args.workers},
            "command": "tvl-async bench " + " ".join(args.argv),
            "results": results}


def _slow_consumer_seconds(results: list[dict[str, Any]], pace: str, batch_size: int) -> float:
    """1.5x the time per batch of configuration ``pace`` (measured before, fast consumer)."""
    for r in results:
        if r.get("name") == pace and r.get("images_per_s"):
            return SLOW_FACTOR * batch_size / float(r["images_per_s"])
    return 1.0


def _ratios(results: list[dict[str, Any]]) -> None:
    base = next((r for r in results if r.get("kind") == "baseline" and "error" not in r), None)
    ceil = next((r for r in results if r.get("kind") == "ceiling" and "error" not in r), None)
    for r in results:
        rate = r.get("images_per_s")
        r["vs_baseline"] = rate / base["images_per_s"] if rate and base else None
        r["vs_ceiling"] = rate / ceil["images_per_s"] if rate and ceil else None


class _NoBar:
    n = 0

    def set_description(self, text: str) -> None: ...

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None: ...


def _progress_bar(total: int, quiet: bool) -> Any:
    if quiet:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="batch", file=sys.stderr, dynamic_ncols=True)


# ----------------------------------------------------------------------------- report


def format_table(report: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    head = ("| configuration | images/s | × baseline | × ceiling | decoded / delivered | "
            "peak RSS MB | first batch s | wait after first s | wait after window s |")
    lines = [head, "| " + " | ".join(["---"] + ["---:"] * 8) + " |"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'].splitlines()[-1][:80]} |"
                         + " |" * 7)
            continue
        slow = r.get("consumer_s")
        name = r["name"] + (f" ({slow:.2f} s/batch)" if slow else "")
        rss = max(r.get("peak_tree_rss_mb") or 0.0, r.get("peak_rss_mb") or 0.0)
        lines.append("| " + " | ".join([
            name, _f(r.get("images_per_s"), 1), _f(r.get("vs_baseline"), 2, "×"),
            _f(r.get("vs_ceiling"), 2, "×"),
            # a slow consumer's decoders run ahead into the window: no per-batch figure
            _f(None if slow else r.get("decoded_per_delivered"), 2), _f(rss, 0),
            _f(r.get("first_batch_s"), 1),
            _f(r.get("wait_after_first_s") if slow else None, 2),
            _f(r.get("wait_after_window_s") if slow else None, 2)]) + " |")
    return "\n".join(lines)


def _f(v: float | None, digits: int, suffix: str = "") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else \
        f"{v:.{digits}f}{suffix}"


def write_plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """A PNG bar chart of images/s per configuration (matplotlib when installed, else a small
    built-in PNG writer)."""
    rows = [(r["name"], float(r["images_per_s"])) for r in report["results"]
            if "error" not in r and r.get("images_per_s") and not r.get("consumer_s")]
    title = (f"tvl-async bench: images/s, {report['machine']['cpu_count']} cores "
             f"({report['videos'].get('width', '?')}x{report['videos'].get('height', '?')})")
    try:
        import matplotlib  # type: ignore[import-not-found]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        from tvl_async.cli.bench.png import bar_chart_png

        bar_chart_png(path, rows, title)
        return
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.2))
    ax.barh([n for n, _ in rows][::-1], [v for _, v in rows][::-1])
    ax.set_xlabel("images/s")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``tvl-async`` subcommand parser."""
    p = sub.add_parser(
        "bench", help="measure tvl_async against a DataLoader + PyAV baseline",
        description=__doc__.split("\n\n")[0].replace("``", "") + " See docs/benchmarks.md.")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}; allowed: an integer >= 1")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed: seconds > 0")
    return value


def _lookahead_list(text: str) -> str:
    """``--lookaheads``: comma-separated integers >= 1 or ``default``; checked before any work."""
    for item in text.split(","):
        if item.strip() != "default":
            _positive(item.strip())
    return text


def _int_list(text: str) -> str:
    """``--chunks``: comma-separated integers >= 1 (empty: none)."""
    for item in text.split(","):
        if item.strip():
            _positive(item.strip())
    return text


def _size(text: str) -> str:
    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The bench options, shared by ``tvl-async bench`` and ``python -m ...bench.runner``."""
    p.add_argument("folder", nargs="?", help="videos to use (default: the reference set, "
                   "written into --cache-dir on first use)")
    r = REFERENCE
    p.add_argument("--files", type=_positive, default=r.files,
                   help=f"files in the generated set (default {r.files})")
    p.add_argument("--seconds", type=_positive_seconds, default=r.seconds,
                   help=f"seconds per generated file (default {r.seconds:g})")
    p.add_argument("--size", type=_size, default=f"{r.width}x{r.height}",
                   help=f"generated frame size WxH (default {r.width}x{r.height})")
    p.add_argument("--fps", type=_positive, default=r.fps, help=f"(default {r.fps})")
    p.add_argument("--gop", type=_positive, default=r.gop,
                   help=f"keyframe interval of the generated set (default {r.gop})")
    p.add_argument("--cache-dir", help="where to write the generated set "
                   "(default <index cache>/bench-videos)")
    p.add_argument("--batches", type=_positive, default=4,
                   help="timed batches per configuration, after the warm-up (default 4; "
                   "tvl_async times at least one lookahead window unless --warmup is given)")
    p.add_argument("--warmup", type=_positive, default=None,
                   help="warm-up batches (default: 1, or one per DataLoader worker)")
    p.add_argument("--batch-size", type=_positive, default=128, help="(default 128)")
    p.add_argument("--crop", type=_positive, default=224, help="output size (default 224)")
    p.add_argument("--lookaheads", type=_lookahead_list, default=",".join(DEFAULT_LOOKAHEADS),
                   help="uniform configurations ('default' = the library's choice; "
                   f"default {','.join(DEFAULT_LOOKAHEADS)})")
    p.add_argument("--chunks", type=_int_list, default=",".join(map(str, DEFAULT_CHUNKS)),
                   help="chunked configurations (default 4,8,16)")
    p.add_argument("--only", help="comma-separated name prefixes of the configurations to run")
    p.add_argument("--no-slow", action="store_true", help="skip the slow-consumer run")
    p.add_argument("--workers", type=_positive, default=2,
                   help="baseline DataLoader workers (default 2)")
    p.add_argument("--decode-threads", type=_positive, default=None,
                   help="tvl_async and ceiling decode threads (default: the library's)")
    p.add_argument("--ffmpeg-threads", type=_positive, default=None,
                   help="FFmpeg threads per decode thread (default: the library's)")
    p.add_argument("--memory-budget", type=_positive, default=None,
                   help="tvl_async memory_budget in bytes (default: the library's)")
    p.add_argument("--device", default="cpu", help="where batches end up (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--plot", help="write a PNG bar chart of images/s here")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")


def cmd_bench(args: argparse.Namespace) -> int:
    """``tvl-async bench``: run, print the table, write --json/--plot."""
    if not hasattr(args, "argv"):
        args.argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []
    report = run_bench(args)
    print(format_table(report))
    m = report["machine"]
    print(f"\n{m['cpu_count']} cores ({m['cpu']}), load before/after each run in the JSON; "
          f"{report['videos']['n_files']} files, {report['videos']['n_frames']} frames")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        write_plot(report, args.plot)
    failed = [r["name"] for r in report["results"] if "error" in r]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tvl_async.cli.bench.runner [options]`` (same options as ``tvl-async bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--one"]:
        return _child_main()
    parser = argparse.ArgumentParser(prog="python -m tvl_async.cli.bench.runner")
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())

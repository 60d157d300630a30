"""Everything a GPU machine must show about tvl_async's NVDEC path, in one call (docs/gpu.md).

    python tools/gpu_check.py --out DIR [--dry-run] [--only STEP,...]

Each step runs in its own process with its own timeout (a crash or a hang in one CUDA context
does not take the others with it) and writes ``DIR/<step>.json`` and ``DIR/<step>.log``; the
parent writes ``DIR/summary.json`` and ``DIR/summary.md``. Steps:

``env``       nvidia-smi, versions, NVDEC decoder caps (H.264, HEVC, VP9, AV1; 8 and 10 bit)
``pytest``    the ``cuda`` tests with ``TVL_ASYNC_REQUIRE_CUDA=1`` (they fail instead of skipping)
``exact``     every codec/container/colour case decoded on the GPU against the CPU path: the
              frame index each frame shows, max and mean absolute difference
``reconfig``  a Prefetcher over three sizes (one odd) read one sample at a time: >= 2000 size
              switches with exact frames, flat RSS and flat GPU memory
``fallback``  files NVDEC refuses (HEVC below its minimum size, MPEG-4) decode on the CPU and are
              listed in ``stats().fallback_files``, with the CPU's exact frames
``demo``      ``tvl-async demo --device cuda``
``bench``     random single frames, float32 normalised 224x224: a plain PyNvVideoCodec
              ``SimpleDecoder`` loop, tvl_async on the GPU and tvl_async on the CPU, side by side
              (images/s, frames decoded per delivered, consumer wait, peak GPU memory)

``--dry-run`` runs every step on the CPU (the GPU side replaced by the CPU path, the plain
PyNvVideoCodec loop and the caps skipped), so the script itself is checked on any machine
(tests/test_gpu_check.py). Exit status: 0 when no step failed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: seconds each step may take (the whole run stays under 10 minutes on the GPU machine)
TIMEOUTS = {
    "env": 60,
    "pytest": 200,
    "exact": 90,
    "reconfig": 150,
    "fallback": 45,
    "demo": 60,
    "bench": 120,
}
SWITCHES = 2000  # size switches in the reconfigure case
DRY_SWITCHES = 150  # on the CPU (the dry run), enough to exercise the step
#: (name, container, write_video options): the codec/container/colour cases of ``exact``
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("h264_bt601_limited", "mp4", {"codec": "libx264", "bframes": 3}),
    ("h264_bt709_full", "mkv", {"codec": "libx264", "colorspace": 1, "full": True}),
    ("hevc_8bit", "mp4", {"codec": "libx265"}),
    ("hevc_10bit_bt2020", "mkv", {"codec": "libx265", "pix_fmt": "yuv420p10le", "colorspace": 9}),
    ("vp9", "webm", {"codec": "libvpx-vp9"}),
    ("vp9_odd_257x193", "webm", {"codec": "libvpx-vp9", "width": 257, "height": 193}),
    ("av1", "mkv", {"codec": "libsvtav1"}),
    ("av1_10bit", "mp4", {"codec": "libsvtav1", "pix_fmt": "yuv420p10le"}),
]
#: GPU-vs-CPU colour limits (levels of 255) the CPU tests measured (docs/gpu.md)
MAX_DIFF, MEAN_DIFF = 5, 2.0  # 8-bit: max 3; 10-bit: max 5 (tests/test_yuv.py)


# ---------------------------------------------------------------------------------- helpers


def device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


def write_case(folder: Path, name: str, ext: str, options: dict[str, Any]) -> Path:
    """One synthetic clip (frame ``i`` shows ``i``), 256x192 unless given, 48 frames; with
    ``colorspace`` (an AVColorSpace code) and ``full`` the stream is tagged so."""
    from tvl_async.cli.synthetic import write_video

    opts = dict(options)
    space, full = opts.pop("colorspace", None), opts.pop("full", False)
    spec = {"n_frames": 48, "width": 256, "height": 192, "gop": 12, "texture": 0.3, **opts}
    path = write_video(folder / f"{name}.{ext}", **spec)
    if space is None and not full:
        return path
    return _retag(path, space or 1, full)


def _retag(path: Path, space: int, full: bool) -> Path:
    """Re-encode ``path`` with colour tags (matrix, primaries and transfer of ``space``; full or
    limited range): both paths convert the same tagged stream."""
    import av

    out = path.with_name(path.stem + "_tagged" + path.suffix)
    with av.open(str(path)) as src, av.open(str(out), "w") as dst:
        sv = src.streams.video[0]
        encoder = {"h264": "libx264", "hevc": "libx265"}[sv.codec_context.name]
        ov = dst.add_stream(encoder, rate=25)
        ov.width, ov.height, ov.pix_fmt = sv.width, sv.height, sv.pix_fmt
        cc = ov.codec_context
        cc.colorspace, cc.color_primaries = space, space
        cc.color_trc = {1: 1, 9: 14}.get(space, 2)
        cc.color_range = 2 if full else 1
        ov.options = {"g": "12"} | (
            {"x265-params": "log-level=error"} if encoder == "libx265" else {}
        )
        for frame in src.decode(sv):
            frame.pts = None
            for packet in ov.encode(frame):
                dst.mux(packet)
        for packet in ov.encode():
            dst.mux(packet)
    return out


def compare(a: Any, b: Any) -> tuple[int, float]:
    """Max and mean absolute difference of two uint8 frames, in levels."""
    d = (a.to("cpu").int() - b.to("cpu").int()).abs()
    return int(d.max()), float(d.float().mean())


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def gpu_mib(dry: bool) -> float:
    if dry:
        return 0.0
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20  # NVDEC's own buffers included


# ---------------------------------------------------------------------------------- steps


def step_env(dry: bool, _tmp: Path) -> dict[str, Any]:
    import av
    import torch

    out: dict[str, Any] = {"torch": torch.__version__, "av": av.__version__}
    if dry:
        return {**out, "skipped": "dry run: no nvidia-smi, no NVDEC caps", "ok": True}
    smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    out["nvidia_smi"] = smi.stdout
    out["gpu"] = torch.cuda.get_device_name(0)
    import PyNvVideoCodec as nvc

    out["pynvvideocodec"] = getattr(nvc, "__version__", "?")
    caps: dict[str, Any] = {}
    for codec in ("H264", "HEVC", "VP9", "AV1"):
        for depth in (8, 10):
            try:
                c = nvc.GetDecoderCaps(
                    gpuid=0, codec=getattr(nvc.cudaVideoCodec, codec), bitdepth=depth
                )
                caps[f"{codec}-{depth}"] = {k: str(v) for k, v in dict(c).items()}
            except Exception as e:
                caps[f"{codec}-{depth}"] = f"failed: {e}"
    out["decoder_caps"] = caps
    out["ok"] = smi.returncode == 0 and torch.cuda.is_available()
    return out


def step_pytest(dry: bool, tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "TVL_ASYNC_REQUIRE_CUDA": "1"}
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-ra", "-q", "-p", "no:cacheprovider"]
    cmd += ["--junitxml", str(tmp / "pytest-cuda.xml")]
    if dry:
        cmd.append("--collect-only")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:])
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    return {"returncode": done.returncode, "last_line": tail[0], "ok": done.returncode == 0}


def step_exact(dry: bool, tmp: Path) -> dict[str, Any]:
    from tvl_async import VideoLoader
    from tvl_async.cli.synthetic import frame_index_of

    results: dict[str, Any] = {}
    ok = True
    for name, ext, options in CASES:
        try:
            path = write_case(tmp, name, ext, options)
            with VideoLoader(path) as cpu, VideoLoader(path, device=device(dry)) as gpu:
                frames = sorted(random.Random(0).sample(range(cpu.n_frames), 12))
                worst, means, wrong = 0, list[float](), list[int]()
                for i, g in zip(frames, gpu.select_frames(frames), strict=True):
                    c = cpu.select_frame(i)
                    m, mean = compare(g, c)
                    worst, means = max(worst, m), [*means, mean]
                    if frame_index_of(g.cpu()) != i:
                        wrong.append(i)
                backend = type(getattr(gpu, "_backend", None)).__name__
            passed = not wrong and worst <= MAX_DIFF and max(means) <= MEAN_DIFF
            results[name] = {
                "frames": frames,
                "wrong_frames": wrong,
                "max_diff": worst,
                "mean_diff": round(max(means), 3),
                "ok": passed,
                "backend": backend,
            }
        except Exception as e:
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        ok = ok and results[name]["ok"]
        print(name, results[name])
    return {"cases": results, "ok": ok}


def _size_files(tmp: Path) -> list[Path]:
    sizes = [(256, 192), (257, 193), (320, 240)]
    return [
        write_case(tmp, f"size_{w}x{h}", "webm", {"codec": "libvpx-vp9", "width": w, "height": h})
        for w, h in sizes
    ]


def _run(
    files: list[Path], dev: str, probe: Callable[[int], None] | None = None, **options: Any
) -> tuple[list[tuple[str, int, Any]], Any]:
    """Every sample a Prefetcher over ``files`` delivers, as (file, frame, frame tensor on the
    CPU), and its final stats; ``probe(samples so far)`` after each batch."""
    from tvl_async import Prefetcher, ProcessDesc

    desc = ProcessDesc(scale_width=128, scale_height=96)  # one size for files of several
    got: list[tuple[str, int, Any]] = []
    with Prefetcher(files, 1, device=dev, processing=desc, **options) as it:
        for batch in it:
            for k, name in enumerate(batch.files):
                frame = batch.outputs["default"][k, 0].cpu()
                got.append((name, int(batch.frame_indices[k, 0]), frame))
            if probe is not None:
                probe(len(got))
        stats = it.stats()
    return got, stats


def _against_cpu(
    gpu: list[tuple[str, int, Any]], cpu: list[tuple[str, int, Any]]
) -> dict[str, Any]:
    """The same samples in the same order, and the largest colour difference."""
    same_order = [(f, i) for f, i, _ in gpu] == [(f, i) for f, i, _ in cpu]
    worst = max(
        (compare(g, c)[0] for (_, _, g), (_, _, c) in zip(gpu, cpu, strict=False)), default=0
    )
    return {"same_samples_in_order": same_order, "max_diff_vs_cpu": worst}


def step_reconfig(dry: bool, tmp: Path) -> dict[str, Any]:
    from tvl_async import VideoLoader

    files = _size_files(tmp)
    per_epoch = sum(VideoLoader(f).n_frames for f in files)
    wanted = DRY_SWITCHES if dry else SWITCHES
    epochs = wanted * 3 // (2 * per_epoch) + 2  # ~2/3 of consecutive samples change size
    options: dict[str, Any] = {"sampling": "uniform", "batch_size": 1, "lookahead": 1}
    options["epochs"] = epochs
    memory: list[tuple[int, float, float]] = []

    def probe(n: int) -> None:
        if n % 250 == 0:
            memory.append((n, round(rss_mib(), 1), round(gpu_mib(dry), 1)))

    cpu, _ = _run(files, "cpu", **options)
    gpu, stats = _run(files, device(dry), probe, **options)
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(gpu))
    check = _against_cpu(gpu, cpu)
    settled = memory[1:] or memory
    rss_growth = settled[-1][1] - settled[0][1]
    gpu_growth = settled[-1][2] - settled[0][2]
    ok = (
        switches >= wanted
        and check["same_samples_in_order"]
        and check["max_diff_vs_cpu"] <= MAX_DIFF
        and rss_growth < 64
        and gpu_growth < 32
    )
    return {
        "samples": len(gpu),
        "size_switches": switches,
        **check,
        "memory_samples_rss_gpu_mib": memory,
        "rss_growth_mib": round(rss_growth, 1),
        "gpu_growth_mib": round(gpu_growth, 1),
        "fallback_files": stats.fallback_files,
        "ok": ok,
    }


def step_fallback(dry: bool, tmp: Path) -> dict[str, Any]:
    small = write_case(tmp, "hevc_128x96", "mp4", {"codec": "libx265", "width": 128, "height": 96})
    mpeg4 = write_case(tmp, "mpeg4", "mkv", {"codec": "mpeg4", "bframes": 0})
    h264 = write_case(tmp, "h264", "mp4", {"codec": "libx264"})
    files = [small, mpeg4, h264]
    options: dict[str, Any] = {"sampling": "sequential", "batch_size": 8}
    cpu, _ = _run(files, "cpu", **options)
    gpu, stats = _run(files, device(dry), **options)
    check = _against_cpu(gpu, cpu)
    expected = [] if dry else sorted(str(f) for f in (small, mpeg4))
    fell_back = sorted(stats.fallback_files)
    ok = fell_back == expected and len(gpu) == 3 * 48 and check["same_samples_in_order"]
    return {
        "fallback_files": fell_back,
        "expected": expected,
        "delivered": len(gpu),
        **check,
        "ok": ok and check["max_diff_vs_cpu"] <= MAX_DIFF,
    }


def step_demo(dry: bool, _tmp: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tvl_async.cli.main", "demo", "--device", device(dry)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout[-8000:], done.stderr[-4000:])
    return {"returncode": done.returncode, "tail": done.stdout[-600:], "ok": done.returncode == 0}


def _bench_files(tmp: Path, dry: bool) -> list[Path]:
    from tvl_async.cli.synthetic import make_video_set

    if dry:
        return make_video_set(tmp / "bench", n_files=2, n_frames=48, width=320, height=240)
    return make_video_set(tmp / "bench", n_files=8, n_frames=300, width=1920, height=1080, gop=60)


def _timed(fn: Callable[[], int]) -> dict[str, float]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    n = fn()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return {
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 1),
        "peak_gpu_mib": round(peak, 1),
    }


def step_bench(dry: bool, tmp: Path) -> dict[str, Any]:
    import torch

    from tvl_async import Prefetcher, ProcessDesc, VideoLoader

    files = _bench_files(tmp, dry)
    n_frames = [VideoLoader(f).n_frames for f in files]
    batch, batches = (16, 2) if dry else (128, 6)
    rng = random.Random(0)
    requests = [(rng.randrange(len(files)), 0) for _ in range(batch * batches)]
    requests = [(f, rng.randrange(n_frames[f])) for f, _ in requests]
    desc = ProcessDesc(
        random_resized_crop=(0.08, 1.0), width=224, height=224, dtype=torch.float32, normalized=True
    )
    out: dict[str, Any] = {"files": len(files), "samples": len(requests), "batch_size": batch}

    def tvl(dev: str) -> Callable[[], int]:
        def run() -> int:
            n = 0
            with Prefetcher(
                files,
                1,
                device=dev,
                batch_size=batch,
                processing=desc,
                sampling="uniform",
                epochs=None,
            ) as it:
                for b in it:
                    n += len(b.files)
                    if n >= len(requests):
                        break
                s = it.stats()
            out[f"tvl_async_{dev}_stats"] = {
                "decoded_per_delivered": round(s.decoded_per_delivered, 2),
                "wait_time_after_first_s": round(s.wait_time_after_first, 3),
                "fallback_files": len(s.fallback_files),
            }
            return n

        return run

    if not dry:
        out["pynvvideocodec_simple_decoder"] = _timed(lambda: _plain_nvc(files, requests))
        out["tvl_async_cuda"] = _timed(tvl("cuda"))
    out["tvl_async_cpu"] = _timed(tvl("cpu"))
    out["ok"] = True
    return out


def _plain_nvc(files: list[Path], requests: list[tuple[int, int]]) -> int:
    """What a user writes with PyNvVideoCodec alone: a cached SimpleDecoder per file, one random
    frame each, resized and normalised on the GPU."""
    import PyNvVideoCodec as nvc
    import torch
    import torch.nn.functional as F
    import torch.utils.dlpack

    decoders: dict[int, Any] = {}
    n = 0
    for f, i in requests:
        if f not in decoders:
            decoders[f] = nvc.SimpleDecoder(
                str(files[f]),
                gpu_id=0,
                use_device_memory=True,
                output_color_type=nvc.OutputColorType.RGBP,
            )
        frame = torch.utils.dlpack.from_dlpack(decoders[f][i])
        x = F.interpolate(frame[None].float(), size=(224, 224), mode="bilinear", antialias=True)
        x.div_(255.0)
        n += 1
    torch.cuda.synchronize()
    return n


STEPS: dict[str, Callable[[bool, Path], dict[str, Any]]] = {
    "env": step_env,
    "pytest": step_pytest,
    "exact": step_exact,
    "reconfig": step_reconfig,
    "fallback": step_fallback,
    "demo": step_demo,
    "bench": step_bench,
}


# ---------------------------------------------------------------------------------- driver


def run_step(name: str, out: Path, dry: bool) -> dict[str, Any]:
    """One step in a child process, bounded by its timeout; its JSON result (or the failure)."""
    cmd = [sys.executable, __file__, "--step", name, "--out", str(out)]
    cmd += ["--dry-run"] if dry else []
    result_file = out / f"{name}.json"
    result_file.unlink(missing_ok=True)  # a result left by an earlier run is not this run's
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        try:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=TIMEOUTS[name])
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {TIMEOUTS[name]} s"
    seconds = round(time.perf_counter() - start, 1)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result.setdefault("ok", False)
    result.update(seconds=seconds, exit=code)
    result["ok"] = bool(result["ok"]) and code == 0
    return result


def child(name: str, out: Path, dry: bool) -> int:
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
        try:
            result = STEPS[name](dry, Path(tmp))
        except Exception as e:
            import traceback

            traceback.print_exc()
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    return 0 if result.get("ok") else 1


def summary_md(results: dict[str, dict[str, Any]], dry: bool) -> str:
    lines = [
        f"# tvl_async GPU check{' (dry run: CPU only)' if dry else ''}",
        "",
        "| step | ok | seconds | note |",
        "| --- | --- | ---: | --- |",
    ]
    for name, r in results.items():
        note = r.get("error") or r.get("last_line") or r.get("skipped") or ""
        lines.append(f"| {name} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | {note} |")
    bench = results.get("bench", {})
    rows = [
        k
        for k in ("pynvvideocodec_simple_decoder", "tvl_async_cuda", "tvl_async_cpu")
        if k in bench
    ]
    if rows:
        lines += ["", "| loader | images/s | peak GPU MiB |", "| --- | ---: | ---: |"]
        lines += [
            f"| {k} | {bench[k]['images_per_s']} | {bench[k]['peak_gpu_mib']} |" for k in rows
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--dry-run", action="store_true", help="CPU only: check the script")
    parser.add_argument("--only", default=",".join(STEPS), help="comma-separated steps")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # a child process runs one step
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step:
        return child(args.step, args.out, args.dry_run)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; steps: {', '.join(STEPS)}")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        results[name] = run_step(name, args.out, args.dry_run)
        r = results[name]
        print(f"{name}: {'ok' if r['ok'] else 'FAILED'} ({r['seconds']} s)", flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "summary.md").write_text(summary_md(results, args.dry_run))
    print(summary_md(results, args.dry_run))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The classic video-dataloader exercise, answered with tvl_async (explanations: docs/exercise.md).

    python examples/video_data_exercise.py            # 200 generated files (cached after once)
    python examples/video_data_exercise.py --quick    # tiny settings, seconds (the tests)
    python examples/video_data_exercise.py DIR        # your own videos

The questions: (1) a baseline DataLoader whose workers seek with PyAV: images/s. (2) 200 files,
uniform random frames, with tvl_async. (3) faster without shrinking the batch. (4) relaxed
sampling (chunked, gop_shuffle) and plain sequential reading. (4.1) the bias of relaxed sampling,
measured from the samplers. (5) GPU decoding while a model runs, and why forked DataLoader
workers fail with CUDA_ERROR_NOT_INITIALIZED where tvl_async does not. (6) the fewest host/GPU
copies. Sections 5 and 6 need a GPU; on a CPU-only machine they print why they are skipped.

Every image delivered is checked: the generated videos carry their frame index in their pixels,
so the "exact" column says whether each image is the frame that was asked for.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvl_async import (
    Prefetcher,
    ProcessDesc,
    VideoDataset,
    cache_dir,
    find_videos,
    nvdec_available,
)
from tvl_async.cli import exit_on_error
from tvl_async.cli.synthetic import frame_index_of, make_video_set

ROWS: list[tuple[str, str, str, str, str, str]] = []


def row(q: str, what: str, setting: str, rate: float | str, cost: float | str, exact: str) -> None:
    rate_s = f"{rate:9.1f}" if isinstance(rate, float) else f"{rate:>9}"
    cost_s = f"{cost:8.2f}" if isinstance(cost, float) else f"{cost:>8}"
    ROWS.append((q, what, setting, rate_s, cost_s, exact))
    print(f"{q:<5} {what:<34} {setting:<30} {rate_s} {cost_s}  {exact}", flush=True)


def header(title: str) -> None:
    print(f"\n{title}")


# ---------------------------------------------------------------------------------- (1)


class PyAVSeekDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int, int]]):
    """The usual first attempt: every item opens the file, seeks by time, decodes to the frame."""

    def __init__(self, files: list[str], frame_counts: list[int]) -> None:
        self.files = files
        self.offsets = np.concatenate([[0], np.cumsum(frame_counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        import av

        f = int(np.searchsorted(self.offsets, i, side="right") - 1)
        frame_index = int(i - self.offsets[f])
        with av.open(self.files[f]) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or Fraction(25)
            target = (stream.start_time or 0) + round(
                Fraction(frame_index) / rate / stream.time_base
            )
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    img = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    return img, f, frame_index
        raise IndexError(f"{self.files[f]}: frame {frame_index} not found")


def baseline(
    files: list[str], dataset: VideoDataset, batch: int, n_batches: int, workers: int
) -> None:
    counts = [ix.n_frames for ix in dataset.indexes]
    ds = PyAVSeekDataset(files, counts)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    images = decoded = wrong = 0
    t0 = time.perf_counter()
    for k, (imgs, fs, idx) in enumerate(loader):
        for img, f, i in zip(imgs, fs.tolist(), idx.tolist(), strict=True):
            ix = dataset.indexes[f]
            # frames decoded: from the GOP's keyframe up to the frame (what the seek costs)
            decoded += int(np.sum(ix.seek_key[: i + 1] == ix.seek_key[i]))
            wrong += frame_index_of(img) != i
        images += len(idx)
        if k + 1 == n_batches:
            break
    dt = time.perf_counter() - t0
    del loader
    row(
        "(1)",
        "DataLoader + PyAV seek",
        f"{workers} workers, batch {batch}",
        images / dt,
        decoded / images,
        "yes" if wrong == 0 else f"NO ({wrong})",
    )


# ---------------------------------------------------------------------------------- (2)-(4)


def run_prefetcher(
    files: list[str], q: str, what: str, setting: str, n_images: int, **kwargs: Any
) -> float:
    """Iterate a Prefetcher for ``n_images`` images; print a row; return images/s."""
    images = wrong = 0
    t0 = time.perf_counter()
    with Prefetcher(files, 1, epochs=None, **kwargs) as it:
        for b in it:
            x = b["default"]
            for img, i in zip(x[:, 0], b.frame_indices[:, 0].tolist(), strict=True):
                wrong += frame_index_of(img) != i
            images += x.shape[0]
            if images >= n_images:
                break
        stats = it.stats()
    rate = images / (time.perf_counter() - t0)
    row(
        q,
        what,
        setting,
        rate,
        stats.decoded_per_delivered,
        "yes" if wrong == 0 else f"NO ({wrong})",
    )
    return rate


# ---------------------------------------------------------------------------------- (4.1)


def same_group_pairs(order: np.ndarray, keys: np.ndarray, batch: int) -> float:
    """Mean number of pairs of samples in one batch that share a key (GOP or file)."""
    n = len(order) // batch * batch
    k = keys[order[:n]].reshape(-1, batch)
    total = 0
    for b in k:
        _, counts = np.unique(b, return_counts=True)
        total += int(np.sum(counts * (counts - 1) // 2))
    return total / max(len(k), 1)


def epoch_order(dataset: VideoDataset, sampling: str, seed: int, **options: Any) -> np.ndarray:
    """The sample ids of epoch 0 in the order a Prefetcher with this ``sampling`` reads them
    (from its sampler; the Prefetcher is never started, so nothing is decoded)."""
    with Prefetcher(dataset, sampling=sampling, seed=seed, **options) as p:
        return p.sampler.epoch_order(0)


def bias_table(dataset: VideoDataset, batch: int, chunk: int, buffer: int) -> None:
    files, _ = dataset.sample_arrays()
    gops = dataset.sample_gops()
    gop_key = files * (int(gops.max()) + 1) + gops
    n = len(dataset)
    pairs = batch * (batch - 1) / 2
    _, gop_sizes = np.unique(gop_key, return_counts=True)
    _, file_sizes = np.unique(files, return_counts=True)
    iid_gop = pairs * float(np.sum((gop_sizes / n) ** 2))
    iid_file = pairs * float(np.sum((file_sizes / n) ** 2))
    print(
        f"{'sampling':<26} {'same-GOP pairs/batch':>21} {'x i.i.d.':>9} "
        f"{'same-file pairs/batch':>22} {'x i.i.d.':>9}"
    )
    print(f"{'i.i.d. (expected)':<26} {iid_gop:21.2f} {1.0:9.1f} {iid_file:22.2f} {1.0:9.1f}")
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("uniform", {}),
        (f"chunked (chunk {chunk})", {"chunk_size": chunk}),
        (f"gop_shuffle (buffer {buffer})", {"shuffle_buffer": buffer}),
        ("sequential", {}),
    )
    for name, kw in variants:
        sampling = name.split()[0]
        orders = [epoch_order(dataset, sampling, s, **kw) for s in range(3)]
        g = float(np.mean([same_group_pairs(o, gop_key, batch) for o in orders]))
        f = float(np.mean([same_group_pairs(o, files, batch) for o in orders]))
        print(f"{name:<26} {g:21.2f} {g / iid_gop:9.1f} {f:22.2f} {f / iid_file:9.1f}")
    print(
        f"({n} samples, {len(gop_sizes)} GOPs in {len(file_sizes)} files, batch {batch}: "
        f"{pairs:.0f} pairs per batch; each order is a whole epoch, mean of 3 seeds)"
    )


# ---------------------------------------------------------------------------------- (5), (6)

FORK_PROBE = textwrap.dedent("""
    import ctypes, os, torch
    torch.zeros(1, device="cuda")              # the parent initialises CUDA (as training does)
    cuda = ctypes.CDLL("libcuda.so.1")
    def name(code):
        s = ctypes.c_char_p()
        cuda.cuGetErrorName(code, ctypes.byref(s))
        return s.value.decode() if s.value else str(code)
    pid = os.fork()                            # what a DataLoader worker is
    if pid == 0:
        dev = ctypes.c_int()
        code = cuda.cuDeviceGet(ctypes.byref(dev), 0)   # first driver call a decoder makes
        print("forked child: cuDeviceGet ->", name(code), flush=True)
        try:
            torch.zeros(1, device="cuda")
            print("forked child: torch CUDA ok")
        except Exception as e:
            print("forked child: torch ->", str(e).splitlines()[0][:90])
        os._exit(0)
    os.waitpid(pid, 0)
""")


def gpu_sections(files: list[str], batch: int, n_images: int, have_cuda: bool) -> None:
    header("(5) GPU decoding while a model runs")
    if not have_cuda:
        print(
            "    skipped: no CUDA device on this machine. With one, this section trains a small "
            "model on batches\n    that tvl_async decodes on the GPU, and shows a forked "
            "worker failing with CUDA_ERROR_NOT_INITIALIZED."
        )
    else:
        backend = "nvdec" if nvdec_available() else "pyav"
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 3, 3, padding=1),
        ).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        images, t0 = 0, time.perf_counter()
        with Prefetcher(
            files,
            1,
            batch_size=batch,
            device="cuda",
            backend=backend,
            epochs=None,
            processing=ProcessDesc(dtype=torch.float32, normalized=True),
        ) as it:
            for b in it:
                x = b["default"][:, 0]  # on the GPU already
                loss = (model(x) - x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                images += x.shape[0]
                if images >= n_images:
                    break
        torch.cuda.synchronize()
        row(
            "(5)",
            f"GPU decode ({backend}) + model",
            f"batch {batch}, cuda",
            images / (time.perf_counter() - t0),
            "-",
            "-",
        )
        r = subprocess.run(
            [sys.executable, "-c", FORK_PROBE], capture_output=True, text=True, timeout=120
        )
        for line in (r.stdout + r.stderr).strip().splitlines()[-3:]:
            print(f"    {line}")
    print(
        "    why: the CUDA driver's state does not survive fork(). A DataLoader worker is a "
        "forked copy of a\n    process that already initialised CUDA, so the decoder's first "
        "driver call there fails\n    (CUDA_ERROR_NOT_INITIALIZED; torch says 'Cannot "
        "re-initialize CUDA in forked subprocess').\n    tvl_async forks nothing: one service "
        "thread in the training process creates the decoders and\n    uses the context that "
        "process initialised, once."
    )

    header("(6) host/GPU copies")
    if not have_cuda:
        print(
            "    skipped: no CUDA device on this machine. With one, this section counts the "
            "host-to-device copies\n    per batch with torch.profiler."
        )
    else:
        from torch.profiler import ProfilerActivity, profile

        for backend in ["nvdec", "pyav"] if nvdec_available() else ["pyav"]:
            with Prefetcher(
                files, 1, batch_size=batch, device="cuda", backend=backend, epochs=None
            ) as it:
                next(it)
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        next(it)
                    torch.cuda.synchronize()
            h2d = [e for e in prof.events() if "HtoD" in e.name]
            print(f"    {backend}: {len(h2d) / 3:.1f} host-to-device copies per batch of {batch}")
    print(
        "    plan: decoded frames stay where they are decoded; with NVDEC they never leave "
        "the GPU; with CPU\n    decoding each clip crosses once, as uint8, after resize/crop "
        "and before the float conversion\n    (4x fewer bytes than float32). The consumer's "
        "stream waits on an event: no host sync."
    )


# ---------------------------------------------------------------------------------- main


def video_files(args: argparse.Namespace) -> list[str]:
    if args.paths:
        return [str(p) for p in find_videos(args.paths)]
    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    if args.quick:
        folder = base / "examples-exercise-quick"
        spec: dict[str, Any] = dict(n_frames=48, width=64, height=48, gop=12)
    else:
        folder = base / "examples-exercise"
        spec = dict(n_frames=96, width=160, height=120, gop=16)
    n = args.files or (12 if args.quick else 200)
    if not (folder / f"clip_{n - 1:03d}.mp4").exists():
        print(f"writing {n} videos to {folder} (once) ...", flush=True)
    return [str(p) for p in make_video_set(folder, n_files=n, **spec)]


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="video files or folders (default: generated)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--files", type=int, default=None, help="generated files (default 200)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 32)")
    p.add_argument(
        "--batches",
        type=int,
        default=None,
        help="batches for (1) and (2) (default 20; the later rows read 4x their lookahead)",
    )
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers in (1)")
    args = p.parse_args(None if argv is None else list(argv))
    batch = args.batch_size or (8 if args.quick else 32)
    n_batches = args.batches or (3 if args.quick else 20)
    n_images = batch * n_batches
    files = video_files(args)
    dataset = VideoDataset(files, 1)  # indexes every file once (cached on disk)
    gop = float(np.mean(np.concatenate([ix.gop_lengths() for ix in dataset.indexes])))
    have_cuda = torch.cuda.is_available()
    print(
        f"{len(files)} files, {len(dataset)} frames, mean GOP {gop:.1f} frames; "
        f"{n_batches} batches of {batch} images per row; {os.cpu_count()} CPU cores; "
        f"GPU: {torch.cuda.get_device_name() if have_cuda else 'none'}"
    )
    print(
        "dec/img: frames decoded per image delivered (a seek decodes from the GOP's keyframe "
        "to the frame)"
    )
    print(f"{'#':<5} {'what':<34} {'setting':<30} {'images/s':>9} {'dec/img':>8}  exact")

    baseline(files, dataset, batch, n_batches, args.workers)
    run_prefetcher(
        files,
        "(2)",
        f"tvl_async, {len(files)} files, uniform",
        "lookahead 1 batch",
        n_images,
        batch_size=batch,
        lookahead=batch,
    )
    # planning ahead pays once the window holds several samples of a GOP; the rows below run
    # 4x the window so that frames decoded for samples still in the window weigh little
    ahead = 64 if args.quick else 1024
    n_images = max(n_images, 4 * ahead)
    run_prefetcher(
        files,
        "(3)",
        "same batch, plan ahead",
        f"lookahead {ahead} samples",
        n_images,
        batch_size=batch,
        lookahead=ahead,
    )
    chunk = max(2, min(int(gop), batch) // 4)
    run_prefetcher(
        files,
        "(4)",
        "relaxed: chunked",
        f"chunk {chunk}, lookahead {ahead}",
        n_images,
        batch_size=batch,
        sampling="chunked",
        chunk_size=chunk,
        lookahead=ahead,
    )
    buffer = max(4 * batch, min(1024, len(dataset) // 4))
    run_prefetcher(
        files,
        "(4)",
        "relaxed: gop_shuffle",
        f"buffer {buffer}, lookahead {ahead}",
        n_images,
        batch_size=batch,
        sampling="gop_shuffle",
        shuffle_buffer=buffer,
        lookahead=ahead,
    )
    run_prefetcher(
        files,
        "(4)",
        "sequential reading",
        "shuffle=False",
        n_images,
        batch_size=batch,
        shuffle=False,
        lookahead=ahead,
    )

    header("(4.1) how far relaxed sampling is from i.i.d. (measured on the samplers)")
    bias_table(dataset, batch, chunk, buffer)
    gpu_sections(files, batch, n_images, have_cuda)
    speedup = float(ROWS[2][3]) / max(float(ROWS[0][3]), 1e-9)
    print(
        f"\nplan-ahead tvl_async vs the PyAV-seek DataLoader: {speedup:.1f}x images/s "
        f"(same batch size, same uniform sampling, exact frames); see docs/exercise.md"
    )
    ok = all(r[5] in ("yes", "-") for r in ROWS)
    return 0 if ok and math.isfinite(speedup) else 1


if __name__ == "__main__":
    sys.exit(exit_on_error(main, "video_data_exercise.py"))

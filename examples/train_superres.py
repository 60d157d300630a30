"""NVVL's super-resolution example, small: a VSRNet-like network trained from mp4 files or PNGs.

    python examples/train_superres.py                  # both loaders, then the table
    python examples/train_superres.py --quick          # tiny settings, seconds (the tests)
    python examples/train_superres.py --loader tvl --dtype bf16 --device cuda

The network (after Kappeler et al., "Video Super-Resolution with Convolutional Neural Networks",
the model of NVVL's example) takes ``--frames`` (3 or 5) consecutive frames at half resolution,
upsamples them, and predicts the middle frame at full resolution (a residual over the upsampled
middle frame).

Two loaders feed the same training loop:

- ``tvl``: a ``Prefetcher`` over the mp4 files. One decode gives both outputs: ``input`` (every
  frame of the clip, resized to half size, float in [0, 1]) and ``target`` (only the middle frame,
  ``index_map=[-1, -1, 0, -1, -1]``, full size). On a GPU, batches arrive on the GPU.
- ``png``: the frames extracted to PNG files by ``tools/extract_frames.py``, read by a standard
  ``torch.utils.data.DataLoader`` with worker processes, resized on the CPU.

Each loader runs in its own process (so that peak memory is its own) and the table compares them
on NVVL's columns: data time per iteration (the training loop waiting for a batch), CPU load
(CPU seconds of the process and its workers per wall second), peak host memory (``ru_maxrss``),
and the disk space of the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from extract_frames import extract, read_png  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------- model


class VSRNet(nn.Module):
    """VSRNet-like: frames upsampled to the target size, stacked, three convolutions."""

    def __init__(self, frames: int, width: int = 32) -> None:
        super().__init__()
        self.frames = frames
        self.body = nn.Sequential(
            nn.Conv2d(3 * frames, width, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width // 2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, 3, 5, padding=2),
        )

    def forward(self, clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``clip``: ``[B, F, 3, h, w]`` low-resolution frames -> ``[B, 3, H, W]``."""
        b, f, c, h, w = clip.shape
        up = F.interpolate(
            clip.reshape(b * f, c, h, w), size=size, mode="bilinear", align_corners=False
        ).reshape(b, f * c, *size)
        middle = up[:, (f // 2) * c : (f // 2 + 1) * c]
        out: torch.Tensor = middle + self.body(up)
        return out


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.float().clamp(0, 1), target.float()).item()
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item()


# ---------------------------------------------------------------------------------- data


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(n_files=2, n_frames=24, width=64, height=48, gop=8, iters=4, batch_size=2)
    return dict(n_files=8, n_frames=120, width=256, height=192, gop=16, iters=60, batch_size=4)


def data_root(quick: bool) -> Path:
    from tvl_async import cache_dir

    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    return base / ("examples-superres-quick" if quick else "examples-superres")


def prepare(quick: bool, verbose: bool = True) -> tuple[list[Path], Path, dict[str, float]]:
    """Write the videos and extract their PNGs once (cached); returns files, PNG folder, costs."""
    from tvl_async.cli.synthetic import make_video_set

    s = settings(quick)
    root = data_root(quick)
    t0 = time.perf_counter()
    videos = make_video_set(
        root / "videos",
        n_files=s["n_files"],
        n_frames=s["n_frames"],
        width=s["width"],
        height=s["height"],
        gop=s["gop"],
    )
    t1 = time.perf_counter()
    png_dir = root / "png"
    png_bytes = 0
    for v in videos:
        png_bytes += extract(v, png_dir, quiet=True)[1]
    t2 = time.perf_counter()
    if verbose:
        print(
            f"data: {root} ({len(videos)} videos of {s['n_frames']} frames "
            f"{s['width']}x{s['height']})"
        )
    return (
        videos,
        png_dir,
        {
            "mp4_bytes": sum(v.stat().st_size for v in videos),
            "png_bytes": png_bytes,
            "prep_s": t2 - t0,
            "extract_s": t2 - t1,
        },
    )


class PngClips(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Clips of ``frames`` consecutive PNG frames: (half-size input clip, full-size middle)."""

    def __init__(self, png_dir: Path, frames: int, dtype: torch.dtype) -> None:
        self.frames, self.dtype = frames, dtype
        self.samples: list[list[Path]] = []
        for folder in sorted(p for p in png_dir.iterdir() if p.is_dir()):
            files = sorted(folder.glob("frame_*.png"))
            self.samples += [files[i : i + frames] for i in range(len(files) - frames + 1)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = (
            torch.stack([torch.from_numpy(read_png(p)).permute(2, 0, 1) for p in self.samples[i]])
            .float()
            .div_(255)
        )
        h, w = clip.shape[-2:]
        small = F.interpolate(
            clip, size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False
        )
        return small.to(self.dtype), clip[self.frames // 2].to(self.dtype)


def tvl_batches(
    videos: list[Path],
    frames: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    lookahead: int,
) -> Any:
    """Endless (input, target) batches from a Prefetcher: two outputs from one decode."""
    from tvl_async import Prefetcher, ProcessDesc, load_index

    ix = load_index(videos[0])
    index_map = [-1] * frames
    index_map[frames // 2] = 0
    processing = {
        "input": ProcessDesc(
            scale_width=ix.width // 2, scale_height=ix.height // 2, dtype=dtype, normalized=True
        ),
        "target": ProcessDesc(index_map=index_map, dtype=dtype, normalized=True),
    }
    # lookahead bounds the finished samples held for reordering (memory: lookahead x one
    # sample's outputs); with epochs=None the default (from a 2 GiB budget) would hold up to
    # 16384 samples, which only costs memory and a slow first batch on a dataset this small
    with Prefetcher(
        videos,
        seq_len=frames,
        batch_size=batch_size,
        device=device,
        processing=processing,
        epochs=None,
        seed=0,
        drop_last=True,
        lookahead=lookahead,
    ) as it:
        for batch in it:
            yield batch["input"], batch["target"][:, 0]


def png_batches(
    png_dir: Path,
    frames: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
    workers: int,
) -> Any:
    """Endless (input, target) batches from PNG files through a standard DataLoader."""
    dataset = PngClips(png_dir, frames, dtype)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# ---------------------------------------------------------------------------------- training


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # DataLoader workers, once joined
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train with one loader; returns the measurements (runs in this process)."""
    s = settings(args.quick)
    iters = args.iters or s["iters"]
    batch_size = args.batch_size or s["batch_size"]
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    videos, png_dir, _ = prepare(args.quick, verbose=False)
    torch.manual_seed(0)
    model = VSRNet(args.frames).to(device=device, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if args.loader == "tvl":
        batches = tvl_batches(videos, args.frames, batch_size, device, dtype, args.lookahead)
    else:
        batches = png_batches(png_dir, args.frames, batch_size, device, dtype, args.workers)
    data_times, step_times = [], []
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    first_psnr = last_psnr = 0.0
    for it in range(iters):
        t0 = time.perf_counter()
        x, y = next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t1 = time.perf_counter()
        pred = model(x, (y.shape[-2], y.shape[-1]))
        loss = F.mse_loss(pred.float(), y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        data_times.append(t1 - t0)
        step_times.append(t2 - t1)
        if it == 0:
            first_psnr = psnr(pred.detach(), y)
        last_psnr = psnr(pred.detach(), y)
    batches.close()  # stops the Prefetcher / joins the DataLoader workers
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    steady = data_times[1:] or data_times
    return {
        "loader": args.loader,
        "iters": iters,
        "batch_size": batch_size,
        "frames": args.frames,
        "dtype": args.dtype,
        "device": str(device),
        "input": list(x.shape),
        "target": list(y.shape),
        "data_ms": 1000 * sum(steady) / len(steady),
        "first_data_ms": 1000 * data_times[0],
        "step_ms": 1000 * sum(step_times) / iters,
        "wall_s": wall,
        "cpu_load": cpu / wall,
        "maxrss_mb": me / 1024,
        "workers_maxrss_mb": kids / 1024,
        "workers": args.workers if args.loader == "png" else 0,
        "psnr_first": first_psnr,
        "psnr_last": last_psnr,
    }


def run_child(args: argparse.Namespace, loader: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--loader",
        loader,
        "--json",
        "--frames",
        str(args.frames),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--workers",
        str(args.workers),
        "--lookahead",
        str(args.lookahead),
    ]
    for flag, value in (("--iters", args.iters), ("--batch-size", args.batch_size)):
        if value:
            cmd += [flag, str(value)]
    if args.quick:
        cmd.append("--quick")
    r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        raise RuntimeError(f"the {loader} run failed:\n{r.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def print_table(rows: list[dict[str, Any]], costs: dict[str, float]) -> None:
    r0 = rows[0]
    print(
        f"{r0['iters']} iterations, batch {r0['batch_size']}, {r0['frames']} frames in "
        f"{tuple(r0['input'][-2:])} -> 1 out {tuple(r0['target'][-2:])}, {r0['dtype']} on "
        f"{r0['device']}"
    )
    head = (
        f"{'loader':<24} {'data ms/iter':>12} {'step ms':>8} {'CPU load':>9} "
        f"{'peak host MB':>16} {'disk MB':>8} {'PSNR dB':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["loader"] == "tvl":
            name, disk = "tvl_async (mp4)", costs["mp4_bytes"]
            mem = f"{r['maxrss_mb']:.0f}"
        else:
            name, disk = f"DataLoader+PNG ({r['workers']} wkr)", costs["png_bytes"]
            mem = f"{r['maxrss_mb']:.0f} + {r['workers']}x{r['workers_maxrss_mb']:.0f}"
        print(
            f"{name:<24} {r['data_ms']:12.2f} {r['step_ms']:8.1f} {r['cpu_load']:9.2f} "
            f"{mem:>16} {disk / 1e6:8.2f} {r['psnr_first']:5.1f}->{r['psnr_last']:5.1f}"
        )
    print(
        "data ms/iter: mean wait for a batch after the first (first batch: "
        + ", ".join(f"{r['loader']} {r['first_data_ms']:.0f} ms" for r in rows)
        + "); "
        f"CPU load: CPU s / wall s of the process and its workers; PNG extraction took "
        f"{costs['extract_s']:.1f} s once"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loader", default="both", choices=["both", "tvl", "png"])
    p.add_argument("--quick", action="store_true", help="tiny videos, 4 iterations (seconds)")
    p.add_argument("--iters", type=int, default=None, help="iterations (default 60)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch (default 4)")
    p.add_argument("--frames", type=int, default=5, choices=[3, 5], help="input frames")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for --loader png")
    p.add_argument(
        "--lookahead",
        type=int,
        default=64,
        help="Prefetcher lookahead in samples for --loader tvl (default 64)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args(argv)
    if args.loader != "both":
        result = train(args)
        if args.json:
            print(json.dumps(result))
        else:
            print_table([result], prepare(args.quick, verbose=False)[2])
        return 0
    _, _, costs = prepare(args.quick)
    rows = [run_child(args, "tvl"), run_child(args, "png")]
    print_table(rows, costs)
    return 0


if __name__ == "__main__":
    from tvl_async.cli import exit_on_error

    sys.exit(exit_on_error(main, "train_superres.py"))

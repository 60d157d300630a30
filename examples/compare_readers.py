"""Compare frame readers on one file: tvl_async's VideoLoader modes, plain PyAV, TorchCodec, decord.

    python examples/compare_readers.py [FILE] [--passes 5] [--quick]

Two requests: consecutive frames (10-19) and spaced frames (10, 20, ..., 190), each returned as
one tensor in THWC ([T, H, W, 3]) and TCHW ([T, 3, H, W]) layout, uint8. Every reader opens the
file, reads, and closes, once to warm up and then ``--passes`` times; the table gives mean ± std
in milliseconds of the open and of the read, and whether every frame returned is exactly the
frame asked for (the generated test video carries its frame index in its pixels; with your own
FILE that column says "n/a").

Readers:

- ``tvl seek``: ``VideoLoader.read_frames_at(indices, mode="seek")``: one seek per frame.
- ``tvl stream``: ``mode="stream"``: decode the whole range once, keep the frames asked for.
- ``tvl auto``: the default: one seek per run of frames in one GOP.
- ``pyav``: plain PyAV as people write it: seek to the frame's time (constant frame rate
  assumed), decode forward to it; once for the consecutive run, once per frame when spaced.
- ``torchcodec``, ``decord``: ``get_frames_at`` / ``get_batch`` when the package is installed
  (imported lazily; "not installed" otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvl_async import VideoLoader
from tvl_async.cli.synthetic import frame_index_of, write_video

Reader = Callable[[str, Sequence[int], str], tuple[float, torch.Tensor]]


def test_video(quick: bool) -> Path:
    from tvl_async import cache_dir

    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    if quick:
        path = base / "examples-readers" / "quick_200f_96x64_gop25.mp4"
        spec: dict[str, Any] = dict(n_frames=200, width=96, height=64, gop=25)
    else:
        path = base / "examples-readers" / "h264_240f_640x360_gop30.mp4"
        spec = dict(n_frames=240, width=640, height=360, gop=30, texture=0.5)
    if not path.exists():
        tmp = path.with_name(".tmp_" + path.name)
        write_video(tmp, **spec)
        tmp.replace(path)
    return path


def to_layout(thwc: torch.Tensor, layout: str) -> torch.Tensor:
    return thwc if layout == "THWC" else thwc.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------- readers


def tvl_reader(mode: str) -> Reader:
    def read(path: str, indices: Sequence[int], layout: str) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        with VideoLoader(path) as video:
            t_open = time.perf_counter() - t0
            return t_open, video.read_frames_at(indices, layout=layout, mode=mode)  # type: ignore[arg-type]

    return read


def pyav_read(path: str, indices: Sequence[int], layout: str) -> tuple[float, torch.Tensor]:
    """What a plain PyAV user writes: seek by time, decode forward to the frame."""
    import av

    t0 = time.perf_counter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or Fraction(25)
        tb = stream.time_base
        start = stream.start_time or 0
        t_open = time.perf_counter() - t0

        def pts_of(i: int) -> int:
            return int(start + round(Fraction(i) / rate / tb))

        frames: dict[int, np.ndarray] = {}
        wanted = sorted(set(indices))
        k = 0
        while k < len(wanted):
            # a consecutive run is read with one seek; a lone frame needs its own
            run = [wanted[k]]
            while k + len(run) < len(wanted) and wanted[k + len(run)] == run[-1] + 1:
                run.append(wanted[k + len(run)])
            container.seek(pts_of(run[0]), stream=stream, backward=True)
            targets = {pts_of(i): i for i in run}
            last = pts_of(run[-1])
            for frame in container.decode(stream):
                if frame.pts in targets:
                    frames[targets[frame.pts]] = frame.to_ndarray(format="rgb24")
                if frame.pts is not None and frame.pts >= last:
                    break
            k += len(run)
    thwc = torch.from_numpy(np.stack([frames[i] for i in indices]))
    return t_open, to_layout(thwc, layout)


def torchcodec_reader() -> Reader | str:
    try:
        from torchcodec.decoders import VideoDecoder  # type: ignore[import-not-found]
    except Exception as e:  # ImportError, or a torchcodec built for another torch/FFmpeg
        return "not installed" if isinstance(e, ImportError) else f"unusable ({e})"

    def read(path: str, indices: Sequence[int], layout: str) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        order = "NHWC" if layout == "THWC" else "NCHW"
        decoder = VideoDecoder(path, dimension_order=order)
        t_open = time.perf_counter() - t0
        return t_open, decoder.get_frames_at(list(indices)).data

    return read


def decord_reader() -> Reader | str:
    try:
        import decord  # type: ignore[import-not-found]
    except Exception as e:
        return "not installed" if isinstance(e, ImportError) else f"unusable ({e})"

    def read(path: str, indices: Sequence[int], layout: str) -> tuple[float, torch.Tensor]:
        t0 = time.perf_counter()
        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        t_open = time.perf_counter() - t0
        thwc = torch.from_numpy(vr.get_batch(list(indices)).asnumpy())
        return t_open, to_layout(thwc, layout)

    return read


# ---------------------------------------------------------------------------------- bench


def bench(
    read: Reader, path: str, indices: Sequence[int], layout: str, passes: int, check: bool
) -> tuple[list[float], list[float], str]:
    read(path, indices, layout)  # warm-up (page cache, index cache, decoder libraries)
    opens, reads = [], []
    ok = "n/a"
    for _ in range(passes):
        t0 = time.perf_counter()
        t_open, frames = read(path, indices, layout)
        total = time.perf_counter() - t0
        opens.append(t_open * 1000)
        reads.append((total - t_open) * 1000)
    if check:
        hwc = frames if layout == "THWC" else frames.permute(0, 2, 3, 1)
        assert hwc.shape[0] == len(indices) and hwc.shape[-1] == 3, tuple(frames.shape)
        got = [frame_index_of(f, layout="hwc") for f in hwc]
        ok = "yes" if got == list(indices) else f"NO {got[:4]}..."
    return opens, reads, ok


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:8.1f} ± {std:5.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", help="video (default: a generated 240-frame H.264 file)")
    p.add_argument("--passes", type=int, default=None, help="timed passes (default 5)")
    p.add_argument("--quick", action="store_true", help="small file, 2 passes (seconds)")
    args = p.parse_args(argv)
    path = Path(args.file) if args.file else test_video(args.quick)
    passes = args.passes or (2 if args.quick else 5)
    check = args.file is None
    with VideoLoader(path) as v:
        n, info = v.n_frames, f"{v.width}x{v.height} {v.index.codec}, {v.n_frames} frames"
        gop = float(np.mean(v.index.gop_lengths()))
    if n < 191:
        print(f"error: {path} has {n} frames; spaced frames need at least 191", file=sys.stderr)
        return 2
    requests = {"10..19": list(range(10, 20)), "10,20..190": list(range(10, 200, 10))}
    readers: dict[str, Reader | str] = {
        "tvl seek": tvl_reader("seek"),
        "tvl stream": tvl_reader("stream"),
        "tvl auto": tvl_reader("auto"),
        "pyav": pyav_read,
        "torchcodec": torchcodec_reader(),
        "decord": decord_reader(),
    }
    print(
        f"file: {path} ({info}, mean GOP {gop:.1f} frames); {passes} passes after 1 warm-up; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'reader':<11} {'frames':<11} {'layout':<6} {'open ms':>16} {'read ms':>16}  exact")
    failures = 0
    for name, reader in readers.items():
        if isinstance(reader, str):
            print(f"{name:<11} {reader}")
            continue
        for req, indices in requests.items():
            for layout in ("THWC", "TCHW"):
                opens, reads, ok = bench(reader, str(path), indices, layout, passes, check)
                failures += ok.startswith("NO")
                print(
                    f"{name:<11} {req:<11} {layout:<6} {fmt(opens):>16} {fmt(reads):>16}  {ok}",
                    flush=True,
                )
    return 1 if failures else 0


if __name__ == "__main__":
    from tvl_async.cli import exit_on_error

    sys.exit(exit_on_error(main, "compare_readers.py"))

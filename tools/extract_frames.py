"""Extract every frame of videos to PNG files (the dataset layout NVVL was built to replace).

    python tools/extract_frames.py VIDEO_OR_FOLDER ... -o OUT [--level 6] [--step 1]

Writes ``OUT/<video stem>/frame_000000.png, ...``: frame ``i`` is exactly ``VideoLoader``'s frame
``i`` (the frame a player shows). A ``.done`` file marks a finished video so that a second run
skips it. PNGs are written and read with Pillow (C speed), so the PNG baseline of
``examples/train_superres.py --loader png`` is not handicapped by a Python decoder. Needs
Pillow (the ``bench`` extra: ``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes of an ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 image,
    zlib ``level`` 0..9 (Pillow's encoder)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image dtype: invalid value {a.dtype}; allowed: uint8")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _CHANNELS:
        raise ValueError(
            f"image shape: invalid value {a.shape}; allowed: [H, W] or [H, W, C] with C in 1, 3, 4"
        )
    img = Image.fromarray(np.ascontiguousarray(a[:, :, 0] if a.shape[2] == 1 else a))
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=level)
    return out.getvalue()


def write_png(path: str | Path, image: np.ndarray, level: int = 6) -> int:
    """Write ``image`` (see :func:`encode_png`) to ``path``; returns the bytes written."""
    data = encode_png(image, level)
    Path(path).write_bytes(data)
    return len(data)


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes with Pillow: ``[H, W, C]`` uint8, C = 1 (gray), 3 (RGB) or 4 (RGBA);
    palette and other modes come out as RGB.

    Raises:
        ValueError: the bytes are not a PNG file.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    with Image.open(io.BytesIO(data)) as img:
        plain = img if img.mode in ("L", "RGB", "RGBA") else img.convert("RGB")
        a = np.array(plain)  # a writable copy (torch.from_numpy wants one)
    return a[:, :, None] if a.ndim == 2 else a


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG file as ``[H, W, C]`` uint8 (see :func:`decode_png`)."""
    return decode_png(Path(path).read_bytes())


def extract(
    video: str | Path, out_dir: str | Path, *, step: int = 1, level: int = 6, quiet: bool = False
) -> tuple[int, int]:
    """Write every ``step``-th frame of ``video`` into ``out_dir/<stem>/``; skip a finished one.

    Returns ``(frames, bytes)`` of the folder. Blocks while decoding and compressing.
    """
    from tvl_async import VideoLoader

    target = Path(out_dir) / Path(video).stem
    done = target / ".done"
    if done.exists():
        files = sorted(target.glob("frame_*.png"))
        return len(files), sum(f.stat().st_size for f in files)
    target.mkdir(parents=True, exist_ok=True)
    total = n = 0
    with VideoLoader(video) as v:
        for i, frame in enumerate(v.read_all_frames()):
            if i % step:
                continue
            total += write_png(target / f"frame_{i:06d}.png", frame.permute(1, 2, 0).numpy(), level)
            n += 1
    done.write_text(f"{n} frames\n")
    if not quiet:
        print(f"{video} -> {target}: {n} PNG files, {total / 1e6:.1f} MB")
    return n, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", help="video files or folders")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--step", type=int, default=1, help="keep every N-th frame (default 1)")
    p.add_argument(
        "--level",
        type=int,
        default=6,
        choices=range(10),
        metavar="0..9",
        help="zlib compression level (default 6)",
    )
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        from tvl_async import find_videos

        videos = find_videos(args.inputs)
        t0 = time.perf_counter()
        frames = size = 0
        for video in videos:
            n, b = extract(video, args.output, step=args.step, level=args.level, quiet=args.quiet)
            frames += n
            size += b
    except Exception as e:
        print(f"extract_frames.py: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{len(videos)} videos, {frames} PNG files, {size / 1e6:.1f} MB in "
        f"{time.perf_counter() - t0:.1f} s -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    from tvl_async.cli import exit_on_error

    sys.exit(exit_on_error(main, "extract_frames.py"))

"""Extract every frame of videos to PNG files (the dataset layout NVVL was built to replace).

    python tools/extract_frames.py VIDEO_OR_FOLDER ... -o OUT [--level 6] [--step 1]

Writes ``OUT/<video stem>/frame_000000.png, ...``: frame ``i`` is exactly ``VideoLoader``'s frame
``i`` (the frame a player shows). A ``.done`` file marks a finished video so that a second run
skips it. PNGs are written by a small numpy + zlib writer (``write_png``), and read back by
``read_png``, so neither needs Pillow; ``read_png`` hands PNGs it cannot decode (interlaced,
Average/Paeth filters, palettes) to Pillow when it is installed.

``examples/train_superres.py --loader png`` trains from these files with a standard DataLoader.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (gray, RGB, RGBA)
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """PNG bytes of an ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 image.

    Every row uses the "Up" filter (difference with the row above), which numpy computes in one
    step and which compresses natural images about as well as libpng's adaptive choice.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image dtype: invalid value {a.dtype}; allowed: uint8")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _COLOR_TYPES:
        raise ValueError(f"image shape: invalid value {a.shape}; allowed: [H, W] or [H, W, C] "
                         f"with C in 1, 3, 4")
    h, w, c = a.shape
    rows = a.reshape(h, w * c)
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps modulo 256, as PNG wants
    raw = np.empty((h, 1 + w * c), np.uint8)
    raw[:, 0] = 2  # filter type Up (row 0: the row above counts as zeros)
    raw[:, 1:] = up
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _chunk(b"IEND", b""))


def write_png(path: str | Path, image: np.ndarray, level: int = 6) -> int:
    """Write ``image`` (see :func:`encode_png`) to ``path``; returns the bytes written."""
    data = encode_png(image, level)
    Path(path).write_bytes(data)
    return len(data)


def decode_png(data: bytes) -> np.ndarray:
    """Decode 8-bit gray/RGB/RGBA non-interlaced PNGs with None, Sub or Up row filters.

    Returns ``[H, W, C]`` uint8. Other PNGs go to Pillow when it is installed; otherwise
    ``ValueError`` says what is not supported.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    pos, idat = 8, []
    header = b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or color not in _CHANNELS or interlace:
        return _pillow(data, f"bit depth {depth}, colour type {color}, interlace {interlace}")
    c = _CHANNELS[color]
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + w * c)
    filters = raw[:, 0]
    if np.any(filters > 2):
        return _pillow(data, f"row filters {sorted(set(filters.tolist()))}")
    out = np.empty((h, w * c), np.uint8)
    prev = np.zeros(w * c, np.uint8)
    for y in range(h):
        row = raw[y, 1:]
        f = filters[y]
        if f == 1:  # Sub: add the pixel to the left, per channel
            row = np.cumsum(row.reshape(w, c), axis=0, dtype=np.uint64).astype(np.uint8).ravel()
        elif f == 2:  # Up
            row = row + prev
        out[y] = row
        prev = out[y]
    return out.reshape(h, w, c)


def _pillow(data: bytes, what: str) -> np.ndarray:
    try:
        import io

        from PIL import Image  # type: ignore[import-not-found]
    except ImportError:
        raise ValueError(f"this small PNG reader does not support {what}; install Pillow "
                         f"for such files") from None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG file as ``[H, W, C]`` uint8 (see :func:`decode_png`)."""
    return decode_png(Path(path).read_bytes())


def extract(video: str | Path, out_dir: str | Path, *, step: int = 1, level: int = 6,
            quiet: bool = False) -> tuple[int, int]:
    """Write every ``step``-th frame of ``video`` into ``out_dir/<stem>/``; skip a finished one.

    Returns ``(frames, bytes)`` of the folder. Blocks while decoding and compressing.
    """
    from tvl_async._loader import VideoLoader

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
            total += write_png(target / f"frame_{i:06d}.png",
                               frame.permute(1, 2, 0).numpy(), level)
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
    p.add_argument("--level", type=int, default=6, choices=range(10), metavar="0..9",
                   help="zlib compression level (default 6)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        from tvl_async._index import find_videos

        videos = find_videos(args.inputs)
        t0 = time.perf_counter()
        frames = size = 0
        for video in videos:
            n, b = extract(video, args.output, step=args.step, level=args.level,
                           quiet=args.quiet)
            frames += n
            size += b
    except Exception as e:
        print(f"extract_frames.py: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(videos)} videos, {frames} PNG files, {size / 1e6:.1f} MB in "
          f"{time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    from tvl_async.cli.main import exit_on_error

    sys.exit(exit_on_error(main, "extract_frames.py"))

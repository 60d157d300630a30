"""Synthetic test videos whose frames carry their own index in their pixels.

Used by the test suite, ``tvl-async demo`` and ``tvl-async bench`` so that nothing needs a network
or large files in git. Each frame shows a 4x4 grid of black or white cells: cell ``k`` (row-major)
is white when bit ``k`` of the frame index is set. The grid survives lossy codecs, chroma
subsampling, 10-bit formats and resizing down to about 16x16 pixels, so a reader can tell exactly
which frame came back (:func:`frame_index_of`).

Everything here runs in the calling thread and blocks while it encodes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

GRID = 4
BITS = GRID * GRID
MAX_INDEX = (1 << BITS) - 1


def index_pattern(index: int, width: int, height: int, *, texture: float = 0.0) -> np.ndarray:
    """An ``[height, width, 3]`` uint8 RGB image encoding ``index`` as a 4x4 bit grid.

    Args:
        index: the value to encode, 0..65535.
        width: image width in pixels.
        height: image height in pixels.
        texture: amplitude (0..1) of a moving noise texture added inside each cell to make the
            content cost what real video costs to decode; 0 gives flat cells.
    """
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index {index} cannot be encoded: allowed 0..{MAX_INDEX}")
    ys = (np.arange(height) * GRID // height).astype(np.int64)
    xs = (np.arange(width) * GRID // width).astype(np.int64)
    cell = ys[:, None] * GRID + xs[None, :]
    bits = (index >> cell) & 1
    # Dark cells 32, bright cells 224: far from the threshold, away from clipping.
    luma = (32 + 192 * bits).astype(np.float32)
    if texture > 0:
        rng = np.random.default_rng(index)
        noise = rng.integers(-24, 25, size=(height, width)).astype(np.float32)
        luma = luma + texture * noise
    img = np.clip(luma, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def frame_index_of(frame: torch.Tensor | np.ndarray, layout: str = "chw") -> int:
    """Read back the index encoded by :func:`index_pattern` from one decoded frame.

    Args:
        frame: a ``[3, H, W]`` (``layout="chw"``) or ``[H, W, 3]`` (``"hwc"``) RGB frame, uint8
            (0-255) or float (0-1), on any device. A single-channel ``[1, H, W]`` frame works too.
        layout: ``"chw"`` or ``"hwc"``.
    """
    t = torch.as_tensor(frame).detach().to("cpu", torch.float32)
    if layout == "hwc":
        t = t.permute(2, 0, 1)
    if t.max() <= 1.0 + 1e-6 and t.dtype.is_floating_point:
        t = t * 255.0
    luma = t.mean(dim=0)
    h, w = luma.shape
    value = 0
    for k in range(BITS):
        r, c = divmod(k, GRID)
        y0, y1 = (r * h) // GRID, ((r + 1) * h) // GRID
        x0, x1 = (c * w) // GRID, ((c + 1) * w) // GRID
        # Look at the middle half of the cell only: edges blur under compression and resizing.
        dy, dx = max((y1 - y0) // 4, 0), max((x1 - x0) // 4, 0)
        patch = luma[y0 + dy : max(y1 - dy, y0 + dy + 1), x0 + dx : max(x1 - dx, x0 + dx + 1)]
        if float(patch.mean()) > 128.0:
            value |= 1 << k
    return value


@dataclass
class VideoSpec:
    """How to write one synthetic video.

    Attributes:
        n_frames: number of frames shown.
        codec: FFmpeg encoder name (``libx264``, ``libx265``, ``libvpx-vp9``, ``libsvtav1``,
            ``mpeg4``, ``mjpeg``).
        width, height: frame size in pixels.
        fps: nominal rate, frames per second.
        gop: keyframe interval in frames.
        bframes: maximum consecutive B-frames (ignored by codecs without them).
        pix_fmt: encoder pixel format (``yuv420p``, ``yuv420p10le``, ``yuvj420p``...).
        pts: explicit presentation timestamps, one per frame, in ``time_base`` units (for
            variable frame rates and non-zero start times); default ``start_pts + i``.
        time_base: the stream time base; default ``1/fps``.
        start_pts: first pts when ``pts`` is not given.
        audio_first: add a silent audio stream before the video stream.
        texture: noise amplitude inside the cells (see :func:`index_pattern`).
        options: extra encoder options.
    """

    n_frames: int = 48
    codec: str = "libx264"
    width: int = 128
    height: int = 96
    fps: int = 25
    gop: int = 12
    bframes: int = 2
    pix_fmt: str = "yuv420p"
    pts: Sequence[int] | None = None
    time_base: Fraction | None = None
    start_pts: int = 0
    audio_first: bool = False
    texture: float = 0.0
    options: dict[str, str] = field(default_factory=dict)


def _encoder_options(spec: VideoSpec) -> dict[str, str]:
    opts: dict[str, str] = {}
    if spec.codec == "libx264":
        opts = {
            "preset": "ultrafast" if spec.bframes == 0 else "veryfast",
            "crf": "18",
            "bf": str(spec.bframes),
            "keyint": str(spec.gop),
            "min-keyint": str(spec.gop),
            "sc_threshold": "0",
            "threads": "1",
        }
        opts["x264-params"] = (
            f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
        )
    elif spec.codec == "libx265":
        opts = {
            "preset": "ultrafast",
            "crf": "18",
            "x265-params": f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:"
            f"bframes={spec.bframes}:log-level=error:pools=1:frame-threads=1",
        }
    elif spec.codec == "libvpx-vp9":
        opts = {
            "deadline": "realtime",
            "cpu-used": "8",
            "crf": "20",
            "b": "0",
            "lag-in-frames": "0",
            "row-mt": "0",
        }
    elif spec.codec == "libsvtav1":
        opts = {"preset": "10", "crf": "12", "svtav1-params": f"keyint={spec.gop}:lp=1:log-level=0"}
    elif spec.codec == "mpeg4" or spec.codec == "mjpeg":
        opts = {"qscale": "2"}
    opts.update(spec.options)
    return opts


def _add_silent_audio(
    container: av.container.OutputContainer, path: Path
) -> av.audio.stream.AudioStream:
    codec = (
        "libopus"
        if path.suffix == ".webm"
        else ("mp2" if path.suffix in (".ts", ".avi") else "aac")
    )
    return container.add_stream(codec, rate=48000)  # type: ignore[return-value]


def write_video(
    path: str | os.PathLike[str], spec: VideoSpec | None = None, **overrides: object
) -> Path:
    """Encode a synthetic video whose frame ``i`` shows the index ``i``; blocks until written.

    Args:
        path: output file; the container follows the suffix (.mp4, .mkv, .webm, .mov, .avi, .ts).
        spec: what to write; keyword ``overrides`` replace its fields.

    Returns:
        The path written.
    """
    spec = spec or VideoSpec()
    for key, value in overrides.items():
        if not hasattr(spec, key):
            raise TypeError(f"write_video got an unknown option {key!r}")
        setattr(spec, key, value)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    time_base = spec.time_base or Fraction(1, spec.fps)
    pts = (
        list(spec.pts)
        if spec.pts is not None
        else [spec.start_pts + i for i in range(spec.n_frames)]
    )
    if len(pts) != spec.n_frames:
        raise ValueError(f"{out}: got {len(pts)} pts for {spec.n_frames} frames")
    with av.open(str(out), mode="w") as container:
        audio = _add_silent_audio(container, out) if spec.audio_first else None
        stream = container.add_stream(spec.codec, rate=spec.fps, options=_encoder_options(spec))
        stream.width = spec.width
        stream.height = spec.height
        stream.pix_fmt = spec.pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if spec.codec in ("mpeg4",):
            stream.codec_context.gop_size = spec.gop
            stream.codec_context.max_b_frames = spec.bframes
        elif spec.codec not in ("libx264", "libx265", "mjpeg"):
            stream.codec_context.gop_size = spec.gop
        if audio is not None:
            _write_silence(container, audio, seconds=float(pts[-1] - pts[0] + 1) * float(time_base))
        for i, p in enumerate(pts):
            img = index_pattern(i, spec.width, spec.height, texture=spec.texture)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame = frame.reformat(format=spec.pix_fmt)
            frame.pts = p
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def _write_silence(
    container: av.container.OutputContainer, audio: av.audio.stream.AudioStream, seconds: float
) -> None:
    ctx = audio.codec_context
    samples_per_frame = ctx.frame_size or 1024
    rate = ctx.sample_rate or 48000
    total = max(1, math.ceil(seconds * rate / samples_per_frame))
    fmt = ctx.format.name if ctx.format is not None else "fltp"
    layout = ctx.layout.name if ctx.layout is not None else "stereo"
    channels = ctx.layout.nb_channels if ctx.layout is not None else 2
    planar = fmt.endswith("p")
    dtype = {"flt": np.float32, "fltp": np.float32, "s16": np.int16, "s16p": np.int16}.get(
        fmt, np.float32
    )
    for k in range(total):
        shape = (channels, samples_per_frame) if planar else (1, samples_per_frame * channels)
        frame = av.AudioFrame.from_ndarray(np.zeros(shape, dtype=dtype), format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = k * samples_per_frame
        frame.time_base = Fraction(1, rate)
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode(None):
        container.mux(packet)


def make_video_set(
    folder: str | os.PathLike[str],
    n_files: int = 4,
    *,
    n_frames: int = 96,
    width: int = 160,
    height: int = 120,
    gop: int = 16,
    codec: str = "libx264",
    texture: float = 0.5,
) -> list[Path]:
    """Write ``n_files`` small H.264 mp4 files (``clip_000.mp4``...) unless they exist already.

    Blocks while encoding; returns the paths in name order.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_files):
        p = root / f"clip_{k:03d}.mp4"
        if not p.exists():
            tmp = root / f".clip_{k:03d}.tmp.mp4"
            write_video(
                tmp,
                VideoSpec(
                    n_frames=n_frames,
                    width=width,
                    height=height,
                    gop=gop,
                    codec=codec,
                    texture=texture,
                ),
            )
            tmp.replace(p)
        paths.append(p)
    return paths

"""What NVDEC may decode, judged without decoding: the support rules of the GPU backend.

Pure tables and functions (no GPU needed): codec, pixel format, bit depth, size, timestamps,
interlacing and colour space (:func:`static_unsupported_reason`); the driver's limits
(:func:`caps_unsupported_reason` over :func:`decoder_caps`, asked once per process); and
recognising NVDEC's own refusal at decode time (:func:`rejection`). Any thread may call them.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType

from tvl_async._backends.colorspaces import colorspace_unsupported_reason
from tvl_async._backends.nvdec_packets import NVDEC_CODECS, nvdec_codec
from tvl_async._index import VideoIndex

log = logging.getLogger(__name__)

# Highest bit depth NVDEC decodes per codec (4:2:0).
MAX_BIT_DEPTH: dict[str, int] = {
    "H264": 8,
    "HEVC": 12,
    "VP8": 8,
    "VP9": 12,
    "AV1": 10,
    "MPEG1": 8,
    "MPEG2": 8,
}
# Size limits used when the driver cannot be asked (GetDecoderCaps): (min w, min h, max w, max h).
STATIC_LIMITS: dict[str, tuple[int, int, int, int]] = {
    "H264": (48, 16, 4096, 4096),
    "HEVC": (144, 144, 8192, 8192),
    "VP8": (48, 16, 4096, 4096),
    "VP9": (128, 128, 8192, 8192),
    "AV1": (128, 128, 8192, 8192),
    "MPEG1": (48, 16, 4080, 4080),
    "MPEG2": (48, 16, 4080, 4080),
}
# 4:2:0 pixel formats and their bit depth; anything else (4:2:2, 4:4:4, gray) stays on the CPU.
PIX_FMT_DEPTH: dict[str, int] = {
    "yuv420p": 8,
    "yuvj420p": 8,
    "nv12": 8,
    "yuv420p10le": 10,
    "yuv420p10be": 10,
    "p010le": 10,
    "yuv420p12le": 12,
    "yuv420p12be": 12,
}
# Codecs whose 4:2:0 chroma is co-sited with the even columns (FFmpeg reports "left"); the others
# leave it unspecified and FFmpeg centres it. Used to match the CPU path's 10-bit conversion.
LEFT_SITED: frozenset[str] = frozenset({"H264", "HEVC", "MPEG2"})
# Field orders of progressive streams (FFmpeg: "unknown" when the stream does not say).
PROGRESSIVE: frozenset[str] = frozenset({"progressive", "unknown"})
# What PyNvVideoCodec says when NVDEC refuses a stream at its sequence header (decode time).
REJECTIONS: tuple[str, ...] = ("not supported", "mbcount", "unsupported")


def static_unsupported_reason(index: VideoIndex) -> str | None:
    """Why NVDEC cannot decode ``index`` judging from the index alone, or None if it may.

    Checks the codec, the pixel format (4:2:0 at 8/10/12 bits), per-codec bit depth, timestamps
    (frames are identified by pts) and conservative size limits. Pure: needs no GPU.
    """
    codec = nvdec_codec(index)
    if codec is None:
        names = ", ".join(sorted({k for k in NVDEC_CODECS if "lib" not in k}))
        return f"codec {index.codec!r} has no NVDEC decoder here (supported: {names})"
    if index.pix_fmt not in PIX_FMT_DEPTH:
        return (
            f"pixel format {index.pix_fmt!r} is not 4:2:0 at 8/10/12 bits "
            f"(supported: {', '.join(PIX_FMT_DEPTH)})"
        )
    depth = PIX_FMT_DEPTH[index.pix_fmt]
    if depth > MAX_BIT_DEPTH[codec]:
        return f"NVDEC decodes {codec} at up to {MAX_BIT_DEPTH[codec]} bits, this file has {depth}"
    if not index.timestamps_ok:
        return "the stream has no usable timestamps (NVDEC output is matched to frames by pts)"
    if index.turns or (index.mirrored and index.autorotate):
        return (
            f"the display matrix turns the picture by {index.rotation} degrees"
            f"{' and mirrors it' if index.mirrored else ''}; the rotation is applied on the "
            f"CPU path only"
        )
    field_order = getattr(index, "field_order", "unknown")
    if field_order not in PROGRESSIVE:
        return (
            f"the stream is interlaced (field order {field_order!r}); NVDEC would "
            f"deinterlace it, the CPU gives the coded frames"
        )
    colour = colorspace_unsupported_reason(getattr(index, "color_space", 2))
    if colour is not None:
        return colour
    min_w, min_h, max_w, max_h = STATIC_LIMITS[codec]
    if not (min_w <= index.width <= max_w and min_h <= index.height <= max_h):
        return (
            f"size {index.width}x{index.height} is outside NVDEC's {codec} range "
            f"{min_w}x{min_h}..{max_w}x{max_h}"
        )
    return None


def caps_unsupported_reason(index: VideoIndex, caps: dict[str, int]) -> str | None:
    """Why the GPU's decoder capabilities (``GetDecoderCaps``) exclude ``index``, or None."""
    if not caps.get("supported", 0):
        return f"this GPU has no NVDEC support for {nvdec_codec(index)} at this bit depth"
    w, h = index.width, index.height
    min_w, min_h = caps.get("width_min", 0), caps.get("height_min", 0)
    max_w, max_h = caps.get("width_max", 1 << 30), caps.get("height_max", 1 << 30)
    if not (min_w <= w <= max_w and min_h <= h <= max_h):
        return f"size {w}x{h} is outside this GPU's NVDEC range {min_w}x{min_h}..{max_w}x{max_h}"
    mbs = ((w + 15) // 16) * ((h + 15) // 16)
    if mbs > caps.get("mb_num_max", 1 << 30):
        return f"{mbs} macroblocks exceed this GPU's NVDEC limit {caps['mb_num_max']}"
    return None


# GetDecoderCaps answers, once per process per (GPU, codec, chroma format, bit depth): each call
# creates and destroys a CUDA context in PyNvVideoCodec, so it is never asked twice.
_CAPS: dict[tuple[int, str, str, int], dict[str, int] | None] = {}
_CAPS_LOCK = threading.Lock()


def decoder_caps(
    nvc: ModuleType, gpu: int, codec: str, depth: int, chroma: str = "420"
) -> dict[str, int] | None:
    """NVDEC's capabilities for ``codec`` at ``depth`` bits (4:2:0) on ``gpu``, or None.

    Asks ``GetDecoderCaps`` the first time only, from any thread (a lock makes concurrent first
    calls ask once); None when it fails (old package or driver: static limits apply then).
    Blocks for the query (tens of milliseconds) the first time.
    """
    key = (gpu, codec, chroma, depth)
    with _CAPS_LOCK:
        if key not in _CAPS:
            try:
                caps = nvc.GetDecoderCaps(
                    gpuid=gpu, codec=getattr(nvc.cudaVideoCodec, codec), bitdepth=depth
                )
                _CAPS[key] = {str(k): int(v) for k, v in dict(caps).items()}
            except Exception as e:
                log.debug("GetDecoderCaps(%s, %d bits) failed: %s", codec, depth, e)
                _CAPS[key] = None
        return _CAPS[key]


def rejection(error: BaseException) -> str | None:
    """NVDEC's refusal of a stream (``PyNvVCExceptionUnsupported`` or its messages), or None."""
    text = f"{type(error).__name__}: {error}"
    if type(error).__name__ == "PyNvVCExceptionUnsupported" or any(
        r in text.lower() for r in REJECTIONS
    ):
        return text
    return None


def bit_depth(index: VideoIndex) -> int:
    return PIX_FMT_DEPTH.get(index.pix_fmt or "", 8)


Key = tuple[str, int, int, int]


def cache_key(index: VideoIndex) -> Key:
    """The decoder cache key: (codec, bit depth, width, height)."""
    return (NVDEC_CODECS.get(index.codec, index.codec), bit_depth(index), index.width, index.height)

"""YUV 4:2:0 to RGB conversion as plain torch ops, on whatever device the input lives on.

The NVDEC backend uses these functions on the GPU to turn the decoder's NV12 (8-bit) and P016
(10/12-bit in the high bits of 16) surfaces into ``[3, H, W]`` uint8 RGB without leaving device
memory. They work on CPU tensors too, which is how the tests check them against FFmpeg.

Conventions:

* All arithmetic is float32; the result is rounded to nearest and clamped to 0..255.
* ``matrix`` is a name from ``tvl_async._backends.colorspaces.MATRICES`` (``"bt601"``,
  ``"bt709"``, ``"fcc"``, ``"smpte240m"``, ``"bt2020"``: each a (Kr, Kb) pair); ``None`` means
  unspecified and is treated as BT.601, as FFmpeg's swscale does (``colorspace_matrix`` there
  maps a stream's declared colour-space code to the matrix the CPU path uses for it).
* ``full_range=False`` is limited ("MPEG", studio) range: luma 16..235, chroma 16..240 at 8 bits;
  ``True`` is full ("JPEG") range.
* Chroma upsampling (``chroma=``):

  - ``"nearest"``: each chroma sample covers its 2x2 block of pixels. This is what swscale's
    unscaled yuv420p to rgb24 path does, i.e. what the CPU backend (PyAV ``to_ndarray``) produces
    for 8-bit 4:2:0 video. Default for :func:`nv12_to_rgb` and :func:`yuv420p_to_rgb`.
  - ``"linear"``: chroma interpolated linearly to the centre of each pair of pixels: between
    rows with weights 3/4 and 1/4 (chroma half-way between two rows); between columns each pixel
    pair takes ``3/4 c[k] + 1/4 c[k+1]`` when chroma is co-sited with the even columns
    (``siting="left"``: the H.264/HEVC/MPEG-2 default, which FFmpeg's decoders report) or
    ``c[k]`` when it is centred (``siting="center"``: what FFmpeg assumes for VP9 and AV1, whose
    streams do not say). This is swscale's generic path without ``SWS_FULL_CHR_H_INT``, which
    PyAV takes for 10-bit sources and for NV12 input. Default for :func:`p016_to_rgb`.

  Against swscale the results differ by rounding only: swscale truncates where this module rounds,
  so swscale's output is typically 1-2 lower (max difference 3 at 8 bits, 4 at 10 bits on the
  test images; see ``tests/test_yuv.py``).
* Inputs may carry leading batch dimensions: ``[..., rows, cols]`` gives ``[..., 3, H, W]``.
* ``size=(width, height)`` resizes in float (bilinear, antialiased when shrinking) before the
  single final rounding.

Every function is pure, allocates its output on the input's device, never synchronises with the
host, and may be called from any thread (on CUDA, on the caller's current stream).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

from tvl_async._backends.colorspaces import MATRICES
from tvl_async._checks import invalid_type, invalid_value

ChromaUpsampling = Literal["nearest", "linear"]

CHROMA_MODES: tuple[str, ...] = get_args(ChromaUpsampling)
ChromaSiting = Literal["left", "center"]
CHROMA_SITINGS: tuple[str, ...] = get_args(ChromaSiting)

__all__ = [
    "CHROMA_MODES",
    "CHROMA_SITINGS",
    "ChromaSiting",
    "ChromaUpsampling",
    "nv12_to_rgb",
    "p016_to_rgb",
    "yuv420p_to_rgb",
    "yuv_planes_to_rgb",
]


def nv12_to_rgb(
    nv12: torch.Tensor,
    height: int,
    width: int,
    *,
    matrix: str | None = "bt601",
    full_range: bool = False,
    chroma: str = "nearest",
    siting: ChromaSiting = "left",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Convert an NV12 image (8-bit luma plane, then interleaved U/V rows) to RGB.

    Args:
        nv12: ``[..., rows, cols]`` uint8 with ``rows >= height + ceil(height / 2)`` and
            ``cols >= width``: ``height`` luma rows, then ``ceil(height / 2)`` rows of interleaved
            ``U V U V …`` samples. Extra rows/columns (pitch padding) are ignored. For odd widths
            a row may stop one sample short of the last V; it is then repeated from its neighbour.
        height: image height in pixels.
        width: image width in pixels.
        matrix: a :data:`MATRICES` name or None (BT.601).
        full_range: True for full-range YUV.
        chroma: ``"nearest"`` (default) or ``"linear"``; see the module docstring.
        siting: horizontal chroma siting for ``"linear"``: ``"left"`` or ``"center"``.
        size: optional output ``(width, height)`` in pixels.

    Returns:
        ``[..., 3, H, W]`` uint8 RGB on ``nv12``'s device.
    """
    _check_dtype(nv12, (torch.uint8,), "nv12_to_rgb")
    y, u, v = _split_semi_planar(nv12, height, width, "nv12_to_rgb")
    return yuv_planes_to_rgb(
        y,
        u,
        v,
        scale=1.0,
        matrix=matrix,
        full_range=full_range,
        chroma=chroma,
        siting=siting,
        size=size,
    )


def p016_to_rgb(
    p016: torch.Tensor,
    height: int,
    width: int,
    *,
    matrix: str | None = "bt601",
    full_range: bool = False,
    chroma: str = "linear",
    siting: ChromaSiting = "left",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Convert a P010/P016 image (16-bit samples, data in the high bits) to 8-bit RGB.

    The layout is NV12's with 16-bit samples: ``height`` luma rows, then ``ceil(height / 2)`` rows
    of interleaved U/V. 10-bit data sits in the top 10 bits (P010) and 12-bit data in the top 12,
    so every sample is read as ``value / 256`` in 8-bit units, keeping the extra precision until
    the final rounding.

    Args:
        p016: ``[..., rows, cols]`` uint16 (or int16/int32 holding the same bit patterns).
        height: image height in pixels.
        width: image width in pixels.
        matrix: a :data:`MATRICES` name or None (BT.601).
        full_range: True for full-range YUV.
        chroma: ``"linear"`` (default, as swscale treats 10-bit input) or ``"nearest"``.
        siting: horizontal chroma siting for ``"linear"``: ``"left"`` or ``"center"``.
        size: optional output ``(width, height)`` in pixels.

    Returns:
        ``[..., 3, H, W]`` uint8 RGB on ``p016``'s device.
    """
    _check_dtype(p016, (torch.uint16, torch.int16, torch.int32), "p016_to_rgb")
    y, u, v = _split_semi_planar(p016, height, width, "p016_to_rgb")
    return yuv_planes_to_rgb(
        y,
        u,
        v,
        scale=1.0 / 256.0,
        matrix=matrix,
        full_range=full_range,
        chroma=chroma,
        siting=siting,
        size=size,
    )


def yuv420p_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    bit_depth: int = 8,
    matrix: str | None = "bt601",
    full_range: bool = False,
    chroma: str = "nearest",
    siting: ChromaSiting = "left",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Convert planar 4:2:0 YUV (``yuv420p``, ``yuv420p10le``…; values in the low bits) to RGB.

    Args:
        y: ``[..., H, W]`` luma, uint8 for 8-bit or an integer type holding ``bit_depth`` bits.
        u: ``[..., ceil(H/2), ceil(W/2)]`` Cb.
        v: ``[..., ceil(H/2), ceil(W/2)]`` Cr.
        bit_depth: bits per sample, 8 to 16.
        matrix: a :data:`MATRICES` name or None (BT.601).
        full_range: True for full-range YUV.
        chroma: ``"nearest"`` (default) or ``"linear"``.
        siting: horizontal chroma siting for ``"linear"``: ``"left"`` or ``"center"``.
        size: optional output ``(width, height)`` in pixels.

    Returns:
        ``[..., 3, H, W]`` uint8 RGB on ``y``'s device.
    """
    if not 8 <= bit_depth <= 16:
        raise invalid_value("bit_depth", bit_depth, "8 to 16")
    return yuv_planes_to_rgb(
        _as_float(y),
        _as_float(u),
        _as_float(v),
        scale=2.0 ** (8 - bit_depth),
        matrix=matrix,
        full_range=full_range,
        chroma=chroma,
        siting=siting,
        size=size,
    )


def yuv_planes_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float = 1.0,
    matrix: str | None = "bt601",
    full_range: bool = False,
    chroma: str = "nearest",
    siting: ChromaSiting = "left",
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The core conversion: luma ``[..., H, W]`` and half-size chroma planes to uint8 RGB.

    Args:
        y: ``[..., H, W]`` luma, any real dtype.
        u: ``[..., Hc, Wc]`` Cb with ``Hc = ceil(H/2)`` and ``Wc = ceil(W/2)``.
        v: ``[..., Hc, Wc]`` Cr.
        scale: factor taking sample values to 8-bit units (``1/4`` for 10-bit values in the low
            bits, ``1/256`` for P016).
        matrix: a :data:`MATRICES` name or None (BT.601).
        full_range: True for full-range YUV.
        chroma: ``"nearest"`` or ``"linear"``.
        siting: horizontal chroma siting for ``"linear"``: ``"left"`` or ``"center"``.
        size: optional output ``(width, height)`` in pixels.

    Returns:
        ``[..., 3, H, W]`` uint8 RGB (``[..., 3, size[1], size[0]]`` when resized).
    """
    kr, kb = _matrix(matrix)
    if chroma not in CHROMA_MODES:
        raise invalid_value("chroma upsampling", chroma, CHROMA_MODES)
    if siting not in CHROMA_SITINGS:
        raise invalid_value("chroma siting", siting, CHROMA_SITINGS)
    h, w = int(y.shape[-2]), int(y.shape[-1])
    hc, wc = (h + 1) // 2, (w + 1) // 2
    if tuple(u.shape[-2:]) != (hc, wc) or tuple(v.shape[-2:]) != (hc, wc):
        raise invalid_value(
            "chroma planes",
            None,
            f"{hc}x{wc} planes (rows x cols)",
            shown=f"U {tuple(u.shape)}, V {tuple(v.shape)}",
            context=f"for a {h}x{w} luma plane",
        )
    yf = y.to(torch.float32)
    cb = u.to(torch.float32)
    cr = v.to(torch.float32)
    if full_range:
        luma = yf * scale if scale != 1.0 else yf
        cb = cb * scale - 128.0
        cr = cr * scale - 128.0
    else:
        luma = (yf * scale - 16.0) * (255.0 / 219.0)
        cb = (cb * scale - 128.0) * (255.0 / 224.0)
        cr = (cr * scale - 128.0) * (255.0 / 224.0)
    kg = 1.0 - kr - kb
    # Chroma contributions are linear, so they are computed at chroma resolution and upsampled
    # once: identical to upsampling first, 4x less work.
    delta = torch.stack(
        (
            (2.0 * (1.0 - kr)) * cr,
            (-2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr,
            (2.0 * (1.0 - kb)) * cb,
        ),
        dim=-3,
    )
    delta = _upsample(delta, h, w, chroma, siting)
    rgb = luma.unsqueeze(-3) + delta
    if size is not None and (int(size[0]), int(size[1])) != (w, h):
        rgb = _resize(rgb, int(size[0]), int(size[1]))
    return rgb.round_().clamp_(0.0, 255.0).to(torch.uint8)


# ----------------------------------------------------------------------------------- helpers


def _matrix(matrix: str | None) -> tuple[float, float]:
    if matrix is None:
        return MATRICES["bt601"]
    try:
        return MATRICES[matrix]
    except KeyError:
        raise invalid_value("colour matrix", matrix, f"{', '.join(MATRICES)} or None") from None


def _check_dtype(t: torch.Tensor, allowed: tuple[torch.dtype, ...], fn: str) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise invalid_type(f"{fn} input dtype", t.dtype, names)
    if t.dim() < 2:
        raise invalid_value(f"{fn} input shape", tuple(t.shape), "[..., rows, cols] shapes")


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """Float32 copy of ``t``; 16-bit samples are read as unsigned (int16 holds the same bits).

    uint16 is reinterpreted through int16 because few torch ops support uint16.
    """
    if t.dtype == torch.uint16:
        t = t.view(torch.int16)
    if t.dtype == torch.int16:
        return (t.to(torch.int32) & 0xFFFF).to(torch.float32)
    return t.to(torch.float32)


def _split_semi_planar(
    img: torch.Tensor, height: int, width: int, fn: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Luma, U and V views of an NV12-style image (float32 for 16-bit containers)."""
    if height < 1 or width < 1:
        raise invalid_value(
            f"{fn} size", None, "sizes >= 1x1", shown=f"{height}x{width}, height x width"
        )
    hc, wc = (height + 1) // 2, (width + 1) // 2
    rows, cols = int(img.shape[-2]), int(img.shape[-1])
    if rows < height + hc or cols < width:
        raise invalid_value(
            f"{fn} input shape",
            tuple(img.shape),
            f"[..., >= {height + hc}, >= {width}] shapes",
            context=f"for a {width}x{height} image, which needs at least "
            f"{height + hc} rows of {width} samples (luma then "
            "interleaved chroma)",
        )
    if img.dtype != torch.uint8:
        img = _as_float(img)
    y = img[..., :height, :width]
    uv = img[..., height : height + hc, : 2 * wc]
    if uv.shape[-1] < 2 * wc:  # odd width without padding: the last V sample is missing
        uv = torch.cat((uv, uv[..., -1:]), dim=-1)
    return y, uv[..., 0::2], uv[..., 1::2]


def _upsample(c: torch.Tensor, h: int, w: int, mode: str, siting: str) -> torch.Tensor:
    """``[..., Hc, Wc]`` chroma to ``[..., h, w]`` (see ``chroma`` in the module docstring)."""
    hc, wc = int(c.shape[-2]), int(c.shape[-1])
    if mode == "linear":
        # Columns: one value per pixel pair, taken at the pair's centre: chroma coordinate
        # k + 1/4 for left (co-sited) chroma, exactly k for centred chroma.
        if siting == "left" and wc > 1:
            c = 0.75 * c + 0.25 * torch.cat((c[..., :, 1:], c[..., :, -1:]), dim=-1)
        # Rows: output row 2k sits at chroma coordinate k - 1/4, row 2k+1 at k + 1/4.
        prev = torch.cat((c[..., :1, :], c[..., :-1, :]), dim=-2)
        nxt = torch.cat((c[..., 1:, :], c[..., -1:, :]), dim=-2)
        even = 0.75 * c + 0.25 * prev
        odd = 0.75 * c + 0.25 * nxt
        rows = torch.stack((even, odd), dim=-2).reshape(*c.shape[:-2], 2 * hc, wc)
    else:
        rows = c.unsqueeze(-2).expand(*c.shape[:-1], 2, wc).reshape(*c.shape[:-2], 2 * hc, wc)
    full = rows.unsqueeze(-1).expand(*rows.shape, 2).reshape(*rows.shape[:-1], 2 * wc)
    return full[..., :h, :w]


def _resize(rgb: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize of float ``[..., 3, H, W]`` (antialiased when shrinking)."""
    if width < 1 or height < 1:
        raise invalid_value("size", (width, height), "(width, height) >= (1, 1)")
    lead = rgb.shape[:-3]
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    shrink = width < rgb.shape[-1] or height < rgb.shape[-2]
    out = F.interpolate(
        flat, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink
    )
    return out.reshape(*lead, *out.shape[-3:])

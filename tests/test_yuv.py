"""YUV to RGB conversion (tvl_async._backends.yuv) checked against FFmpeg's swscale via PyAV.

Two kinds of input: images converted to YUV by PyAV from RGB (yuv420p, nv12, p010le; chroma
siting unspecified, which swscale treats as centred), and frames decoded by FFmpeg from small
colourful videos (H.264/HEVC report left-sited chroma, VP9/AV1 unspecified). Each is converted to
RGB by PyAV (``reformat``/``to_ndarray`` to rgb24 with the same matrix and range: exactly what the
CPU backend returns) and by our torch functions on CPU tensors.

Stated tolerances (absolute difference in 8-bit RGB units, over all pixels and channels):

* swscale's unscaled path (8-bit yuv420p, the CPU backend's 8-bit output) against
  ``chroma="nearest"``: max <= 3, mean <= 1.25;
* swscale's generic path (NV12 and 10-bit input) against ``chroma="linear"`` with the right
  siting: max <= 5, mean <= 2.0.

The remaining difference is swscale's default rounding (it truncates: its output is ~1-2 lower on
average); against swscale's ``ACCURATE_RND | FULL_CHR_H_INT`` mode the average signed difference
is below 0.05.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import Interpolation
from test_nvdec_cpu import write_colour_video

from tvl_async._backends.colorspaces import (
    COLORSPACES,
    colorspace_matrix,
    colorspace_unsupported_reason,
)
from tvl_async._backends.yuv import (
    nv12_to_rgb,
    p016_to_rgb,
    yuv420p_to_rgb,
    yuv_planes_to_rgb,
)

H, W = 96, 128
CASES = [
    ("itu601", "bt601", "MPEG"),
    ("itu601", "bt601", "JPEG"),
    ("itu709", "bt709", "MPEG"),
    ("itu709", "bt709", "JPEG"),
]
FAST_MAX, FAST_MEAN = 3, 1.25
GENERIC_MAX, GENERIC_MEAN = 5, 2.0


def colourful(height: int = H, width: int = W) -> np.ndarray:
    """A smooth, saturated ``[H, W, 3]`` uint8 test image covering many hues."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            128 + 110 * np.sin(xs / 11 + ys / 23),
            128 + 110 * np.cos(ys / 9),
            128 + 110 * np.sin((xs - ys) / 17),
        ],
        axis=-1,
    )
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def to_yuv(
    fmt: str, colorspace: str, color_range: str, img: np.ndarray | None = None
) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(colourful() if img is None else img, format="rgb24")
    if fmt == "p010le":  # swscale writes p010 from the 10-bit planar frame (lossless)
        planar = frame.reformat(
            format="yuv420p10le", dst_colorspace=colorspace, dst_color_range=color_range
        )
        return planar.reformat(format="p010le")
    return frame.reformat(format=fmt, dst_colorspace=colorspace, dst_color_range=color_range)


def planes(frame: av.VideoFrame, dtype: type) -> list[np.ndarray]:
    """Each plane as ``[rows, line_size / itemsize]`` (line padding included)."""
    return [np.frombuffer(p, dtype=dtype).reshape(p.height, -1) for p in frame.planes]


def semi_planar(frame: av.VideoFrame, dtype: type) -> torch.Tensor:
    """NV12/P010 planes stacked as ``[H + ceil(H/2), W]`` (the NVDEC output layout)."""
    y, uv = planes(frame, dtype)[:2]
    w = frame.width
    return torch.from_numpy(np.concatenate([y[:, :w], uv[:, : 2 * ((w + 1) // 2)][:, :w]]))


def pyav_rgb(
    frame: av.VideoFrame, colorspace: str, color_range: str, interpolation: object = None
) -> torch.Tensor:
    kw = {} if interpolation is None else {"interpolation": interpolation}
    rgb = frame.reformat(
        format="rgb24", src_colorspace=colorspace, src_color_range=color_range, **kw
    ).to_ndarray()
    return torch.from_numpy(rgb).permute(2, 0, 1)


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[int, float]:
    d = (a.to(torch.int32) - b.to(torch.int32)).abs().to(torch.float32)
    return int(d.max()), float(d.mean())


@pytest.mark.parametrize(("cs", "matrix", "rng"), CASES)
def test_yuv420p_matches_swscale(cs: str, matrix: str, rng: str) -> None:
    frame = to_yuv("yuv420p", cs, rng)
    y, u, v = planes(frame, np.uint8)
    out = yuv420p_to_rgb(
        torch.from_numpy(y[:, :W].copy()),
        torch.from_numpy(u[:, : W // 2].copy()),
        torch.from_numpy(v[:, : W // 2].copy()),
        matrix=matrix,
        full_range=rng == "JPEG",
    )
    assert out.shape == (3, H, W) and out.dtype == torch.uint8
    mx, mean = diff(out, pyav_rgb(frame, cs, rng))
    assert mx <= FAST_MAX and mean <= FAST_MEAN, (mx, mean)


@pytest.mark.parametrize(("cs", "matrix", "rng"), CASES)
def test_nv12_matches_swscale(cs: str, matrix: str, rng: str) -> None:
    frame = to_yuv("nv12", cs, rng)
    nv12 = semi_planar(frame, np.uint8)
    # Same frame, same path as FFmpeg's generic scaler (vertical chroma interpolation).
    out = nv12_to_rgb(
        nv12, H, W, matrix=matrix, full_range=rng == "JPEG", chroma="linear", siting="center"
    )
    mx, mean = diff(out, pyav_rgb(frame, cs, rng))
    assert mx <= GENERIC_MAX and mean <= GENERIC_MEAN, (mx, mean)
    # Default (nearest) equals what the CPU backend gives for the same samples as yuv420p.
    planar = frame.reformat(format="yuv420p")
    out = nv12_to_rgb(nv12, H, W, matrix=matrix, full_range=rng == "JPEG")
    mx, mean = diff(out, pyav_rgb(planar, cs, rng))
    assert mx <= FAST_MAX and mean <= FAST_MEAN, (mx, mean)


@pytest.mark.parametrize(("cs", "matrix", "rng"), CASES)
def test_p010_matches_swscale(cs: str, matrix: str, rng: str) -> None:
    frame = to_yuv("p010le", cs, rng)
    p010 = semi_planar(frame, np.uint16)
    assert p010.dtype == torch.uint16
    assert int((p010.view(torch.int16).to(torch.int32) & 63).max()) == 0  # data in the high bits
    out = p016_to_rgb(p010, H, W, matrix=matrix, full_range=rng == "JPEG", siting="center")
    mx, mean = diff(out, pyav_rgb(frame, cs, rng))
    assert mx <= GENERIC_MAX and mean <= GENERIC_MEAN, (mx, mean)


# (encoder, pixel format, siting FFmpeg reports for the decoded frames)
DECODED = [
    ("libx264", "yuv420p", "left"),
    ("libvpx-vp9", "yuv420p", "center"),
    ("libx265", "yuv420p10le", "left"),
    ("libsvtav1", "yuv420p10le", "center"),
]


@pytest.fixture(scope="module")
def decoded_frames(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str, bool], av.VideoFrame]:
    """One decoded frame per (encoder, matrix, full range), from small colourful videos."""
    root = tmp_path_factory.mktemp("yuv_videos")
    out = {}
    for codec, pix_fmt, _ in DECODED:
        for _, matrix, rng in CASES:
            full = rng == "JPEG"
            path = write_colour_video(
                root / f"{codec}-{matrix}-{rng}.mkv", codec, pix_fmt, matrix, full, n_frames=3
            )
            with av.open(str(path)) as c:
                out[codec, matrix, full] = list(c.decode(video=0))[1]
    return out


def decoded_planes(frame: av.VideoFrame) -> tuple[torch.Tensor, ...]:
    w = frame.width
    dtype = np.uint16 if "10" in frame.format.name else np.uint8
    return tuple(
        torch.from_numpy(p[:, :n].copy())
        for p, n in zip(planes(frame, dtype), (w, (w + 1) // 2, (w + 1) // 2), strict=True)
    )


@pytest.mark.parametrize(("codec", "pix_fmt", "siting"), DECODED)
@pytest.mark.parametrize(("cs", "matrix", "rng"), CASES)
def test_decoded_frames_match_cpu_backend(
    decoded_frames: dict[Any, av.VideoFrame],
    codec: str,
    pix_fmt: str,
    siting: str,
    cs: str,
    matrix: str,
    rng: str,
) -> None:
    """What NVDEC's surfaces become on the GPU equals what the CPU backend gives (to_ndarray)."""
    frame = decoded_frames[codec, matrix, rng == "JPEG"]
    cpu = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    y, u, v = decoded_planes(frame)
    full = rng == "JPEG"
    if pix_fmt == "yuv420p":  # NVDEC gives NV12; the CPU path is swscale's unscaled one
        nv12 = torch.cat([y, torch.stack([u, v], dim=-1).reshape(u.shape[0], -1)])
        out = nv12_to_rgb(nv12, frame.height, frame.width, matrix=matrix, full_range=full)
        limit = (FAST_MAX, FAST_MEAN)
    else:  # NVDEC gives P016 (10 bits in the high bits); the CPU path is swscale's generic one
        p016 = torch.cat([y, torch.stack([u, v], dim=-1).reshape(u.shape[0], -1)]) * 64
        out = p016_to_rgb(
            p016.to(torch.int32),
            frame.height,
            frame.width,
            matrix=matrix,
            full_range=full,
            siting=siting,
        )
        limit = (GENERIC_MAX, GENERIC_MEAN)
    mx, mean = diff(out, cpu)
    assert mx <= limit[0] and mean <= limit[1], (mx, mean)
    if pix_fmt != "yuv420p":
        flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
        accurate = pyav_rgb(frame, cs, rng, flags).to(torch.float32)
        assert abs(float((accurate - out.to(torch.float32)).mean())) < 0.05


def reference_float64(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, full: bool
) -> np.ndarray:
    """Independent textbook conversion (float64, nearest chroma) for exactness checks."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    kg = 1 - kr - kb
    uu = np.repeat(np.repeat(u, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]].astype(np.float64)
    vv = np.repeat(np.repeat(v, 2, 0), 2, 1)[: y.shape[0], : y.shape[1]].astype(np.float64)
    yy = y.astype(np.float64)
    if full:
        cb, cr = uu - 128, vv - 128
    else:
        yy, cb, cr = (yy - 16) * 255 / 219, (uu - 128) * 255 / 224, (vv - 128) * 255 / 224
    r = yy + 2 * (1 - kr) * cr
    b = yy + 2 * (1 - kb) * cb
    g = (yy - kr * r - kb * b) / kg
    return np.clip(np.round(np.stack([r, g, b])), 0, 255)


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("full", [False, True])
def test_exact_against_float64_reference(matrix: str, full: bool) -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 256, size=(31, 45), dtype=np.uint8)  # odd sizes on purpose
    u = rng.integers(0, 256, size=(16, 23), dtype=np.uint8)
    v = rng.integers(0, 256, size=(16, 23), dtype=np.uint8)
    out = (
        yuv420p_to_rgb(
            torch.from_numpy(y),
            torch.from_numpy(u),
            torch.from_numpy(v),
            matrix=matrix,
            full_range=full,
        )
        .numpy()
        .astype(np.float64)
    )
    ref = reference_float64(y, u, v, matrix, full)
    assert np.abs(out - ref).max() <= 1  # float32 vs float64 at rounding ties only
    assert (out == ref).mean() > 0.999


def test_nv12_and_planar_agree_and_odd_sizes() -> None:
    rng = np.random.default_rng(3)
    h, w = 31, 45
    y = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    u = rng.integers(0, 256, size=(16, 23), dtype=np.uint8)
    v = rng.integers(0, 256, size=(16, 23), dtype=np.uint8)
    uv = np.stack([u, v], axis=-1).reshape(16, 46)
    padded = np.zeros((h + 16, 48), dtype=np.uint8)  # pitch padding is ignored
    padded[:h, :w] = y
    padded[h:, :46] = uv
    a = nv12_to_rgb(torch.from_numpy(padded), h, w, matrix="bt709")
    b = yuv420p_to_rgb(
        torch.from_numpy(y), torch.from_numpy(u), torch.from_numpy(v), matrix="bt709"
    )
    assert a.shape == (3, h, w) and torch.equal(a, b)
    # Exact NVDEC layout for an odd width: each chroma row stops one sample short of the last V.
    tight = np.concatenate([y, uv[:, :w]])
    c = nv12_to_rgb(torch.from_numpy(tight), h, w, matrix="bt709")
    assert torch.equal(c[..., : w - 1], b[..., : w - 1])


def test_p016_dtypes_and_low_bit_planar() -> None:
    frame = to_yuv("p010le", "itu709", "MPEG")
    p = semi_planar(frame, np.uint16)
    ref = p016_to_rgb(p, H, W, matrix="bt709")
    as_i16 = p.view(torch.int16)
    as_i32 = as_i16.to(torch.int32) & 0xFFFF
    assert torch.equal(p016_to_rgb(as_i16, H, W, matrix="bt709"), ref)
    assert torch.equal(p016_to_rgb(as_i32, H, W, matrix="bt709"), ref)
    # 10-bit planar samples in the low bits give the same result as P010.
    planar = frame.reformat(format="yuv420p10le")
    y, u, v = (
        torch.from_numpy(a[:, :n].copy())
        for a, n in zip(planes(planar, np.uint16), (W, W // 2, W // 2), strict=True)
    )
    low = yuv420p_to_rgb(y, u, v, bit_depth=10, matrix="bt709", chroma="linear")
    assert torch.equal(low, ref)


def test_batched_resized_and_none_matrix() -> None:
    frames = [
        semi_planar(to_yuv("nv12", "itu601", "MPEG", colourful()[:, ::-1].copy()), np.uint8),
        semi_planar(to_yuv("nv12", "itu601", "MPEG"), np.uint8),
    ]
    batch = torch.stack(frames)
    out = nv12_to_rgb(batch, H, W, matrix=None)  # None: unspecified, treated as BT.601
    assert out.shape == (2, 3, H, W)
    for k in range(2):
        assert torch.equal(out[k], nv12_to_rgb(frames[k], H, W, matrix="bt601"))
    small = nv12_to_rgb(batch, H, W, size=(64, 48))
    assert small.shape == (2, 3, 48, 64) and small.dtype == torch.uint8
    full = out.to(torch.float32)
    approx = torch.nn.functional.interpolate(full, size=(48, 64), mode="bilinear", antialias=True)
    assert float((small.to(torch.float32) - approx).abs().mean()) < 1.0


def test_errors_name_the_bad_value() -> None:
    nv12 = torch.zeros(H + H // 2, W, dtype=torch.uint8)
    with pytest.raises(
        ValueError,
        match=r"Invalid colour matrix \('bt2021'\).*bt601, bt709, "
        r"fcc, smpte240m, bt2020",
    ):
        nv12_to_rgb(nv12, H, W, matrix="bt2021")
    with pytest.raises(ValueError, match=r"Invalid chroma upsampling \('cubic'\)"):
        nv12_to_rgb(nv12, H, W, chroma="cubic")
    with pytest.raises(ValueError, match=r"Invalid chroma siting \('top'\).*left, center"):
        nv12_to_rgb(nv12, H, W, siting="top")
    with pytest.raises(TypeError, match="uint8"):
        nv12_to_rgb(nv12.to(torch.int16), H, W)
    with pytest.raises(ValueError, match="needs at least"):
        nv12_to_rgb(nv12[:-1], H, W)
    with pytest.raises(ValueError, match="chroma planes"):
        yuv_planes_to_rgb(torch.zeros(4, 4), torch.zeros(3, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="bit_depth"):
        yuv420p_to_rgb(torch.zeros(4, 4), torch.zeros(2, 2), torch.zeros(2, 2), bit_depth=7)


def test_flat_colours_limited_and_full_range() -> None:
    # Nominal black/white/grey map exactly in both ranges.
    for full, (black, white) in ((False, (16, 235)), (True, (0, 255))):
        y = torch.tensor([[black, white], [128 if full else 126, black]], dtype=torch.uint8)
        c = torch.full((1, 1), 128, dtype=torch.uint8)
        out = yuv420p_to_rgb(y, c, c, full_range=full)
        assert out[:, 0, 0].tolist() == [0, 0, 0]
        assert out[:, 0, 1].tolist() == [255, 255, 255]
        assert len(set(out[:, 1, 0].tolist())) == 1  # grey stays grey


# ------------------------------------------------- every colour space FFmpeg knows (AVColorSpace)

# libswscale's name for the matrix that converts each AVColorSpace code with one.
SWS_NAMES = {
    "bt601": "itu601",
    "bt709": "itu709",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020": "bt2020",
}
# Codes the CPU path (PyAV -> libswscale) converts; 3 (reserved) it refuses, but the GPU path
# treats it as unspecified.
CPU_CODES = [0, 1, 2, 4, 5, 6, 7, 9]


def tagged_frame(code: int, fmt: str, full: bool) -> av.VideoFrame:
    """The colourful image in ``fmt`` with the matrix of AVColorSpace ``code``, tagged with it,
    as a decoder hands it to the CPU backend."""
    sws = SWS_NAMES[colorspace_matrix(code)]
    frame = av.VideoFrame.from_ndarray(colourful(), format="rgb24").reformat(
        format=fmt, dst_colorspace=sws, dst_color_range="JPEG" if full else "MPEG"
    )
    frame.colorspace = code
    frame.color_range = 2 if full else 1
    return frame


@pytest.mark.parametrize("full", [False, True], ids=["limited", "full"])
@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le"])
@pytest.mark.parametrize("code", CPU_CODES)
def test_each_colour_space_matches_the_cpu_path(code: int, fmt: str, full: bool) -> None:
    """The GPU path's conversion (NV12 / P016 surfaces, the matrix the index's colour-space code
    names) against what the CPU backend returns for the same decoded frame (``to_ndarray``:
    libswscale reads the frame's own tags)."""
    frame = tagged_frame(code, fmt, full)
    cpu = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    matrix = colorspace_matrix(code)
    dtype = np.uint8 if fmt == "yuv420p" else np.uint16
    y, u, v = (
        torch.from_numpy(p[:, :n].astype(np.int32))
        for p, n in zip(planes(frame, dtype), (W, W // 2, W // 2), strict=True)
    )
    surface = torch.cat([y, torch.stack([u, v], dim=-1).reshape(u.shape[0], -1)])
    if fmt == "yuv420p":  # NVDEC: NV12; CPU: swscale's unscaled path (nearest chroma)
        gpu = nv12_to_rgb(surface.to(torch.uint8), H, W, matrix=matrix, full_range=full)
        limit = (2 if full else FAST_MAX, FAST_MEAN)
    else:  # NVDEC: P016 (10 bits in the high bits); CPU: swscale's generic path
        gpu = p016_to_rgb(surface * 64, H, W, matrix=matrix, full_range=full, siting="center")
        limit = (3 if full else 4, GENERIC_MEAN)
    mx, mean = diff(gpu, cpu)
    assert mx <= limit[0] and mean <= limit[1], (code, fmt, full, mx, mean)
    if matrix in ("bt709", "smpte240m", "bt2020"):  # the old behaviour, BT.601, is far off
        if fmt == "yuv420p":
            wrong = nv12_to_rgb(surface.to(torch.uint8), H, W, matrix="bt601", full_range=full)
        else:
            wrong = p016_to_rgb(
                surface * 64, H, W, matrix="bt601", full_range=full, siting="center"
            )
        assert diff(wrong, cpu)[0] > 8


def test_colour_space_table_covers_ffmpeg() -> None:
    assert sorted(COLORSPACES) == list(range(18))  # AVCOL_SPC_RGB .. AVCOL_SPC_YCGCO_RO
    assert colorspace_matrix(9) == "bt2020" and colorspace_matrix(2) == "bt601"
    assert colorspace_matrix(3) == "bt601"
    for code in (8, 10, 11, 12, 13, 14, 15, 16, 17):
        reason = colorspace_unsupported_reason(code)
        assert reason is not None and f"colour space {code} ({COLORSPACES[code][0]})" in reason
        with pytest.raises(ValueError, match=rf"Invalid colour space \({code}\)"):
            colorspace_matrix(code)
    assert "not in FFmpeg's table" in (colorspace_unsupported_reason(40) or "")
    for code in CPU_CODES:
        assert colorspace_unsupported_reason(code) is None

"""processing.py: exact pixels for selection, crop, flip, resize, colour, dtype and layout."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tvl_async import _processing as processing
from tvl_async._config import ProcessDesc
from tvl_async._processing import (
    AugmentParams,
    draw_augment,
    needed_frames,
    output_size,
    process_clip,
    source_positions,
)

# "cuda" cases carry the marker; conftest skips them without a GPU unless required.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def position_frames(n: int, height: int = 12, width: int = 16, device: str = "cpu") -> torch.Tensor:
    """``[n, 3, H, W]`` uint8 frames whose every pixel equals the frame's position."""
    values = torch.arange(n, dtype=torch.uint8, device=device).view(n, 1, 1, 1)
    return values.expand(n, 3, height, width).contiguous()


def coordinate_frames(n: int, height: int, width: int, device: str = "cpu") -> torch.Tensor:
    """Frames with channel 0 = row, channel 1 = column, channel 2 = frame position."""
    rows = torch.arange(height, dtype=torch.uint8, device=device).view(height, 1).expand(-1, width)
    cols = torch.arange(width, dtype=torch.uint8, device=device).view(1, width).expand(height, -1)
    frames = torch.empty(n, 3, height, width, dtype=torch.uint8, device=device)
    frames[:, 0] = rows
    frames[:, 1] = cols
    frames[:, 2] = torch.arange(n, dtype=torch.uint8, device=device).view(n, 1, 1)
    return frames


def random_frames(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), generator=g, dtype=torch.uint8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ index_map


@pytest.mark.parametrize("device", DEVICES)
def test_index_map_keeps_only_the_middle_frame(device: str) -> None:
    desc = ProcessDesc(index_map=[-1, -1, 0, -1, -1])
    frames = position_frames(5, device=device)
    out = process_clip(frames, desc, None)
    assert out.shape == (1, 3, 12, 16)
    assert out.device.type == device
    assert torch.equal(out.cpu(), torch.full((1, 3, 12, 16), 2, dtype=torch.uint8))
    # the output owns its memory: a view would keep all five frames alive in the reorder buffer
    assert out.untyped_storage().nbytes() == out.numel() == 3 * 12 * 16
    assert needed_frames(desc, 5) == [2]
    assert source_positions(desc, 5) == [2]


def test_index_map_nvvl_direction_and_reverse() -> None:
    # input frame i goes to output position index_map[i]
    desc = ProcessDesc(index_map=[1, -1, 0, -1, 2])
    assert source_positions(desc, 5) == [2, 0, 4]
    assert needed_frames(desc, 5) == [0, 2, 4]
    out = process_clip(position_frames(5), desc, None)
    assert out[:, 0, 0, 0].tolist() == [2, 0, 4]
    rev = process_clip(position_frames(5), ProcessDesc(index_map=[4, 3, 2, 1, 0]), None)
    assert rev[:, 0, 0, 0].tolist() == [4, 3, 2, 1, 0]
    # shorter map: positions past its end are dropped
    assert needed_frames(ProcessDesc(index_map=[-1, 0]), 6) == [1]
    assert needed_frames(ProcessDesc(), 3) == [0, 1, 2]


def test_index_map_with_only_needed_frames_decoded() -> None:
    desc = ProcessDesc(index_map=[1, -1, 0, -1, 2])
    decoded = position_frames(5)[[0, 2, 4]]
    out = process_clip(decoded, desc, None, positions=[0, 2, 4])
    assert out[:, 0, 0, 0].tolist() == [2, 0, 4]
    # the union over two outputs: each output picks its own frames
    middle = process_clip(
        decoded, ProcessDesc(index_map=[-1, -1, 0, -1, -1]), None, positions=[0, 2, 4]
    )
    assert middle[:, 0, 0, 0].tolist() == [2]
    with pytest.raises(ValueError, match=r"needs clip positions \[4\]"):
        process_clip(decoded[:2], desc, None, positions=[0, 2])
    with pytest.raises(ValueError, match="positions"):
        process_clip(decoded, desc, None, positions=[0, 2])


# ------------------------------------------------------------------ layout, dtype, ranges


@pytest.mark.parametrize("layout", ["".join(p) for p in itertools.permutations("fchw")])
def test_every_layout_has_exact_shape_and_values(layout: str) -> None:
    frames = random_frames(4, 6, 10)
    desc = ProcessDesc(layout=layout, dtype="float32")
    out = process_clip(frames, desc, None)
    sizes = {"f": 4, "c": 3, "h": 6, "w": 10}
    assert out.shape == tuple(sizes[d] for d in layout)
    assert out.shape == desc.output_shape(4, 6, 10)
    assert out.is_contiguous()
    back = out.permute(*(layout.index(d) for d in "fchw"))
    assert torch.equal(back, frames.float())


@pytest.mark.parametrize(
    ("dtype", "normalized", "high"),
    [
        (torch.uint8, False, 255),
        (torch.float32, False, 255.0),
        (torch.float16, False, 255.0),
        (torch.bfloat16, False, 255.0),
        (torch.float32, True, 1.0),
        (torch.float16, True, 1.0),
        (torch.bfloat16, True, 1.0),
    ],
)
def test_dtype_and_value_range(dtype: torch.dtype, normalized: bool, high: float) -> None:
    frames = random_frames(2, 8, 8)
    frames[0, 0, 0, 0], frames[0, 0, 0, 1] = 0, 255
    out = process_clip(frames, ProcessDesc(dtype=dtype, normalized=normalized), None)
    assert out.dtype == dtype
    assert out.min().item() == 0
    assert out.max().item() == high
    expected = frames.double() / (255.0 if normalized else 1.0)
    tolerance = {torch.uint8: 0, torch.float32: 1e-6}.get(dtype, 4e-3 * high)
    assert torch.allclose(out.double(), expected, atol=tolerance, rtol=0)


def test_uint8_passthrough_and_input_untouched() -> None:
    frames = random_frames(3, 5, 7)
    copy = frames.clone()
    desc = ProcessDesc(random_flip=True, dtype="float32", mean=1.0, color_space="ycbcr")
    process_clip(frames, desc, AugmentParams(flip=True))
    assert torch.equal(frames, copy)
    assert torch.equal(process_clip(frames, ProcessDesc(), None), frames)
    # an HWC decode buffer seen as CHW (channels-last strides) comes out contiguous
    hwc = frames.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    out = process_clip(hwc, ProcessDesc(), None)
    assert out.is_contiguous()
    assert torch.equal(out, frames)


def test_normalisation_and_mean_std_exact() -> None:
    frames = random_frames(2, 4, 5)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    desc = ProcessDesc(dtype="float32", normalized=True, mean=mean, std=std)
    out = process_clip(frames, desc, None)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    expected = (frames.float() / 255.0 - m) / s
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    # one value for all channels, in [0, 255] units without normalized
    out = process_clip(frames, ProcessDesc(dtype="float32", mean=128.0, std=2.0), None)
    assert torch.allclose(out, (frames.float() - 128.0) / 2.0, atol=1e-6, rtol=0)
    # a pixel by hand: 255 normalized, red channel
    frames[0, 0, 0, 0] = 255
    out = process_clip(frames, desc, None)
    assert out[0, 0, 0, 0].item() == pytest.approx((1.0 - 0.485) / 0.229, abs=1e-6)


# --------------------------------------------------------------------------- colour


def solid(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4).contiguous()


@pytest.mark.parametrize(
    ("rgb", "ycbcr"),
    [
        ((255, 0, 0), (76.245, 84.972, 255.5)),
        ((255, 255, 255), (255.0, 128.0, 128.0)),
        ((0, 0, 0), (0.0, 128.0, 128.0)),
        ((0, 255, 0), (149.685, 43.528, 21.234)),
        ((0, 0, 255), (29.07, 255.5, 107.265)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_ycbcr_of_known_colours(
    rgb: tuple[int, int, int], ycbcr: tuple[float, float, float], dtype: torch.dtype
) -> None:
    out = process_clip(solid(rgb), ProcessDesc(color_space="YCbCr", dtype=dtype), None)
    assert out.shape == (2, 3, 4, 4)
    assert out.dtype == dtype
    got = out[0, :, 0, 0].double()
    want = torch.tensor(ycbcr, dtype=torch.float64)
    if dtype == torch.uint8:
        want = want.clamp(0, 255)
    assert torch.allclose(got, want, atol=1.0, rtol=0), (got, want)
    assert (out == out[:, :, :1, :1]).all()


def test_gray_is_one_channel_luma() -> None:
    frames = torch.cat([solid((255, 0, 0)), solid((255, 255, 255)), solid((0, 0, 0))])
    out = process_clip(frames, ProcessDesc(color_space="gray"), None)
    assert out.shape == (6, 1, 4, 4)
    assert out.dtype == torch.uint8
    assert out[::2, 0, 0, 0].tolist() == [76, 255, 0]
    out = process_clip(
        frames,
        ProcessDesc(
            color_space="gray", dtype="float32", normalized=True, mean=0.5, std=0.25, layout="cfhw"
        ),
        None,
    )
    assert out.shape == (1, 6, 4, 4)
    assert out[0, 0, 0, 0].item() == pytest.approx((76.245 / 255 - 0.5) / 0.25, abs=1e-5)


# ------------------------------------------------------------------------ crop and flip


def test_centre_crop_box_exact() -> None:
    frames = coordinate_frames(3, 48, 64)
    desc = ProcessDesc(width=30, height=20)
    params = draw_augment(desc, 48, 64, gen(0))
    assert params == AugmentParams(crop=(14, 17, 20, 30), flip=False, frame_size=(48, 64))
    out = process_clip(frames, desc, params)
    assert out.shape == (3, 3, 20, 30)
    assert out[0, 0, :, 0].tolist() == list(range(14, 34))
    assert out[0, 1, 0, :].tolist() == list(range(17, 47))
    assert out[:, 2, 0, 0].tolist() == [0, 1, 2]
    assert torch.equal(process_clip(frames, desc, None), out)  # None: the same centre crop
    # odd margins round down; only the width cropped
    assert draw_augment(ProcessDesc(width=5), 7, 8, gen(0)).crop == (0, 1, 7, 5)


def test_random_crop_is_the_same_for_every_frame_and_inside() -> None:
    frames = coordinate_frames(6, 40, 50)
    desc = ProcessDesc(width=16, height=12, random_crop=True)
    seen = set()
    for seed in range(20):
        params = draw_augment(desc, 40, 50, gen(seed))
        assert params.crop is not None
        top, left, h, w = params.crop
        assert (h, w) == (12, 16)
        assert 0 <= top <= 28 and 0 <= left <= 34
        out = process_clip(frames, desc, params)
        assert out.shape == (6, 3, 12, 16)
        assert (out[:, :2] == out[:1, :2]).all()  # identical crop on all frames
        assert out[0, 0, 0, 0].item() == top and out[0, 1, 0, 0].item() == left
        seen.add((top, left))
    assert len(seen) >= 15


def test_draws_are_reproducible_and_differ_across_seeds() -> None:
    desc = ProcessDesc(random_resized_crop=(0.08, 1.0), width=8, height=8, random_flip=True)
    first = [draw_augment(desc, 60, 80, gen(seed)) for seed in range(50)]
    again = [draw_augment(desc, 60, 80, gen(seed)) for seed in range(50)]
    assert first == again
    assert len({p.crop for p in first}) >= 45
    flips = sum(p.flip for p in first)
    assert 10 <= flips <= 40
    g = gen(7)
    state = g.get_state()
    draw_augment(ProcessDesc(width=4, height=4), 10, 10, g)  # nothing random: no draw
    assert torch.equal(g.get_state(), state)


def test_flip_mirrors_horizontally() -> None:
    frames = random_frames(3, 6, 9)
    desc = ProcessDesc(random_flip=True)
    flipped = process_clip(frames, desc, AugmentParams(flip=True))
    assert torch.equal(flipped, frames.flip(-1))
    assert torch.equal(process_clip(frames, desc, AugmentParams(flip=False)), frames)
    # flip after crop: the crop box is in unflipped coordinates
    desc = ProcessDesc(random_flip=True, random_crop=True, width=4, height=3)
    params = AugmentParams(crop=(1, 2, 3, 4), flip=True, frame_size=(6, 9))
    out = process_clip(frames, desc, params)
    assert torch.equal(out, frames[:, :, 1:4, 2:6].flip(-1))
    flips = [draw_augment(desc, 6, 9, gen(s)).flip for s in range(200)]
    assert 70 <= sum(flips) <= 130
    with pytest.raises(ValueError, match="random desc"):
        process_clip(frames, desc, None)


def test_random_resized_crop_area_and_ratio_within_bounds() -> None:
    desc = ProcessDesc(random_resized_crop=(0.2, 0.5), width=10, height=10)
    g = gen(3)
    areas = []
    for _ in range(500):
        params = draw_augment(desc, 100, 100, g)
        assert params.frame_size == (100, 100)
        assert params.crop is not None
        top, left, h, w = params.crop
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 100
        area = h * w / 10000
        assert 0.2 - 0.02 <= area <= 0.5 + 0.02
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
        areas.append(area)
    assert min(areas) < 0.23 and max(areas) > 0.47  # the whole range is used
    mean = sum(areas) / len(areas)
    assert 0.32 <= mean <= 0.38


def test_random_resized_crop_fallback_is_centre_crop() -> None:
    # ratio 10..20 cannot fit in a square frame with area >= 0.5: every try fails
    desc = ProcessDesc(
        random_resized_crop=(0.5, 1.0), random_resized_ratio=(10.0, 20.0), width=4, height=4
    )
    assert draw_augment(desc, 100, 100, gen(0)).crop == (45, 0, 10, 100)
    tall = ProcessDesc(
        random_resized_crop=(0.9, 1.0), random_resized_ratio=(1.0, 1.0), width=4, height=4
    )
    params = draw_augment(tall, 90, 10, gen(0))  # aspect 1/9 < 1: fallback, width kept
    assert params.crop == (40, 0, 10, 10)


def test_random_resized_crop_output_is_resized_region() -> None:
    frames = random_frames(3, 40, 60)
    desc = ProcessDesc(random_resized_crop=(0.3, 0.9), width=24, height=16)
    params = draw_augment(desc, 40, 60, gen(1))
    assert params.crop is not None
    top, left, h, w = params.crop
    out = process_clip(frames, desc, params)
    assert out.shape == (3, 3, 16, 24)
    region = frames[:, :, top : top + h, left : left + w].float()
    ref = (
        F.interpolate(region, size=(16, 24), mode="bilinear", align_corners=False, antialias=True)
        .round()
        .clamp(0, 255)
    )
    assert (out.float() - ref).abs().max().item() <= 1.0


# ---------------------------------------------------------------------------- resize


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "area"])
@pytest.mark.parametrize("antialias", [True, False])
def test_resize_modes_keep_shape_and_constants(interpolation: str, antialias: bool) -> None:
    frames = position_frames(3, 30, 40) * 50
    desc = ProcessDesc(scale_width=20, interpolation=interpolation, antialias=antialias)
    out = process_clip(frames, desc, None)
    assert out.shape == (3, 3, 15, 20)
    assert out.dtype == torch.uint8
    assert out[:, 0, 0, 0].tolist() == [0, 50, 100]
    assert (out == out[:, :, :1, :1]).all()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "area"])
def test_resize_matches_float_reference(interpolation: str) -> None:
    # a smooth image: the uint8 kernels and the float path agree within rounding
    y = torch.linspace(0, 1, 48).view(48, 1)
    x = torch.linspace(0, 1, 64).view(1, 64)
    img = (255 * (0.5 * y + 0.5 * x * x)).round().to(torch.uint8)
    frames = img.expand(2, 3, 48, 64).contiguous()
    out = process_clip(frames, ProcessDesc(scale_height=24, interpolation=interpolation), None)
    assert out.shape == (2, 3, 24, 32)
    kwargs = {} if interpolation == "area" else {"align_corners": False, "antialias": True}
    ref = F.interpolate(frames.float(), size=(24, 32), mode=interpolation, **kwargs)
    assert (out.float() - ref.round().clamp(0, 255)).abs().max().item() <= 1.0


def test_scale_then_crop() -> None:
    frames = random_frames(2, 48, 64)
    desc = ProcessDesc(scale_width=32, width=20, height=10, dtype="float32")
    assert output_size(desc, 48, 64) == (10, 20)
    params = draw_augment(desc, 48, 64, gen(0))
    assert params.frame_size == (24, 32)
    assert params.crop == (7, 6, 10, 20)
    out = process_clip(frames, desc, params)
    scaled = F.interpolate(
        frames, size=(24, 32), mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.equal(out, scaled[:, :, 7:17, 6:26].float())
    # frames already at the scaled size (resized by the decoder) are not resized again
    assert torch.equal(process_clip(scaled, desc, params), out)


def test_size_errors_name_the_sizes() -> None:
    desc = ProcessDesc(scale_width=32, height=30)
    with pytest.raises(
        ValueError,
        match=r"crop \(30x32, height x width\) for the scaled frame 24x32 \(input 48x64\)",
    ):
        draw_augment(desc, 48, 64, gen(0))
    with pytest.raises(ValueError, match=r"crop \(30x32, height x width\)"):
        output_size(desc, 48, 64)
    desc = ProcessDesc(width=8, height=8, random_crop=True)
    params = draw_augment(desc, 20, 20, gen(0))
    with pytest.raises(ValueError, match=r"drawn for a 20x20 frame .* frames are 16x16"):
        process_clip(random_frames(1, 16, 16), desc, params)
    with pytest.raises(ValueError, match=r"Invalid params\.crop \(\(15, 0, 8, 8\)\)"):
        process_clip(
            random_frames(1, 20, 20), desc, AugmentParams(crop=(15, 0, 8, 8), frame_size=(20, 20))
        )
    with pytest.raises(ValueError, match=r"Invalid frames \(a tensor of shape \(2, 4, 4\)"):
        process_clip(torch.zeros(2, 4, 4, dtype=torch.uint8), ProcessDesc(), None)
    with pytest.raises(ValueError, match="float32"):
        process_clip(torch.zeros(1, 3, 4, 4), ProcessDesc(), None)


def test_as_dict() -> None:
    params = AugmentParams(crop=(1, 2, 3, 4), flip=True, frame_size=(10, 10))
    assert params.as_dict() == {"crop": [1, 2, 3, 4], "flip": True}
    assert AugmentParams().as_dict() == {"crop": None, "flip": False}


def test_output_shape_matches_process_clip_for_combined_desc() -> None:
    desc = ProcessDesc(
        index_map=[2, -1, 1, 0],
        scale_height=20,
        width=12,
        random_crop=True,
        random_flip=True,
        color_space="gray",
        dtype="float16",
        normalized=True,
        layout="hwfc",
    )
    frames = random_frames(4, 40, 30)
    out = process_clip(frames, desc, draw_augment(desc, 40, 30, gen(5)))
    assert out.shape == desc.output_shape(4, 40, 30) == (20, 12, 3, 1)
    assert out.dtype == torch.float16
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert math.isfinite(out.float().sum().item())


def _tolerance(desc: ProcessDesc, reference: torch.Tensor) -> float:
    """One uint8 level in output units, plus the rounding of half-precision dtypes."""
    unit = (1 / 255 if desc.normalized else 1.0) / (min(desc.std) if desc.std else 1.0)
    return 1.01 * unit + 0.01 * reference.double().abs().max().item()


def _smooth_frames() -> torch.Tensor:
    y = torch.linspace(0, 1, 48).view(48, 1)
    x = torch.linspace(0, 1, 64).view(1, 64)
    img = (255 * (0.5 * y + 0.5 * x * x)).round().to(torch.uint8)
    return torch.stack([img, 255 - img, img // 2]).expand(3, 3, 48, 64).contiguous()


_DEVICE_DESCS = [
    ProcessDesc(),
    ProcessDesc(index_map=[1, -1, 0], layout="cfhw"),
    ProcessDesc(scale_width=32, width=24, height=16, random_crop=True, random_flip=True),
    ProcessDesc(scale_height=20, interpolation="nearest"),
    ProcessDesc(scale_height=20, interpolation="bicubic", antialias=False),
    ProcessDesc(scale_height=20, interpolation="area", dtype="float16", normalized=True),
    ProcessDesc(random_resized_crop=(0.3, 0.9), width=16, height=16, color_space="ycbcr"),
    ProcessDesc(color_space="gray", dtype="bfloat16", mean=100.0, std=50.0, layout="fhwc"),
    ProcessDesc(dtype="float32", normalized=True, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4)),
]


@pytest.mark.parametrize("desc", _DEVICE_DESCS)
def test_float_resize_fallback_matches_uint8_kernels(
    desc: ProcessDesc, monkeypatch: pytest.MonkeyPatch
) -> None:
    # devices without uint8 resize kernels (CUDA bilinear/bicubic) take the float32 path
    frames = _smooth_frames()
    params = draw_augment(desc, 48, 64, gen(11))
    fast = process_clip(frames, desc, params)
    monkeypatch.setattr(processing, "FLOAT_RESIZE_CHUNK", 2)
    monkeypatch.setattr(processing, "_uint8_resize_ok", lambda *args: False)
    slow = process_clip(frames, desc, params)
    assert slow.dtype == fast.dtype and slow.shape == fast.shape
    assert (slow.double() - fast.double()).abs().max().item() <= _tolerance(desc, fast)


@pytest.mark.cuda
@pytest.mark.parametrize("desc", _DEVICE_DESCS)
def test_cuda_matches_cpu(desc: ProcessDesc) -> None:
    frames = _smooth_frames()
    params = draw_augment(desc, 48, 64, gen(11))
    cpu = process_clip(frames, desc, params)
    gpu = process_clip(frames.cuda(), desc, params)
    assert gpu.device.type == "cuda"
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape and gpu.is_contiguous()
    assert (gpu.cpu().double() - cpu.double()).abs().max().item() <= _tolerance(desc, cpu)

"""The compact reorder buffer: samples wait as uint8 (``shape_clip``) and are finished per batch
(``finish_values``), bit-identical to processing each clip whole (``process_clip``, the path every
sample took before); ``stats()`` reports what the buffer holds against the budget."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from tvl_async._augment import AugmentParams, draw_augment
from tvl_async._config import ProcessDesc
from tvl_async._loader import VideoLoader
from tvl_async._prefetcher import Prefetcher
from tvl_async._processing import (
    finish_values,
    held_bytes_per_pixel,
    held_compact,
    process_clip,
    shape_clip,
    source_positions,
)
from tvl_async.cli.synthetic import VideoSpec, write_video

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.uint8)
SEQ, H, W = 3, 36, 52


def _clips(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # a permuted HWC buffer, as decoders give it
    return [
        torch.randint(0, 256, (SEQ, H, W, 3), generator=g, dtype=torch.uint8).permute(0, 3, 1, 2)
        for _ in range(n)
    ]


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1).view(torch.uint8)


def _both(desc: ProcessDesc, clips: list[torch.Tensor], seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    params = [draw_augment(desc, H, W, g) for _ in clips]
    positions = list(range(SEQ))
    if desc.index_map is not None:
        wanted = sorted(source_positions(desc, SEQ))
        clips = [c[wanted] for c in clips]
        positions = wanted
    old = torch.stack(
        [process_clip(c, desc, p, positions=positions) for c, p in zip(clips, params, strict=True)]
    )
    held = [shape_clip(c, desc, p, positions=positions) for c, p in zip(clips, params, strict=True)]
    for t in held:
        assert t.dtype == torch.uint8 and t.is_contiguous()
        assert t.untyped_storage().nbytes() == t.numel()
    new = finish_values(torch.stack(held), desc)
    assert new.dtype == old.dtype and new.shape == old.shape and new.is_contiguous()
    assert torch.equal(_bits(new), _bits(old)), desc


MEANS = (None, (0.485, 0.456, 0.406), 0.5)  # mean (std alongside)

#: Every combination ProcessDesc accepts: uint8 outputs take neither ``normalized`` nor
#: ``mean``/``std`` (test_uint8_refuses_normalized_and_mean_std), so those are left out.
VALUE_OPTIONS = [
    (dtype, normalized, mean, color, layout, imap)
    for dtype, normalized, mean, color, layout, imap in itertools.product(
        DTYPES,
        (False, True),  # normalized
        MEANS,
        ("RGB", "YCbCr", "gray"),
        ("fchw", "cfhw", "fhwc"),
        (None, (1, -1, 0)),  # index_map
    )
    if dtype != torch.uint8 or not (normalized or mean is not None)
]


@pytest.mark.parametrize(
    ("normalized", "mean"), [(True, None), *((n, m) for n in (False, True) for m in MEANS[1:])]
)
def test_uint8_refuses_normalized_and_mean_std(normalized: bool, mean: Any) -> None:
    """The combinations left out of VALUE_OPTIONS: ProcessDesc refuses them, naming the value
    and what is allowed."""
    std = None if mean is None else mean
    what = "normalized" if normalized else "mean"
    with pytest.raises(ValueError, match=rf"Invalid {what} \(.*\) with dtype uint8\. Supported"):
        ProcessDesc(dtype=torch.uint8, normalized=normalized, mean=mean, std=std)


@pytest.mark.parametrize(("dtype", "normalized", "mean", "color", "layout", "imap"), VALUE_OPTIONS)
def test_batch_finish_is_bit_identical_for_every_value_option(
    dtype: torch.dtype, normalized: bool, mean: Any, color: str, layout: str, imap: Any
) -> None:
    if mean is not None and color == "gray" and isinstance(mean, tuple):
        mean = 0.45  # one channel
    std = None if mean is None else (mean if isinstance(mean, float) else (0.229, 0.224, 0.225))
    desc = ProcessDesc(
        dtype=dtype,
        normalized=normalized,
        mean=mean,
        std=std,
        color_space=color,
        layout=layout,
        index_map=imap,
        scale_width=40,
        scale_height=30,
        width=24,
        height=20,
        random_crop=True,
        random_flip=True,
    )
    _both(desc, _clips(4))


GEOMETRY = [
    {"scale_width": 40, "scale_height": 30},
    {"scale_width": 40, "scale_height": 30, "width": 24, "height": 20, "random_crop": True},
    {"width": 24, "height": 20},
    {"width": 24, "height": 24, "random_resized_crop": (0.08, 1.0)},
    {"scale_width": 104, "scale_height": 72},  # upscale
    {},
]


@pytest.mark.parametrize("geometry", GEOMETRY)
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "area"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_batch_finish_is_bit_identical_for_every_resize_path(
    geometry: dict[str, Any], interpolation: str, antialias: bool, dtype: torch.dtype
) -> None:
    # "area" has no uint8 kernel on the CPU: it resizes in float32, rounded back to uint8
    # before anything else, so the compact form is exact there too.
    desc = ProcessDesc(
        dtype=dtype,
        normalized=dtype != torch.uint8,
        mean=0.5 if dtype != torch.uint8 else None,
        std=0.25 if dtype != torch.uint8 else None,
        interpolation=interpolation,
        antialias=antialias,
        random_flip=True,
        **geometry,
    )
    _both(desc, _clips(3))


def test_held_compact_only_where_smaller() -> None:
    assert held_compact(ProcessDesc(dtype=torch.float32, normalized=True))
    assert held_compact(ProcessDesc(dtype=torch.float16, color_space="YCbCr"))
    assert held_compact(ProcessDesc(dtype=torch.float32, color_space="gray"))  # 4 > 3 bytes
    assert not held_compact(ProcessDesc(dtype=torch.float16, color_space="gray"))  # 2 < 3
    assert not held_compact(ProcessDesc())  # uint8: already compact, finished in the workers
    assert not held_compact(ProcessDesc(color_space="gray"))
    assert held_bytes_per_pixel(ProcessDesc(dtype=torch.float32)) == 3
    assert held_bytes_per_pixel(ProcessDesc(dtype=torch.float16, color_space="gray")) == 2
    assert held_bytes_per_pixel(ProcessDesc(color_space="gray")) == 1


def test_finish_values_refuses_non_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        finish_values(torch.zeros(2, 3, 4, 4), ProcessDesc(dtype=torch.float32))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("compact")
    spec = VideoSpec(codec="libx264", n_frames=40, width=64, height=48, gop=10, bframes=2)
    return [str(write_video(d / f"v{k}.mp4", spec)) for k in range(3)]


OUTPUTS = {
    "f32": ProcessDesc(
        dtype=torch.float32,
        normalized=True,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        width=32,
        height=32,
        random_resized_crop=(0.08, 1.0),
        random_flip=True,
    ),
    "f16_gray": ProcessDesc(dtype=torch.float16, color_space="gray", width=24, height=24),
    "ycc_cf": ProcessDesc(
        dtype=torch.bfloat16, color_space="YCbCr", layout="cfhw", index_map=(1, 0)
    ),
    "u8": ProcessDesc(width=16, height=16, random_crop=True),
}


@pytest.mark.timeout(60)
def test_prefetcher_outputs_equal_process_clip_of_each_sample(small_files: list[str]) -> None:
    with Prefetcher(small_files, seq_len=2, batch_size=5, processing=OUTPUTS, seed=3) as it:
        batches = list(it)
    loaders = {f: VideoLoader(f) for f in small_files}
    try:
        for b in batches:
            for k in range(b.batch_size):
                frames = loaders[b.files[k]].read_frames_at(b.frame_indices[k].tolist())
                for name, desc in OUTPUTS.items():
                    aug = b.augment[name][k]
                    crop = tuple(aug["crop"]) if aug["crop"] is not None else None
                    params = AugmentParams(crop, aug["flip"])
                    want = process_clip(frames, desc, params)
                    got = b[name][k]
                    assert got.dtype == want.dtype and got.shape == want.shape
                    assert torch.equal(_bits(got), _bits(want)), name
    finally:
        for v in loaders.values():
            v.close()


@pytest.mark.timeout(60)
def test_stats_report_held_samples_bytes_and_budget(small_files: list[str]) -> None:
    desc = ProcessDesc(dtype=torch.float32, normalized=True, width=32, height=32)
    per = 2 * 3 * 32 * 32  # two frames, held as uint8
    budget = 40 * per + 5
    with Prefetcher(
        small_files, seq_len=2, batch_size=4, processing=desc, memory_budget=budget, shuffle=True
    ) as it:
        seen = []
        for _ in it:
            s = it.stats()
            seen.append(s.held_samples)
            assert s.sample_bytes == per and s.memory_budget == budget
            assert s.lookahead == 40 and s.memory_bound_bytes <= budget
            assert 0 <= s.held_bytes <= s.memory_bound_bytes <= budget
            assert s.held_bytes == s.held_samples * per
            assert s.peak_buffer_bytes <= budget
    assert max(seen) > 0


def test_budget_counts_uint8_bytes_for_float_outputs(tmp_path: Path) -> None:
    spec = VideoSpec(codec="libx264", n_frames=12, width=64, height=48)
    f = str(write_video(tmp_path / "a.mp4", spec))
    desc = ProcessDesc(dtype=torch.float32, normalized=True, width=32, height=32)
    with Prefetcher([f], batch_size=2, processing=desc, memory_budget=3 * 32 * 32 * 5) as it:
        assert it.lookahead == 5  # 5 uint8 samples; float32 would hold 1

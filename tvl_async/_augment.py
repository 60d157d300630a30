"""A clip's random choices (crop place, flip): drawn once per clip, applied to all its frames.

:func:`draw_augment` draws :class:`AugmentParams` from a ``torch.Generator`` seeded per sample,
so the same sample gets the same choices whatever thread or order it is decoded in. Pure
functions; any thread may call them (a generator must not be shared between threads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tvl_async._config import ProcessDesc

__all__ = ["AugmentParams", "draw_augment"]


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one clip, shared by all its frames.

    Attributes:
        crop: ``(top, left, height, width)`` in pixels of the frame the crop is cut from: the
            frame *after* the resize step (``ProcessDesc.scaled_size``) for ``width``/``height``
            crops, the input frame for ``random_resized_crop`` (the region is then resized to
            ``width x height``). None when the desc crops nothing.
        flip: mirror horizontally (after crop and resize).
        frame_size: ``(height, width)`` of the frame ``crop`` refers to; :func:`process_clip`
            checks it. None skips the check.
    """

    crop: tuple[int, int, int, int] | None = None
    flip: bool = False
    frame_size: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python form for batch metadata: ``{"crop": [t, l, h, w] | None, "flip": bool}``."""
        return {
            "crop": list(self.crop) if self.crop is not None else None,
            "flip": self.flip,
        }


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """One integer uniform in ``[low, high]`` (inclusive) from ``generator``."""
    return int(
        torch.randint(low, high + 1, (1,), generator=generator, device=generator.device).item()
    )


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    """One float uniform in ``[low, high)`` from ``generator``."""
    sample = torch.empty(1, dtype=torch.float64, device=generator.device)
    return float(sample.uniform_(low, high, generator=generator).item())


def _resized_crop_box(
    desc: ProcessDesc, in_height: int, in_width: int, generator: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's region: 10 tries, then a centre-crop fallback."""
    assert desc.random_resized_crop is not None
    area = in_height * in_width
    lo_scale, hi_scale = desc.random_resized_crop
    lo_ratio, hi_ratio = desc.random_resized_ratio
    log_lo, log_hi = math.log(lo_ratio), math.log(hi_ratio)
    for _ in range(10):
        target_area = area * _uniform(generator, lo_scale, hi_scale)
        ratio = math.exp(_uniform(generator, log_lo, log_hi))
        w = math.floor(math.sqrt(target_area * ratio) + 0.5)
        h = math.floor(math.sqrt(target_area / ratio) + 0.5)
        if 0 < w <= in_width and 0 < h <= in_height:
            top = _randint(generator, 0, in_height - h)
            left = _randint(generator, 0, in_width - w)
            return top, left, h, w
    in_ratio = in_width / in_height
    if in_ratio < lo_ratio:
        w, h = in_width, max(1, math.floor(in_width / lo_ratio + 0.5))
    elif in_ratio > hi_ratio:
        h, w = in_height, max(1, math.floor(in_height * hi_ratio + 0.5))
    else:
        h, w = in_height, in_width
    return (in_height - h) // 2, (in_width - w) // 2, h, w


def draw_augment(
    desc: ProcessDesc, in_height: int, in_width: int, generator: torch.Generator
) -> AugmentParams:
    """Draw the crop place and flip for one clip of ``in_height x in_width`` frames (pixels).

    Deterministic for a given generator state; a desc with nothing random draws nothing (the
    generator is left as it was). Draw order: crop (``random_resized_crop``: up to 10 tries of
    area fraction, log aspect ratio, then top and left; ``random_crop``: top, then left), then
    flip. Use a CPU generator: on another device each draw syncs with the host. Non-random crops
    are centred, rounding down (``top = (H - h) // 2``). Does not block otherwise.

    Raises:
        ValueError: the crop is larger than the (scaled) frame; the message gives the sizes.
    """
    out_h, out_w = desc.output_size(in_height, in_width)  # validates the sizes
    crop: tuple[int, int, int, int] | None
    if desc.random_resized_crop is not None:
        frame_size = (in_height, in_width)
        crop = _resized_crop_box(desc, in_height, in_width, generator)
    else:
        frame_size = desc.scaled_size(in_height, in_width)
        sh, sw = frame_size
        if desc.width is None and desc.height is None:
            crop = None
        elif desc.random_crop:
            top = _randint(generator, 0, sh - out_h)
            left = _randint(generator, 0, sw - out_w)
            crop = (top, left, out_h, out_w)
        else:
            crop = ((sh - out_h) // 2, (sw - out_w) // 2, out_h, out_w)
    flip = desc.random_flip and _uniform(generator, 0.0, 1.0) < 0.5
    return AugmentParams(crop=crop, flip=flip, frame_size=frame_size)

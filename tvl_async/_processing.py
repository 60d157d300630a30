"""Apply a :class:`~tvl_async._config.ProcessDesc` to the decoded frames of one clip.

Pure torch on the frames' device (CPU or CUDA): no files, no threads, no host sync except the
``.item()`` of random draws on a non-CPU generator. Functions here may run in any thread; on a
GPU the caller chooses the stream.

A clip's random choices (crop place, flip) are drawn once by :func:`draw_augment` and applied to
every frame by :func:`process_clip`, so all frames of a clip share them. Work is ordered cheapest
first: frame selection (``index_map``), resize and crop on uint8, flip, then colour conversion and
the conversion to float, mean/std and layout.

:func:`process_clip` is the composition of two halves: :func:`shape_clip` (selection and geometry,
uint8 in, uint8 out: the most compact exact form of a sample, which the reorder buffer holds) and
:func:`finish_values` (colour space, dtype, normalisation, layout), which takes one clip or a
stacked batch of them, so that the service applies it once per collated batch. Every step of
:func:`finish_values` is elementwise, so a batch finished at once is bit-identical to its clips
finished one by one. :func:`held_compact` says for which descs the compact form is the smaller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tvl_async._augment import AugmentParams, draw_augment
from tvl_async._checks import invalid_value
from tvl_async._config import ProcessDesc

__all__ = [
    "AugmentParams",
    "draw_augment",
    "finish_values",
    "held_bytes_per_pixel",
    "held_compact",
    "needed_frames",
    "output_size",
    "process_clip",
    "shape_clip",
    "source_positions",
]

#: Frames resized at once on the float path (bounds its float32 temporary memory).
FLOAT_RESIZE_CHUNK = 8

# (device type, torch mode, antialias) -> whether F.interpolate takes uint8 there.
_UINT8_RESIZE_OK: dict[tuple[str, str, bool], bool] = {}

_TORCH_MODES = {
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "nearest": "nearest-exact",  # pixel centres as PIL/OpenCV, not torch's legacy "nearest"
    "area": "area",
}


def output_size(desc: ProcessDesc, in_height: int, in_width: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of ``desc``'s output frames for ``in_height x in_width`` input.

    Raises:
        ValueError: the crop is larger than the (scaled) frame.
    """
    return desc.output_size(in_height, in_width)


def source_positions(desc: ProcessDesc, seq_len: int) -> list[int]:
    """For each output frame ``j``, the clip position (0-based) of the input frame it shows.

    Without ``index_map`` this is ``0..seq_len-1``. Example: ``seq_len=5``,
    ``index_map=[-1, -1, 0, -1, -1]`` gives ``[2]``; ``[4, 3, 2, 1, 0]`` gives ``[4, 3, 2, 1, 0]``.

    Raises:
        ValueError: ``index_map`` is longer than ``seq_len``.
    """
    n_out = desc.output_frames(seq_len)
    if desc.index_map is None:
        return list(range(seq_len))
    sources = [0] * n_out
    for position, out in enumerate(desc.index_map):
        if out >= 0:
            sources[out] = position
    return sources


def needed_frames(desc: ProcessDesc, seq_len: int) -> list[int]:
    """Clip positions (sorted, 0-based) that ``desc``'s output uses; the rest need no decoding.

    The caller decodes the union over all outputs and passes it as ``positions`` to
    :func:`process_clip`.

    Raises:
        ValueError: ``index_map`` is longer than ``seq_len``.
    """
    return sorted(source_positions(desc, seq_len))


def _select(
    frames: torch.Tensor, desc: ProcessDesc, positions: Sequence[int] | None
) -> torch.Tensor:
    """Pick the frames the output shows, in output order (``index_map``)."""
    if desc.index_map is None:
        return frames
    n_in = frames.shape[0]
    given = list(range(n_in)) if positions is None else [int(p) for p in positions]
    if len(given) != n_in:
        raise invalid_value(
            "positions",
            given,
            "one clip position per frame",
            context=f"({len(given)} entries) for {n_in} frames",
        )
    row_of = {p: row for row, p in enumerate(given)}
    seq_len = max(len(desc.index_map), max(given, default=-1) + 1)
    wanted = source_positions(desc, seq_len)
    missing = [p for p in wanted if p not in row_of]
    if missing:
        raise ValueError(
            f"index_map {list(desc.index_map)!r} needs clip positions {missing} that are not "
            f"among the frames given (positions {given!r})"
        )
    rows = [row_of[p] for p in wanted]
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return frames[rows[0] : rows[0] + len(rows)]  # a view, no copy
    return torch.stack([frames[row] for row in rows])  # no index tensor: no host-to-device copy


def _uint8_resize_ok(device: torch.device, mode: str, antialias: bool) -> bool:
    """Whether ``F.interpolate`` accepts uint8 for this device and mode (probed once)."""
    key = (device.type, mode, antialias)
    ok = _UINT8_RESIZE_OK.get(key)
    if ok is None:
        probe = torch.zeros(1, 3, 4, 4, dtype=torch.uint8, device=device)
        try:
            F.interpolate(probe, size=(2, 3), **_interp_kwargs(mode, antialias))
            ok = True
        except (RuntimeError, NotImplementedError):
            ok = False
        _UINT8_RESIZE_OK[key] = ok
    return ok


def _interp_kwargs(mode: str, antialias: bool) -> dict[str, Any]:
    """Keyword arguments of ``F.interpolate`` for a torch ``mode``."""
    if mode in ("bilinear", "bicubic"):
        return {"mode": mode, "align_corners": False, "antialias": antialias}
    return {"mode": mode}


def _resize(
    frames: torch.Tensor, size: tuple[int, int], interpolation: str, antialias: bool
) -> torch.Tensor:
    """Resize uint8 ``[F, C, H, W]`` frames to ``size`` (height, width); returns uint8.

    Uses torch's uint8 kernels where the device has them (CPU bilinear/bicubic/nearest), else
    float32 in chunks of :data:`FLOAT_RESIZE_CHUNK` frames, rounded and clamped back to uint8.
    """
    mode = _TORCH_MODES[interpolation]
    kwargs = _interp_kwargs(mode, antialias)
    if _uint8_resize_ok(frames.device, mode, antialias):
        return F.interpolate(frames, size=size, **kwargs)
    out = torch.empty(
        (frames.shape[0], frames.shape[1], *size), dtype=torch.uint8, device=frames.device
    )
    for start in range(0, frames.shape[0], FLOAT_RESIZE_CHUNK):
        chunk = frames[start : start + FLOAT_RESIZE_CHUNK].float()
        resized = F.interpolate(chunk, size=size, **kwargs)
        out[start : start + FLOAT_RESIZE_CHUNK] = resized.round_().clamp_(0, 255)
    return out


def _geometry(frames: torch.Tensor, desc: ProcessDesc, params: AugmentParams) -> torch.Tensor:
    """Resize and crop uint8 frames as ``desc`` and ``params`` say."""
    in_h, in_w = frames.shape[-2], frames.shape[-1]
    if desc.random_resized_crop is not None:
        frame_size = (in_h, in_w)
    else:
        frame_size = desc.scaled_size(in_h, in_w)
    if params.frame_size is not None and params.frame_size != frame_size:
        raise ValueError(
            f"params were drawn for a {params.frame_size[0]}x{params.frame_size[1]} frame "
            f"(height x width) but the frames are {in_h}x{in_w} (scaled: "
            f"{frame_size[0]}x{frame_size[1]}); draw them with draw_augment for these frames"
        )
    out_h, out_w = desc.output_size(in_h, in_w)
    if params.crop is None and (desc.width is not None or desc.height is not None):
        raise ValueError(
            "params.crop is None but the desc crops (width/height set); draw the params with "
            "draw_augment(desc, ...)"
        )
    x = frames
    if desc.random_resized_crop is None and frame_size != (in_h, in_w):
        x = _resize(x, frame_size, desc.interpolation, desc.antialias)
    if params.crop is not None:
        top, left, h, w = params.crop
        fh, fw = frame_size
        if h < 1 or w < 1 or top < 0 or left < 0 or top + h > fh or left + w > fw:
            raise invalid_value(
                "params.crop",
                params.crop,
                "boxes inside the frame",
                context=f"(top, left, height, width) for a {fh}x{fw} frame",
            )
        if (h, w) != (fh, fw):
            x = x[..., top : top + h, left : left + w]
        if desc.random_resized_crop is not None and (h, w) != (out_h, out_w):
            x = _resize(x, (out_h, out_w), desc.interpolation, desc.antialias)
    return x


def _to_color_space(x: torch.Tensor, color_space: str) -> torch.Tensor:
    """RGB float ``[..., 3, H, W]`` to YCbCr (BT.601 full range, as JPEG) or gray (Y)."""
    r, g, b = x[..., 0:1, :, :], x[..., 1:2, :, :], x[..., 2:3, :, :]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    if color_space == "gray":
        return y
    cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.cat((y, cb, cr), dim=-3)


def _per_channel(v: torch.Tensor, values: tuple[float, ...], op: str) -> torch.Tensor:
    """``v.sub_`` / ``v.div_`` by one value or one per channel, in place, with Python scalars.

    Scalars rather than a small device tensor: no host-to-device copy on a GPU.
    """
    if len(values) == 1:
        return v.sub_(values[0]) if op == "sub" else v.div_(values[0])
    for c, value in enumerate(values):
        channel = v[..., c, :, :]
        if op == "sub":
            channel.sub_(value)
        else:
            channel.div_(value)
    return v


def _values(x: torch.Tensor, desc: ProcessDesc) -> torch.Tensor:
    """Colour space, dtype, ``normalized``, mean/std on ``[..., 3, H, W]`` uint8 frames."""
    floating = desc.dtype != torch.uint8
    if desc.color_space == "RGB" and not floating:
        return x
    v = x.to(torch.float32)
    if desc.color_space != "RGB":
        v = _to_color_space(v, desc.color_space)
    if not floating:
        return v.round_().clamp_(0, 255).to(torch.uint8)
    if desc.normalized:
        v = v.div_(255.0)
    if desc.mean is not None:
        v = _per_channel(v, desc.mean, "sub")
    if desc.std is not None:
        v = _per_channel(v, desc.std, "div")
    return v.to(desc.dtype)


def held_bytes_per_pixel(desc: ProcessDesc) -> int:
    """Bytes per output pixel (all channels) of a finished sample of ``desc`` as the reorder
    buffer holds it: 3 (uint8 RGB) when :func:`held_compact`, else the output's own."""
    out = desc.channels * torch.empty((), dtype=desc.dtype).element_size()
    return 3 if held_compact(desc) else out


def held_compact(desc: ProcessDesc) -> bool:
    """Whether a finished sample of ``desc`` waits in its compact form (uint8 RGB from
    :func:`shape_clip`, finished per batch by :func:`finish_values`): when that form is smaller
    than the output (float outputs, except gray in 16 bits). Either form gives the same output."""
    return desc.channels * torch.empty((), dtype=desc.dtype).element_size() > 3


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise invalid_value(
            "frames",
            None,
            "[F, 3, H, W] uint8 RGB tensors",
            shown=f"a tensor of shape {tuple(frames.shape)} and dtype {frames.dtype}",
        )
    if frames.shape[0] == 0:
        raise invalid_value("frames", None, "F >= 1", shown="an empty tensor, 0 frames")


def _shape(
    frames: torch.Tensor,
    desc: ProcessDesc,
    params: AugmentParams | None,
    positions: Sequence[int] | None,
) -> torch.Tensor:
    """Selection, resize, crop and flip of uint8 frames (maybe a view of ``frames``)."""
    _check_frames(frames)
    if params is None:
        if desc.is_random:
            raise invalid_value(
                "params",
                None,
                "draw_augment(desc, height, width, generator)",
                context="for a random desc",
            )
        params = draw_augment(desc, frames.shape[-2], frames.shape[-1], torch.Generator())
    x = _select(frames, desc, positions)
    x = _geometry(x, desc, params)
    if params.flip:
        x = x.flip(-1)
    return x


def _owned(x: torch.Tensor) -> torch.Tensor:
    """``x`` contiguous, holding no more memory than its own elements."""
    x = x.contiguous()
    if x.untyped_storage().nbytes() > x.numel() * x.element_size():
        x = x.clone()  # a view of the whole clip (index_map) would keep the clip alive
    return x


def shape_clip(
    frames: torch.Tensor,
    desc: ProcessDesc,
    params: AugmentParams | None,
    *,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """The first half of :func:`process_clip`: frame selection, resize, crop and flip.

    Arguments as :func:`process_clip`. Returns a contiguous uint8 RGB ``[F_out, 3, h, w]``
    tensor on ``frames.device`` that owns its storage (it may be ``frames`` itself);
    ``finish_values(shape_clip(...), desc)`` equals ``process_clip(...)`` bit for bit.
    No host sync.

    Raises:
        ValueError: as :func:`process_clip`.
    """
    return _owned(_shape(frames, desc, params, positions))


def finish_values(x: torch.Tensor, desc: ProcessDesc) -> torch.Tensor:
    """The second half of :func:`process_clip`: colour space, dtype, ``normalized``, mean/std and
    layout of uint8 RGB frames from :func:`shape_clip`.

    Args:
        x: ``[F, 3, h, w]`` (one clip) or ``[B, F, 3, h, w]`` (a stacked batch) uint8.
        desc: what to make.

    Returns:
        A contiguous tensor in ``desc.layout`` order (after the batch dimension, if any) of
        ``desc.dtype`` on ``x.device``; elementwise, so a batch gives exactly the stack of its
        clips' outputs. No host sync.
    """
    if x.dim() not in (4, 5) or x.shape[-3] != 3 or x.dtype != torch.uint8:
        raise invalid_value(
            "x",
            None,
            "[F, 3, h, w] or [B, F, 3, h, w] uint8 RGB tensors",
            shown=f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}",
        )
    x = _values(x, desc)
    if desc.layout != "fchw":
        lead = x.dim() - 4
        x = x.permute(*range(lead), *(lead + "fchw".index(d) for d in desc.layout))
    return _owned(x)


def process_clip(
    frames: torch.Tensor,
    desc: ProcessDesc,
    params: AugmentParams | None,
    *,
    positions: Sequence[int] | None = None,
) -> torch.Tensor:
    """Make ``desc``'s output tensor for one clip; on ``frames``' device, no host sync.

    Args:
        frames: ``[F, 3, H, W]`` uint8 RGB (any strides, e.g. a permuted HWC decode buffer).
        desc: what to make.
        params: from :func:`draw_augment` for this clip and frame size (one draw per clip); None
            is allowed when ``desc`` has nothing random (the centre crop is used).
        positions: the clip position of each row of ``frames`` when only the
            :func:`needed_frames` were decoded (default ``0..F-1``). Used by ``index_map`` only;
            without it every given frame is output, in order.

    Returns:
        A contiguous tensor of ``desc.output_shape(...)`` in ``desc.layout`` order, of
        ``desc.dtype``, on ``frames.device``, holding no more memory than its own elements. It
        may be ``frames`` itself when there is nothing to do (uint8, RGB, no resize/crop/flip,
        layout ``fchw``, contiguous input that owns its storage).

    Raises:
        ValueError: wrong frames shape or dtype, a crop larger than the frame, params drawn for
            another frame size, or ``positions`` missing a frame that ``index_map`` needs.
    """
    x = _values(_shape(frames, desc, params, positions), desc)
    if desc.layout != "fchw":
        x = x.permute(*("fchw".index(d) for d in desc.layout))
    return _owned(x)

"""Pydantic models of the user's options: :class:`ProcessDesc` and :class:`PrefetchConfig`.

Every bad value fails here, at construction, with a :class:`pydantic.ValidationError` (a
``ValueError``) whose message names the field, echoes the value and lists what is allowed, e.g.
``sampling: invalid value 'foo'; allowed: sequential, uniform, chunked, gop_shuffle``. Rules that
need the video (a crop larger than a file's frames) are checked later, at run time, by
:mod:`tvl_async._processing`. The models are plain data: any thread may build and read them.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

__all__ = ["DEFAULT_MEMORY_BUDGET", "DTYPE_NAMES", "PrefetchConfig", "ProcessDesc"]

#: Bytes of finished samples the planner may hold by default (``memory_budget``): 2 GiB, ~14000
#: 224x224 RGB uint8 samples. At 1 GiB the default uniform order measured 4.4x the DataLoader
#: baseline on the reference workload, at 16384 samples 8.8x (docs/benchmarks.md).
DEFAULT_MEMORY_BUDGET = 2 << 30

#: Output dtypes a :class:`ProcessDesc` accepts, by name (aliases included).
DTYPE_NAMES: dict[str, torch.dtype] = {
    "uint8": torch.uint8,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "half": torch.float16,
    "float": torch.float32,
}
_CANONICAL_DTYPES: dict[torch.dtype, str] = {
    torch.uint8: "uint8",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
}
_DTYPES_ALLOWED = "uint8, float16, bfloat16, float32 (aliases: half, float)"
_COLOR_SPACES: dict[str, str] = {"rgb": "RGB", "ycbcr": "YCbCr", "gray": "gray"}
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def _invalid(field: str, value: Any, allowed: str) -> ValueError:
    """Build the house error: field, the bad value (repr) and what is allowed."""
    return ValueError(f"{field}: invalid value {value!r}; allowed: {allowed}")


def _choice(field: str, value: Any, choices: tuple[str, ...], *, fold: bool = False) -> Any:
    """Check ``value`` against ``choices`` (case-insensitively when ``fold``); return it."""
    if isinstance(value, str):
        if value in choices:
            return value
        if fold:
            for choice in choices:
                if value.lower() == choice.lower():
                    return choice
    raise _invalid(field, value, ", ".join(choices))


def _check_keys(model: type[BaseModel], data: Any) -> None:
    """Reject unknown option names with the list of known ones and a close match, if any."""
    if not isinstance(data, dict):
        return
    known = list(model.model_fields)
    for key in data:
        if key not in model.model_fields:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{model.__name__}: unknown option {key!r}{hint}; allowed: {', '.join(known)}"
            )


def _reject_bool(field: str, value: Any, allowed: str) -> Any:
    """Refuse ``True``/``False`` where an integer is meant (pydantic would take them as 1/0)."""
    if isinstance(value, bool):
        raise _invalid(field, value, allowed)
    return value


class ProcessDesc(BaseModel):
    """How one output tensor is made from the decoded frames of a clip (NVVL's ``ProcessDesc``).

    Steps, in order: ``index_map`` frame selection, resize (``scale_width``/``scale_height``) then
    crop (``width``/``height``; centre unless ``random_crop``), or ``random_resized_crop``;
    horizontal flip (``random_flip``); colour space; dtype (``normalized`` for [0, 1]); ``mean``
    and ``std``; ``layout``. Sizes are in pixels. Immutable and hashable.

    ``index_map`` follows NVVL: input frame ``i`` of the clip goes to output position
    ``index_map[i]``; ``-1`` drops it; the output has ``max(index_map) + 1`` frames. Entries past
    the end of a shorter map count as ``-1``. Example: with ``seq_len=5``,
    ``index_map=[-1, -1, 0, -1, -1]`` keeps only the middle frame, ``[4, 3, 2, 1, 0]`` reverses
    the clip. Every output position must be filled exactly once.

    Attributes:
        dtype: output dtype: ``torch.uint8`` (0–255), ``float16``, ``bfloat16``, ``float32``; also
            given by name (``"uint8"``, ``"float16"``, ``"bfloat16"``, ``"float32"``, ``"half"``,
            ``"float"``).
        scale_width, scale_height: resize target in pixels; with only one, the other keeps the
            aspect ratio (rounded, at least 1).
        width, height: crop size in pixels after the resize; a missing one is the full size.
        random_crop: crop at a random place instead of the centre (needs ``width`` or
            ``height``).
        random_flip: mirror horizontally with probability 1/2 (one draw per clip).
        random_resized_crop: ``(min, max)`` fraction of the frame area for torchvision-style
            RandomResizedCrop; the region is resized to ``width`` x ``height``.
        random_resized_ratio: ``(min, max)`` aspect ratio (width/height) of that region, drawn
            log-uniformly.
        normalized: float dtypes only: values in [0, 1] instead of [0, 255].
        mean, std: per-channel (length 1 or the channel count), in the units of the values
            (after ``normalized``): ``(x - mean) / std``; float dtypes only.
        color_space: ``"RGB"``, ``"YCbCr"`` (BT.601 full range, as JPEG) or ``"gray"`` (Y, one
            channel); input is case-insensitive.
        index_map: see above; stored as a tuple.
        layout: order of the output dimensions, any permutation of ``f``, ``c``, ``h``, ``w``.
        interpolation: resize filter: ``bilinear``, ``bicubic``, ``nearest``, ``area``.
        antialias: low-pass before downscaling (``bilinear``/``bicubic``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    dtype: torch.dtype = torch.uint8
    scale_width: int | None = None
    scale_height: int | None = None
    width: int | None = None
    height: int | None = None
    random_crop: bool = False
    random_flip: bool = False
    random_resized_crop: tuple[float, float] | None = None
    random_resized_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    normalized: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color_space: Literal["RGB", "YCbCr", "gray"] = "RGB"
    index_map: tuple[int, ...] | None = None
    layout: str = "fchw"
    interpolation: Literal["bilinear", "bicubic", "nearest", "area"] = "bilinear"
    antialias: bool = True

    if TYPE_CHECKING:
        # The signature type checkers see (names accepted as well as values); at run time
        # pydantic's own __init__ validates, so unknown names get the message with hints.
        def __init__(
            self,
            *,
            dtype: torch.dtype | str = torch.uint8,
            scale_width: int | None = None,
            scale_height: int | None = None,
            width: int | None = None,
            height: int | None = None,
            random_crop: bool = False,
            random_flip: bool = False,
            random_resized_crop: Sequence[float] | None = None,
            random_resized_ratio: Sequence[float] = (3 / 4, 4 / 3),
            normalized: bool = False,
            mean: float | Sequence[float] | None = None,
            std: float | Sequence[float] | None = None,
            color_space: str = "RGB",
            index_map: Sequence[int] | None = None,
            layout: str = "fchw",
            interpolation: str = "bilinear",
            antialias: bool = True,
        ) -> None:
            """Validate and build; raises :class:`pydantic.ValidationError` (a ``ValueError``)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        _check_keys(cls, data)
        return data

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> torch.dtype:
        if isinstance(value, torch.dtype):
            if value in _CANONICAL_DTYPES:
                return value
        elif isinstance(value, str):
            name = value.strip().lower().removeprefix("torch.")
            if name in DTYPE_NAMES:
                return DTYPE_NAMES[name]
        raise _invalid("dtype", value, _DTYPES_ALLOWED)

    @field_serializer("dtype", when_used="json")
    def _dtype_name(self, value: torch.dtype) -> str:
        return _CANONICAL_DTYPES[value]

    @field_validator("scale_width", "scale_height", "width", "height", mode="before")
    @classmethod
    def _size_type(cls, value: Any, info: ValidationInfo) -> Any:
        return _reject_bool(str(info.field_name), value, "an integer >= 1 (pixels) or None")

    @field_validator("scale_width", "scale_height", "width", "height")
    @classmethod
    def _size(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 1:
            raise _invalid(str(info.field_name), value, "an integer >= 1 (pixels) or None")
        return value

    @field_validator("random_resized_crop")
    @classmethod
    def _rrc(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 < value[0] <= value[1] <= 1.0:
            raise _invalid("random_resized_crop", value, "(min, max) with 0 < min <= max <= 1")
        return value

    @field_validator("random_resized_ratio")
    @classmethod
    def _rrc_ratio(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
            raise _invalid("random_resized_ratio", value, "(min, max) with 0 < min <= max")
        return value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _scalar_to_tuple(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (value,)
        return value

    @field_validator("mean", "std")
    @classmethod
    def _mean_std(cls, value: tuple[float, ...] | None, info: ValidationInfo) -> Any:
        if value is None:
            return None
        field = str(info.field_name)
        if len(value) == 0 or not all(math.isfinite(v) for v in value):
            raise _invalid(field, value, "1 or one-per-channel finite numbers, or None")
        if field == "std" and any(v <= 0 for v in value):
            raise _invalid(field, value, "numbers > 0")
        return value

    @field_validator("color_space", mode="before")
    @classmethod
    def _color_space(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in _COLOR_SPACES:
            return _COLOR_SPACES[value.lower()]
        raise _invalid("color_space", value, "RGB, YCbCr, gray (any case)")

    @field_validator("interpolation", mode="before")
    @classmethod
    def _interpolation(cls, value: Any) -> Any:
        return _choice("interpolation", value, _INTERPOLATIONS, fold=True)

    @field_validator("index_map")
    @classmethod
    def _index_map(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        allowed = "a list of ints >= -1 whose non-negative entries are 0..N-1, each once"
        if not value or any(v < -1 for v in value) or max(value) < 0:
            raise _invalid("index_map", list(value), allowed)
        used = sorted(v for v in value if v >= 0)
        if used != list(range(len(used))):
            raise _invalid("index_map", list(value), allowed)
        return value

    @field_validator("layout", mode="before")
    @classmethod
    def _layout(cls, value: Any) -> Any:
        if isinstance(value, str) and sorted(value.lower()) == ["c", "f", "h", "w"]:
            return value.lower()
        raise _invalid("layout", value, "any order of the letters f, c, h, w (e.g. 'fchw')")

    @model_validator(mode="after")
    def _cross_fields(self) -> ProcessDesc:
        floating = self.dtype != torch.uint8
        if self.normalized and not floating:
            raise ValueError(
                "normalized: invalid value True with dtype uint8; allowed: normalized=True only "
                "with a float dtype (float16, bfloat16, float32)"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            if not floating:
                raise ValueError(
                    f"{name}: invalid value {value!r} with dtype uint8; allowed: {name} only "
                    "with a float dtype (float16, bfloat16, float32)"
                )
            if len(value) not in (1, self.channels):
                counts = "1 value" if self.channels == 1 else f"1 or {self.channels} values"
                raise ValueError(
                    f"{name}: invalid value {value!r} ({len(value)} values); allowed: "
                    f"{counts} for color_space {self.color_space!r}"
                )
        if self.random_resized_crop is not None:
            if self.width is None or self.height is None:
                raise ValueError(
                    f"random_resized_crop: invalid value {self.random_resized_crop!r} with "
                    f"width={self.width!r}, height={self.height!r}; allowed: only with both "
                    "width and height (the output size)"
                )
            if self.scale_width is not None or self.scale_height is not None:
                raise ValueError(
                    f"random_resized_crop: invalid value {self.random_resized_crop!r} with "
                    f"scale_width={self.scale_width!r}, scale_height={self.scale_height!r}; "
                    "allowed: without scale_width/scale_height (the region is resized to "
                    "width x height)"
                )
            if self.random_crop:
                raise ValueError(
                    f"random_crop: invalid value True with random_resized_crop="
                    f"{self.random_resized_crop!r}; allowed: one of the two"
                )
        elif self.random_crop and self.width is None and self.height is None:
            raise ValueError(
                "random_crop: invalid value True without width or height; allowed: "
                "random_crop=True with a crop size (width and/or height)"
            )
        else:
            for crop, scale in (("width", "scale_width"), ("height", "scale_height")):
                c, s = getattr(self, crop), getattr(self, scale)
                if c is not None and s is not None and c > s:
                    raise ValueError(
                        f"{crop}: invalid value {c} with {scale}={s}; allowed: a crop no "
                        f"larger than the scaled frame ({crop} <= {scale})"
                    )
        return self

    @property
    def channels(self) -> int:
        """Channels of the output: 1 for ``gray``, else 3."""
        return 1 if self.color_space == "gray" else 3

    @property
    def is_random(self) -> bool:
        """True when the output depends on random draws (crop place, resized crop or flip)."""
        return self.random_crop or self.random_flip or self.random_resized_crop is not None

    def output_frames(self, seq_len: int) -> int:
        """Frames in the output for clips of ``seq_len`` frames (``max(index_map) + 1``).

        Raises:
            ValueError: ``seq_len`` < 1, or ``index_map`` longer than ``seq_len``.
        """
        if seq_len < 1:
            raise ValueError(f"seq_len: invalid value {seq_len!r}; allowed: an integer >= 1")
        if self.index_map is None:
            return seq_len
        if len(self.index_map) > seq_len:
            raise ValueError(
                f"index_map: invalid value {list(self.index_map)!r} ({len(self.index_map)} "
                f"entries) for seq_len={seq_len}; allowed: at most seq_len entries"
            )
        return max(self.index_map) + 1

    def scaled_size(self, in_height: int, in_width: int) -> tuple[int, int]:
        """``(height, width)`` in pixels after the resize step, for ``in_height x in_width`` frames.

        With one of ``scale_width``/``scale_height`` the other keeps the aspect ratio (rounded
        half up, at least 1). Idempotent: frames already at this size are not resized again.
        ``random_resized_crop`` has no resize step before its crop (returns the input size).
        """
        if in_height < 1 or in_width < 1:
            raise ValueError(f"frame size: invalid value {in_height}x{in_width} (height x width)")
        sw, sh = self.scale_width, self.scale_height
        if sw is not None and sh is not None:
            return sh, sw
        if sw is not None:
            return max(1, math.floor(in_height * sw / in_width + 0.5)), sw
        if sh is not None:
            return sh, max(1, math.floor(in_width * sh / in_height + 0.5))
        return in_height, in_width

    def output_size(self, in_height: int, in_width: int) -> tuple[int, int]:
        """``(height, width)`` in pixels of the output frames for ``in_height x in_width`` input.

        Raises:
            ValueError: the crop is larger than the (scaled) frame; the message gives the sizes.
        """
        if self.random_resized_crop is not None:
            assert self.width is not None and self.height is not None
            self.scaled_size(in_height, in_width)  # validates the input size
            return self.height, self.width
        sh, sw = self.scaled_size(in_height, in_width)
        ch = sh if self.height is None else self.height
        cw = sw if self.width is None else self.width
        if ch > sh or cw > sw:
            raise ValueError(
                f"crop {ch}x{cw} (height x width) is larger than the scaled frame {sh}x{sw} "
                f"(input {in_height}x{in_width}); allowed: a crop no larger than the frame"
            )
        return ch, cw

    def output_shape(self, seq_len: int, in_height: int, in_width: int) -> tuple[int, ...]:
        """Shape of one clip's output tensor, in ``layout`` order (no batch dimension)."""
        h, w = self.output_size(in_height, in_width)
        dims = {"f": self.output_frames(seq_len), "c": self.channels, "h": h, "w": w}
        return tuple(dims[d] for d in self.layout)


Sampling = Literal["sequential", "uniform", "chunked", "gop_shuffle"]
_SAMPLINGS: tuple[str, ...] = ("sequential", "uniform", "chunked", "gop_shuffle")
_BACKENDS: tuple[str, ...] = ("auto", "pyav", "nvdec")
_ON_ERROR: tuple[str, ...] = ("raise", "skip")
_MIN_ONE_NOTES: dict[str, str] = {
    "epochs": " or None (forever)",
    "lookahead": " or None (from memory_budget)",
    "decode_threads": " or None (auto)",
    "ffmpeg_threads": " or None (auto)",
    "memory_budget": " (bytes)",
    "shuffle_buffer": " (samples)",
}


class PrefetchConfig(BaseModel):
    """Every option of :class:`tvl_async.Prefetcher`, validated (see DESIGN.md).

    Immutable (safe to share between the consumer and the service thread); :meth:`replace`
    makes a validated copy. Units: ``memory_budget`` in bytes, ``timeout`` in seconds.

    Attributes:
        seq_len: frames per clip. batch_size: clips per batch.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (also a ``torch.device``); stored lower
            case (``"CUDA:01"`` -> ``"cuda:1"``); plain ``"cuda"`` is kept as is.
        backend: ``auto``, ``pyav`` (CPU) or ``nvdec`` (GPU).
        shuffle, sampling, replacement, chunk_size (clips per chunk for ``chunked``),
        shuffle_buffer (samples, for ``gop_shuffle``), seed, epochs (None = forever),
        stride, step: the sampling options (``tvl_async._sampling``).
        lookahead: samples planned ahead; None = chosen from ``memory_budget``.
        memory_budget: bytes the held outputs may use.
        processing: output name -> :class:`ProcessDesc`; a single ``ProcessDesc`` becomes
            ``{"default": it}``; None gives ``{"default": ProcessDesc()}`` (see :attr:`outputs`).
        queue_depth: ready batches held in the queue. decode_threads: CPU decode threads
            (None = auto). ffmpeg_threads: FFmpeg threads per decode thread (None = auto).
            drop_last: drop a short last batch.
        rank, world_size: shard of a distributed job (both or neither).
        on_error: ``raise`` or ``skip`` a sample whose file fails. timeout: seconds the consumer
            waits for a batch before ``TimeoutError`` (None = forever).
        max_file_failures: failures after which a file is given up (with ``on_error="skip"``).
        frame_rate: None (clips count frames) or grid points per second: clips over each
            file's time grid (``VideoDataset``). stream_index: the video stream (None: ffmpeg's
            best). autorotate: apply the display matrix (True) or give frames as stored.
        progress: a progress bar while indexing. index_timeout: seconds one file may take to
            index (None: no limit).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq_len: int = 1
    batch_size: int = 1
    device: str = "cpu"
    backend: Literal["auto", "pyav", "nvdec"] = "auto"
    shuffle: bool = True
    sampling: Sampling = "uniform"
    replacement: bool = False
    chunk_size: int = 8
    shuffle_buffer: int = 1024
    seed: int = 0
    epochs: int | None = 1
    stride: int = 1
    step: int = 1
    lookahead: int | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    processing: dict[str, ProcessDesc] | None = None
    queue_depth: int = 4
    decode_threads: int | None = None
    ffmpeg_threads: int | None = None
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None
    on_error: Literal["raise", "skip"] = "raise"
    timeout: float | None = None
    max_file_failures: int = 3
    frame_rate: float | None = None
    stream_index: int | None = None
    autorotate: bool = True
    progress: bool = False
    index_timeout: float | None = 300.0

    if TYPE_CHECKING:
        # The signature type checkers see (names accepted as well as values); at run time
        # pydantic's own __init__ validates, so unknown names get the message with hints.
        def __init__(
            self,
            *,
            seq_len: int = 1,
            batch_size: int = 1,
            device: str | torch.device = "cpu",
            backend: str = "auto",
            shuffle: bool = True,
            sampling: str = "uniform",
            replacement: bool = False,
            chunk_size: int = 8,
            shuffle_buffer: int = 1024,
            seed: int = 0,
            epochs: int | None = 1,
            stride: int = 1,
            step: int = 1,
            lookahead: int | None = None,
            memory_budget: int = DEFAULT_MEMORY_BUDGET,
            processing: ProcessDesc | Mapping[str, ProcessDesc | Mapping[str, Any]] | None = None,
            queue_depth: int = 4,
            decode_threads: int | None = None,
            ffmpeg_threads: int | None = None,
            drop_last: bool = False,
            rank: int | None = None,
            world_size: int | None = None,
            on_error: str = "raise",
            timeout: float | None = None,
            max_file_failures: int = 3,
            frame_rate: float | None = None,
            stream_index: int | None = None,
            autorotate: bool = True,
            progress: bool = False,
            index_timeout: float | None = 300.0,
        ) -> None:
            """Validate and build; raises :class:`pydantic.ValidationError` (a ``ValueError``)."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        _check_keys(cls, data)
        return data

    @field_validator(
        "seq_len", "batch_size", "chunk_size", "shuffle_buffer", "epochs", "stride", "step",
        "lookahead", "memory_budget", "queue_depth", "decode_threads", "ffmpeg_threads",
        "max_file_failures", "stream_index",
        "world_size", "rank", "seed", mode="before",
    )
    @classmethod
    def _int_type(cls, value: Any, info: ValidationInfo) -> Any:
        return _reject_bool(str(info.field_name), value, "an integer")

    @field_validator(
        "seq_len", "batch_size", "chunk_size", "shuffle_buffer", "epochs", "stride", "step",
        "lookahead", "memory_budget", "queue_depth", "decode_threads", "ffmpeg_threads",
        "max_file_failures",
        "world_size",
    )
    @classmethod
    def _at_least_one(cls, value: int | None, info: ValidationInfo) -> int | None:
        field = str(info.field_name)
        if value is not None and value < 1:
            raise _invalid(field, value, "an integer >= 1" + _MIN_ONE_NOTES.get(field, ""))
        return value

    @field_validator("rank")
    @classmethod
    def _rank(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise _invalid("rank", value, "an integer >= 0 (below world_size) or None")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if value < 0:
            raise _invalid("seed", value, "an integer >= 0")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str | torch.device) else None
        match = _DEVICE_RE.match(text) if text is not None else None
        if match is None:
            raise _invalid("device", value, "'cpu', 'cuda', 'cuda:N' (N >= 0)")
        kind, index = match.groups()
        if index is None:
            return kind
        if kind == "cpu":
            raise _invalid("device", value, "'cpu', 'cuda', 'cuda:N' (N >= 0)")
        return f"cuda:{int(index)}"

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        return _choice("backend", value, _BACKENDS, fold=True)

    @field_validator("sampling", mode="before")
    @classmethod
    def _sampling(cls, value: Any) -> Any:
        return _choice("sampling", value, _SAMPLINGS, fold=True)

    @field_validator("on_error", mode="before")
    @classmethod
    def _on_error(cls, value: Any) -> Any:
        return _choice("on_error", value, _ON_ERROR, fold=True)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise _invalid("timeout", value, "a finite number of seconds > 0, or None (forever)")
        return value

    @field_validator("index_timeout")
    @classmethod
    def _index_timeout(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise _invalid("index_timeout", value,
                           "a finite number of seconds > 0, or None (no limit)")
        return value

    @field_validator("frame_rate", mode="before")
    @classmethod
    def _frame_rate(cls, value: Any) -> Any:
        value = _reject_bool("frame_rate", value, "a number > 0 (per second) or None")
        if value is not None and isinstance(value, (int, float)) and not (
                math.isfinite(value) and value > 0):
            raise _invalid("frame_rate", value, "a finite number > 0 (per second) or None")
        return value

    @field_validator("stream_index")
    @classmethod
    def _stream_index(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise _invalid("stream_index", value, "an integer >= 0 (a stream of the file) or "
                                                  "None (ffmpeg's best video stream)")
        return value

    @field_validator("processing", mode="before")
    @classmethod
    def _processing(cls, value: Any) -> Any:
        if isinstance(value, ProcessDesc):
            return {"default": value}
        if value is None:
            return None
        if isinstance(value, Mapping):
            value = dict(value)
        if not isinstance(value, dict) or not value:
            raise _invalid(
                "processing", value,
                "a ProcessDesc, a non-empty dict of name -> ProcessDesc, or None",
            )
        for name in value:
            if not isinstance(name, str) or not name.isidentifier():
                raise _invalid(
                    "processing", name, "output names that are Python identifiers (e.g. 'rgb')"
                )
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> PrefetchConfig:
        if (self.rank is None) != (self.world_size is None):
            raise ValueError(
                f"rank/world_size: invalid values rank={self.rank!r}, "
                f"world_size={self.world_size!r}; allowed: both set or both None"
            )
        if self.rank is not None and self.world_size is not None and self.rank >= self.world_size:
            raise ValueError(
                f"rank: invalid value {self.rank} with world_size={self.world_size}; "
                f"allowed: 0 <= rank < world_size"
            )
        if self.processing is not None:
            for name, desc in self.processing.items():
                try:
                    desc.output_frames(self.seq_len)
                except ValueError as exc:
                    raise ValueError(f"processing[{name!r}].{exc}") from None
        return self

    @property
    def outputs(self) -> dict[str, ProcessDesc]:
        """The outputs to make: ``processing``, or ``{"default": ProcessDesc()}`` when None."""
        return dict(self.processing) if self.processing is not None else {
            "default": ProcessDesc()
        }

    def replace(self, **changes: Any) -> PrefetchConfig:
        """Return a validated copy with ``changes`` applied (same messages as the constructor)."""
        values: dict[str, Any] = {name: getattr(self, name) for name in type(self).model_fields}
        values.update(changes)
        return type(self).model_validate(values)

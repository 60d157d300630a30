"""The pydantic model :class:`ProcessDesc`: how one output tensor is made from decoded frames.

Every bad value fails at construction with a :class:`pydantic.ValidationError` (a
``ValueError``) in the house form (:mod:`tvl_async._checks`), e.g.
``Invalid layout ('fchx'). Supported values are any order of the letters f, c, h, w``. Rules that
need the video (a crop larger than a file's frames) are checked later, at run time, by
:mod:`tvl_async._processing`. Plain immutable data: any thread may build and read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from tvl_async._checks import check_choice, check_option_names, invalid_value, reject_bool

__all__ = ["DTYPE_NAMES", "ColorSpace", "Interpolation", "ProcessDesc"]

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
ColorSpace = Literal["RGB", "YCbCr", "gray"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "area"]
_COLOR_SPACES: tuple[str, ...] = get_args(ColorSpace)
_INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
_FLOAT_ONLY = "with a float dtype (float16, bfloat16, float32) only"


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
    color_space: ColorSpace = "RGB"
    index_map: tuple[int, ...] | None = None
    layout: str = "fchw"
    interpolation: Interpolation = "bilinear"
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
        if isinstance(data, dict):
            check_option_names(cls.__name__, data, cls.model_fields)
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
        raise invalid_value("dtype", value, _DTYPES_ALLOWED)

    @field_serializer("dtype", when_used="json")
    def _dtype_name(self, value: torch.dtype) -> str:
        return _CANONICAL_DTYPES[value]

    @field_validator("scale_width", "scale_height", "width", "height", mode="before")
    @classmethod
    def _size_type(cls, value: Any, info: ValidationInfo) -> Any:
        return reject_bool(str(info.field_name), value, "integers >= 1 (pixels) or None")

    @field_validator("scale_width", "scale_height", "width", "height")
    @classmethod
    def _size(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 1:
            raise invalid_value(str(info.field_name), value, "integers >= 1 (pixels) or None")
        return value

    @field_validator("random_resized_crop")
    @classmethod
    def _rrc(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 < value[0] <= value[1] <= 1.0:
            raise invalid_value("random_resized_crop", value, "(min, max) with 0 < min <= max <= 1")
        return value

    @field_validator("random_resized_ratio")
    @classmethod
    def _rrc_ratio(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
            raise invalid_value("random_resized_ratio", value, "(min, max) with 0 < min <= max")
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
            raise invalid_value(field, value, "1 or one-per-channel finite numbers, or None")
        if field == "std" and any(v <= 0 for v in value):
            raise invalid_value(field, value, "numbers > 0")
        return value

    @field_validator("color_space", mode="before")
    @classmethod
    def _color_space(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_choice("color_space", value, _COLOR_SPACES, fold=True)
        raise invalid_value("color_space", value, ", ".join(_COLOR_SPACES) + " (any case)")

    @field_validator("interpolation", mode="before")
    @classmethod
    def _interpolation(cls, value: Any) -> Any:
        return check_choice("interpolation", value, _INTERPOLATIONS, fold=True)

    @field_validator("index_map")
    @classmethod
    def _index_map(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        allowed = "lists of ints >= -1 whose non-negative entries are 0..N-1, each once"
        if not value or any(v < -1 for v in value) or max(value) < 0:
            raise invalid_value("index_map", list(value), allowed)
        used = sorted(v for v in value if v >= 0)
        if used != list(range(len(used))):
            raise invalid_value("index_map", list(value), allowed)
        return value

    @field_validator("layout", mode="before")
    @classmethod
    def _layout(cls, value: Any) -> Any:
        if isinstance(value, str) and sorted(value.lower()) == ["c", "f", "h", "w"]:
            return value.lower()
        raise invalid_value("layout", value, "any order of the letters f, c, h, w (e.g. 'fchw')")

    @model_validator(mode="after")
    def _cross_fields(self) -> ProcessDesc:
        floating = self.dtype != torch.uint8
        if self.normalized and not floating:
            raise invalid_value(
                "normalized", True, f"normalized=True {_FLOAT_ONLY}", context="with dtype uint8"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is None:
                continue
            if not floating:
                raise invalid_value(
                    name, value, f"{name} {_FLOAT_ONLY}", context="with dtype uint8"
                )
            if len(value) not in (1, self.channels):
                counts = "1 value" if self.channels == 1 else f"1 or {self.channels} values"
                raise invalid_value(
                    name,
                    value,
                    counts,
                    context=f"({len(value)} values) for color_space {self.color_space!r}",
                )
        self._check_crops()
        return self

    def _check_crops(self) -> None:
        rrc = self.random_resized_crop
        if rrc is not None:
            if self.width is None or self.height is None:
                raise invalid_value(
                    "random_resized_crop",
                    rrc,
                    "only with both width and height (the output size)",
                    context=f"with width={self.width!r}, height={self.height!r}",
                )
            if self.scale_width is not None or self.scale_height is not None:
                raise invalid_value(
                    "random_resized_crop",
                    rrc,
                    "without scale_width/scale_height (the region is resized to width x height)",
                    context=f"with scale_width={self.scale_width!r}, "
                    f"scale_height={self.scale_height!r}",
                )
            if self.random_crop:
                raise invalid_value(
                    "random_crop",
                    True,
                    "one of the two",
                    context=f"with random_resized_crop={rrc!r}",
                )
        elif self.random_crop and self.width is None and self.height is None:
            raise invalid_value(
                "random_crop",
                True,
                "random_crop=True with a crop size (width and/or height)",
                context="without width or height",
            )
        else:
            for crop, scale in (("width", "scale_width"), ("height", "scale_height")):
                c, s = getattr(self, crop), getattr(self, scale)
                if c is not None and s is not None and c > s:
                    raise invalid_value(
                        crop,
                        c,
                        f"crops no larger than the scaled frame ({crop} <= {scale})",
                        context=f"with {scale}={s}",
                    )

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
            raise invalid_value("seq_len", seq_len, "integers >= 1")
        if self.index_map is None:
            return seq_len
        if len(self.index_map) > seq_len:
            raise invalid_value(
                "index_map",
                list(self.index_map),
                "at most seq_len entries",
                context=f"({len(self.index_map)} entries) for seq_len={seq_len}",
            )
        return max(self.index_map) + 1

    def scaled_size(self, in_height: int, in_width: int) -> tuple[int, int]:
        """``(height, width)`` in pixels after the resize step, for ``in_height x in_width`` frames.

        With one of ``scale_width``/``scale_height`` the other keeps the aspect ratio (rounded
        half up, at least 1). Idempotent: frames already at this size are not resized again.
        ``random_resized_crop`` has no resize step before its crop (returns the input size).
        """
        if in_height < 1 or in_width < 1:
            raise invalid_value(
                "frame size", None, "sizes >= 1x1", shown=f"{in_height}x{in_width}, height x width"
            )
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
            raise invalid_value(
                "crop",
                None,
                "crops no larger than the frame",
                shown=f"{ch}x{cw}, height x width",
                context=f"for the scaled frame {sh}x{sw} (input {in_height}x{in_width})",
            )
        return ch, cw

    def output_shape(self, seq_len: int, in_height: int, in_width: int) -> tuple[int, ...]:
        """Shape of one clip's output tensor, in ``layout`` order (no batch dimension)."""
        h, w = self.output_size(in_height, in_width)
        dims = {"f": self.output_frames(seq_len), "c": self.channels, "h": h, "w": w}
        return tuple(dims[d] for d in self.layout)

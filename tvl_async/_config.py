"""The single definition of every :class:`tvl_async.Prefetcher` option: :class:`PrefetchConfig`.

Each field holds an option's name, type, default, check and one-line doc (``description``);
``Prefetcher(files, seq_len, **options)`` forwards here, the README's option table is generated
from the fields (``tools/options_table.py``), choice tuples come from the ``Literal`` types. A bad
value fails at construction in the house form (``Invalid sampling ('foo'). Supported values are
...``). Plain immutable data: any thread may build and read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tvl_async._checks import (
    check_choice,
    check_option_names,
    invalid_type,
    invalid_value,
    reject_bool,
)
from tvl_async._process_desc import DTYPE_NAMES, ProcessDesc

__all__ = [
    "BACKENDS",
    "DTYPE_NAMES",
    "ON_ERROR",
    "SAMPLINGS",
    "BackendName",
    "OnError",
    "PrefetchConfig",
    "ProcessDesc",
    "Sampling",
]


BackendName = Literal["auto", "pyav", "nvdec"]
Sampling = Literal["sequential", "uniform", "chunked", "gop_shuffle"]
OnError = Literal["raise", "skip"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
SAMPLINGS: tuple[str, ...] = get_args(Sampling)
ON_ERROR: tuple[str, ...] = get_args(OnError)

_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
_DEVICES_ALLOWED = "'cpu', 'cuda', 'cuda:N' (N >= 0)"
_INT_FIELDS = (
    "seq_len",
    "batch_size",
    "chunk_size",
    "shuffle_buffer",
    "epochs",
    "stride",
    "step",
    "lookahead",
    "memory_budget",
    "queue_depth",
    "decode_threads",
    "ffmpeg_threads",
    "max_file_failures",
    "world_size",
    "stream_index",
    "rank",
    "seed",
)
_AT_LEAST_ONE = _INT_FIELDS[:-3]
_MIN_ONE_NOTES: dict[str, str] = {
    "epochs": " or None (forever)",
    "lookahead": " or None (from memory_budget)",
    "decode_threads": " or None (auto)",
    "ffmpeg_threads": " or None (auto)",
    "memory_budget": " (bytes) or None (a share of the memory available)",
    "shuffle_buffer": " (samples)",
}

_CHOICES = {"backend": BACKENDS, "sampling": SAMPLINGS, "on_error": ON_ERROR}
_SECONDS_NOTES = {"timeout": "None (forever)", "index_timeout": "None (no limit)"}


def _shown(text: str) -> dict[str, Any]:
    """``json_schema_extra`` of a field whose default the README shows in words, not as the
    value (read by ``tools/options_table.py``)."""
    return {"shown_default": text}


class PrefetchConfig(BaseModel):
    """Every option of :class:`tvl_async.Prefetcher`, validated; one field per option.

    Each field's one-line doc is its ``description`` (the README's table is made from them by
    ``tools/options_table.py``). Immutable, so the consumer and the service thread may share
    it; :meth:`replace` makes a validated copy. Units: ``memory_budget`` in bytes, ``timeout`` in
    seconds. ``device`` is stored lower case (``"CUDA:01"`` -> ``"cuda:1"``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq_len: int = Field(
        1,
        description="frames per clip (`stride` apart; every start `step` "
        "apart); a `VideoDataset` brings its own",
    )
    batch_size: int = Field(1, description="clips per batch")
    device: str = Field(
        "cpu",
        description="where batches are delivered: `cpu`, `cuda`, `cuda:N` (also a `torch.device`)",
    )
    backend: BackendName = Field(
        "auto",
        description="`pyav` (CPU), `nvdec` (GPU, `pip install "
        "tvl-async[nvdec]`), `auto` (nvdec on CUDA when available)",
    )
    shuffle: bool = Field(True, description="False gives file order")
    sampling: Sampling = Field(
        "uniform",
        description="`sequential`, `uniform` (fresh permutation per epoch), "
        "`chunked` (`chunk_size` consecutive clips per draw), `gop_shuffle` (GOPs in random order "
        "through a `shuffle_buffer`); bias of each: [docs/sampling.md](docs/sampling.md)",
    )
    replacement: bool = Field(False, description="`uniform` only: draw with replacement")
    chunk_size: int = Field(8, description='clips per chunk for `sampling="chunked"`')
    shuffle_buffer: int = Field(
        1024, description='samples in the shuffle buffer for `sampling="gop_shuffle"`'
    )
    seed: int = Field(
        0,
        description="every random draw (order, crops, flips) derives from "
        "`(seed, epoch, position)`",
    )
    epochs: int | None = Field(1, description="epochs to run; None runs forever")
    stride: int = Field(1, description="frames between the frames of a clip")
    step: int = Field(1, description="frames between the starts of consecutive clips")
    get_label: Callable[[str], Any] | None = Field(
        None, description="callable: file path -> label, in `batch.labels` (as for `VideoDataset`)"
    )
    lookahead: int | None = Field(
        None,
        json_schema_extra=_shown("from `memory_budget`"),
        description="samples planned ahead; memory bound = lookahead × bytes per held sample "
        "(float outputs wait as uint8; `stats().memory_bound_bytes`)",
    )
    memory_budget: int | None = Field(
        None,
        json_schema_extra=_shown("¼ of available memory, 1–16 GiB"),
        description="bytes of finished samples the planner may hold when `lookahead` is None "
        "(at most one epoch); None: a quarter of the memory available at the start, divided "
        "among this node's ranks (`LOCAL_WORLD_SIZE`), within 1–16 GiB (`stats().memory_budget`)",
    )
    processing: dict[str, ProcessDesc] | None = Field(
        None,
        description='a `ProcessDesc` or a dict of named ones; None gives `"default"`: '
        "uint8 `[B, F, 3, H, W]`",
    )
    transform: Callable[..., Any] | None = Field(
        None,
        description="callable applied to each `Batch` in the service thread (e.g. Kornia "
        "augmentations)",
    )
    queue_depth: int = Field(4, description="ready batches held")
    decode_threads: int | None = Field(
        None, json_schema_extra=_shown("cores (≤ 8)"), description="CPU decode threads"
    )
    ffmpeg_threads: int | None = Field(
        None,
        json_schema_extra=_shown("cores / `decode_threads`"),
        description="FFmpeg threads inside each decode thread (at least 1); see "
        "[docs/benchmarks.md](docs/benchmarks.md)",
    )
    drop_last: bool = Field(
        False,
        description="drop the last incomplete batch of each epoch "
        "(and truncate shards instead of padding)",
    )
    rank: int | None = Field(
        None,
        json_schema_extra=_shown("from `torch.distributed`"),
        description="this process's shard (with `world_size`): disjoint, "
        "equal-length shards per rank",
    )
    world_size: int | None = Field(
        None,
        json_schema_extra=_shown("from `torch.distributed`"),
        description="number of shards (with `rank`)",
    )
    on_error: OnError = Field(
        "raise",
        description="`raise`: the error reaches your loop at that sample, naming file "
        "and frames; `skip`: the sample is dropped, counted in `stats().skipped`, logged once "
        "per file",
    )
    timeout: float | None = Field(
        None,
        description="seconds to wait for one batch before "
        "`TimeoutError` naming what the decoder was busy with",
    )
    max_file_failures: int = Field(
        3, description='with `on_error="skip"`: failures after which a file is dropped for the run'
    )
    frame_rate: float | None = Field(
        None,
        description="None: clips count frames; a rate: clips over each file's time grid "
        "`t_first + j / frame_rate` (see Clips in time)",
    )
    stream_index: int | None = Field(
        None, description="the video stream to read; None: ffmpeg's best video stream"
    )
    autorotate: bool = Field(
        True,
        description="apply the display matrix (frames as a player "
        "shows them); False gives frames as stored",
    )
    progress: bool = Field(False, description="a progress bar while the files are indexed")
    index_timeout: float | None = Field(
        300.0,
        description="seconds one file may take to index before it counts as failed; None: no limit",
    )
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options for URL sources: credentials, `client_kwargs` endpoint"
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_option_names(cls.__name__, data, cls.model_fields)
        return data

    @field_validator(*_INT_FIELDS, mode="before")
    @classmethod
    def _int_type(cls, value: Any, info: ValidationInfo) -> Any:
        return reject_bool(str(info.field_name), value, "integers")

    @field_validator(*_AT_LEAST_ONE)
    @classmethod
    def _at_least_one(cls, value: int | None, info: ValidationInfo) -> int | None:
        field = str(info.field_name)
        if value is not None and value < 1:
            raise invalid_value(field, value, "integers >= 1" + _MIN_ONE_NOTES.get(field, ""))
        return value

    @field_validator("rank")
    @classmethod
    def _rank(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise invalid_value("rank", value, "integers >= 0 (below world_size) or None")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if value < 0:
            raise invalid_value("seed", value, "integers >= 0")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> str:
        text = str(value).strip().lower() if isinstance(value, str | torch.device) else None
        match = _DEVICE_RE.match(text) if text is not None else None
        if match is None:
            raise invalid_value("device", value, _DEVICES_ALLOWED)
        kind, index = match.groups()
        if index is None:
            return kind
        if kind == "cpu":
            raise invalid_value("device", value, _DEVICES_ALLOWED)
        return f"cuda:{int(index)}"

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> str:
        name = str(info.field_name)
        return check_choice(name, value, _CHOICES[name], fold=True)

    @field_validator("transform", "get_label", mode="before")
    @classmethod
    def _callable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not callable(value):
            raise invalid_type(str(info.field_name), value, "callables or None")
        return value

    @field_validator(*_SECONDS_NOTES)
    @classmethod
    def _seconds(cls, value: float | None, info: ValidationInfo) -> float | None:
        name = str(info.field_name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise invalid_value(
                name, value, f"finite numbers of seconds > 0, or {_SECONDS_NOTES[name]}"
            )
        return value

    @field_validator("frame_rate", mode="before")
    @classmethod
    def _frame_rate(cls, value: Any) -> Any:
        value = reject_bool("frame_rate", value, "numbers > 0 (per second) or None")
        if (
            value is not None
            and isinstance(value, (int, float))
            and not (math.isfinite(value) and value > 0)
        ):
            raise invalid_value("frame_rate", value, "finite numbers > 0 (per second) or None")
        return value

    @field_validator("stream_index")
    @classmethod
    def _stream_index(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise invalid_value(
                "stream_index",
                value,
                "integers >= 0 (a stream of the file) or None (ffmpeg's best video stream)",
            )
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
            raise invalid_value(
                "processing",
                value,
                "a ProcessDesc, a non-empty dict of name -> ProcessDesc, or None",
            )
        for name in value:
            if not isinstance(name, str) or not name.isidentifier():
                raise invalid_value(
                    "processing output name", name, "Python identifiers (e.g. 'rgb')"
                )
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> PrefetchConfig:
        rank, world = self.rank, self.world_size
        if (rank is None) != (world is None):
            raise invalid_value(
                "rank/world_size",
                None,
                "both set or both None",
                shown=f"rank={rank!r}, world_size={world!r}",
            )
        if rank is not None and world is not None and rank >= world:
            raise invalid_value(
                "rank", rank, "0 <= rank < world_size", context=f"with world_size={world}"
            )
        for name, desc in (self.processing or {}).items():
            try:
                desc.output_frames(self.seq_len)
            except ValueError as exc:
                raise ValueError(f"processing[{name!r}]: {exc}") from None
        return self

    @property
    def outputs(self) -> dict[str, ProcessDesc]:
        """The outputs to make: ``processing``, or ``{"default": ProcessDesc()}`` when None."""
        if self.processing is not None:
            return dict(self.processing)
        return {"default": ProcessDesc()}

    def replace(self, **changes: Any) -> PrefetchConfig:
        """A validated copy with ``changes`` applied (same messages as the constructor).

        The copy counts as set (``model_fields_set``) the fields set here and those changed.
        """
        values: dict[str, Any] = {name: getattr(self, name) for name in self.model_fields_set}
        values.update(changes)
        return type(self).model_validate(values)

    @classmethod
    def from_options(
        cls, config: PrefetchConfig | None = None, /, **options: Any
    ) -> PrefetchConfig:
        """``config`` (default: all defaults) with ``options`` applied on top.

        Raises:
            TypeError: an option name that is not a field (the message lists the fields), or
                ``config`` is not a :class:`PrefetchConfig`.
            pydantic.ValidationError: a bad value (a ``ValueError``).
        """
        check_option_names("Prefetcher", options, cls.model_fields, error=TypeError)
        if config is None:
            return cls(**options)
        if not isinstance(config, PrefetchConfig):
            raise invalid_type("config", config, "a PrefetchConfig or None")
        return config.replace(**options) if options else config

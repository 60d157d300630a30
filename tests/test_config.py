"""Validation of ProcessDesc and PrefetchConfig: values kept, and every bad value's message."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

from tvl_async._batch import Batch
from tvl_async._batching import apply_transform
from tvl_async._config import PrefetchConfig, ProcessDesc
from tvl_async._distributed import env_int
from tvl_async._index import load_indexes
from tvl_async._source import source_name


def _error(model: type[pydantic.BaseModel], **kwargs: Any) -> str:
    with pytest.raises(pydantic.ValidationError) as info:
        model(**kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


# ---------------------------------------------------------------- ProcessDesc: accepted values


def test_process_desc_defaults() -> None:
    d = ProcessDesc()
    assert d.dtype == torch.uint8
    assert d.layout == "fchw"
    assert d.color_space == "RGB"
    assert d.interpolation == "bilinear"
    assert d.antialias is True
    assert d.random_resized_ratio == pytest.approx((3 / 4, 4 / 3))
    assert d.channels == 3
    assert not d.is_random


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("uint8", torch.uint8),
        ("float16", torch.float16),
        ("half", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("float32", torch.float32),
        ("float", torch.float32),
        ("torch.float32", torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.uint8, torch.uint8),
    ],
)
def test_dtype_names(given: Any, expected: torch.dtype) -> None:
    assert ProcessDesc(dtype=given).dtype == expected


def test_case_insensitive_choices() -> None:
    d = ProcessDesc(color_space="ycbcr", layout="FHWC", interpolation="BICUBIC")
    assert d.color_space == "YCbCr"
    assert d.layout == "fhwc"
    assert d.interpolation == "bicubic"
    assert ProcessDesc(color_space="GRAY").channels == 1


def test_process_desc_is_frozen_hashable_and_json_round_trips() -> None:
    d = ProcessDesc(dtype="bfloat16", index_map=[1, 0, -1], mean=0.5, std=[0.2], normalized=True)
    assert d.index_map == (1, 0, -1)
    assert d.mean == (0.5,)
    with pytest.raises(pydantic.ValidationError):
        d.width = 3
    assert hash(d) == hash(ProcessDesc.model_validate(d.model_dump()))
    text = d.model_dump_json()
    assert '"dtype":"bfloat16"' in text
    assert ProcessDesc.model_validate_json(text) == d


def test_output_frames_and_shape_follow_index_map_and_layout() -> None:
    d = ProcessDesc(index_map=[-1, -1, 0, -1, -1])
    assert d.output_frames(5) == 1
    assert ProcessDesc(index_map=[4, 3, 2, 1, 0]).output_frames(5) == 5
    assert ProcessDesc(index_map=[1, 0]).output_frames(5) == 2  # shorter map: rest dropped
    assert ProcessDesc().output_frames(7) == 7
    with pytest.raises(ValueError, match=r"index_map.*seq_len=2"):
        ProcessDesc(index_map=[0, 1, 2]).output_frames(2)
    d = ProcessDesc(scale_width=64, width=32, height=24, layout="cfhw", color_space="gray")
    assert d.output_shape(4, 96, 128) == (1, 4, 24, 32)
    assert ProcessDesc(layout="hwcf").output_shape(3, 10, 20) == (10, 20, 3, 3)


def test_scaled_and_output_size() -> None:
    d = ProcessDesc(scale_width=320)
    assert d.scaled_size(480, 640) == (240, 320)
    assert d.scaled_size(240, 320) == (240, 320)  # idempotent
    assert ProcessDesc(scale_height=100).scaled_size(300, 451) == (100, 150)  # 150.33 -> 150
    assert ProcessDesc(scale_height=2).scaled_size(100, 101) == (2, 2)  # 2.02 -> 2
    assert ProcessDesc(scale_width=10, scale_height=20).scaled_size(7, 9) == (20, 10)
    assert ProcessDesc(width=16).output_size(48, 64) == (48, 16)
    assert ProcessDesc(random_resized_crop=(0.5, 1), width=8, height=9).output_size(48, 64) == (
        9,
        8,
    )
    with pytest.raises(
        ValueError,
        match=r"Invalid crop \(50x64, height x width\) for the scaled frame 48x64 .*no larger than",
    ):
        ProcessDesc(height=50).output_size(48, 64)


# ------------------------------------------------------------- ProcessDesc: rejected values


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"dtype": "int32"}, ["dtype", "'int32'", "uint8, float16, bfloat16, float32"]),
        ({"dtype": torch.float64}, ["dtype", "torch.float64", "float32"]),
        ({"scale_width": 0}, ["scale_width", "0", ">= 1"]),
        ({"height": -4}, ["height", "-4", ">= 1"]),
        ({"width": True}, ["width", "True", "integer"]),
        ({"color_space": "HSV"}, ["color_space", "'HSV'", "RGB, YCbCr, gray"]),
        ({"interpolation": "lanczos"}, ["interpolation", "'lanczos'", "bilinear, bicubic"]),
        ({"layout": "fchx"}, ["layout", "'fchx'", "f, c, h, w"]),
        ({"layout": "fchww"}, ["layout", "'fchww'", "f, c, h, w"]),
        ({"index_map": [0, -2]}, ["index_map", "[0, -2]", ">= -1"]),
        ({"index_map": [-1, -1]}, ["index_map", "[-1, -1]", "0..N-1"]),
        ({"index_map": [0, 0]}, ["index_map", "[0, 0]", "each once"]),
        ({"index_map": [0, 2]}, ["index_map", "[0, 2]", "0..N-1"]),
        (
            {"random_resized_crop": (0.0, 0.5), "width": 4, "height": 4},
            ["random_resized_crop", "(0.0, 0.5)", "0 < min <= max <= 1"],
        ),
        (
            {"random_resized_crop": (0.6, 0.5), "width": 4, "height": 4},
            ["random_resized_crop", "(0.6, 0.5)", "0 < min <= max <= 1"],
        ),
        ({"random_resized_crop": (0.5, 1.0)}, ["random_resized_crop", "width=None", "both"]),
        (
            {"random_resized_crop": (0.5, 1.0), "width": 4, "height": 4, "scale_width": 8},
            ["random_resized_crop", "scale_width=8", "without scale_width"],
        ),
        (
            {"random_resized_crop": (0.5, 1.0), "width": 4, "height": 4, "random_crop": True},
            ["random_crop", "True", "one of the two"],
        ),
        ({"random_resized_ratio": (2.0, 1.0)}, ["random_resized_ratio", "(2.0, 1.0)", "min <="]),
        ({"random_crop": True}, ["random_crop", "True", "width and/or height"]),
        ({"normalized": True}, ["normalized", "True", "uint8", "float dtype"]),
        ({"mean": (0.5, 0.5, 0.5)}, ["mean", "(0.5, 0.5, 0.5)", "uint8", "float dtype"]),
        ({"std": 2.0}, ["std", "(2.0,)", "float dtype"]),
        ({"dtype": "float32", "std": (1.0, 0.0, 1.0)}, ["std", "(1.0, 0.0, 1.0)", "> 0"]),
        ({"dtype": "float32", "mean": (1.0, 2.0)}, ["mean", "(1.0, 2.0)", "1 or 3 values"]),
        (
            {"dtype": "float32", "color_space": "gray", "std": (1.0, 2.0, 3.0)},
            ["std", "(1.0, 2.0, 3.0)", "Supported values are 1 value", "gray"],
        ),
        ({"dtype": "float32", "mean": (math.nan,)}, ["mean", "nan", "finite"]),
        ({"scale_width": 32, "width": 40}, ["width", "40", "scale_width=32"]),
        ({"scale_height": 32, "height": 33}, ["height", "33", "scale_height=32"]),
    ],
)
def test_process_desc_errors(kwargs: dict[str, Any], fragments: list[str]) -> None:
    message = _error(ProcessDesc, **kwargs)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- PrefetchConfig


def test_prefetch_config_defaults() -> None:
    c = PrefetchConfig()
    assert (c.seq_len, c.batch_size, c.device, c.backend) == (1, 1, "cpu", "auto")
    assert (c.shuffle, c.sampling, c.replacement) == (True, "uniform", False)
    assert (c.chunk_size, c.shuffle_buffer, c.seed, c.epochs) == (8, 1024, 0, 1)
    assert (c.stride, c.step, c.lookahead, c.memory_budget) == (1, 1, None, None)
    assert (c.processing, c.queue_depth, c.decode_threads, c.drop_last) == (None, 4, None, False)
    assert (c.rank, c.world_size, c.on_error, c.timeout) == (None, None, "raise", None)
    assert c.max_file_failures == 3
    assert c.outputs == {"default": ProcessDesc()}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("cpu", "cpu"),
        (" CPU ", "cpu"),
        ("cuda", "cuda"),
        ("CUDA:01", "cuda:1"),
        ("cuda:3", "cuda:3"),
        (torch.device("cuda", 2), "cuda:2"),
        (torch.device("cpu"), "cpu"),
    ],
)
def test_device_normalised(given: Any, stored: str) -> None:
    assert PrefetchConfig(device=given).device == stored


def test_processing_forms() -> None:
    single = ProcessDesc(dtype="float32")
    assert PrefetchConfig(processing=single).processing == {"default": single}
    c = PrefetchConfig(processing={"rgb": single, "gray": {"color_space": "gray"}})
    assert c.processing is not None
    assert c.processing["gray"].channels == 1
    assert list(c.outputs) == ["rgb", "gray"]


def test_accepted_values() -> None:
    c = PrefetchConfig(
        seq_len=5,
        sampling="GOP_SHUFFLE",
        backend="PyAV",
        on_error="skip",
        epochs=None,
        rank=1,
        world_size=2,
        timeout=2.5,
        lookahead=16,
        decode_threads=3,
    )
    assert (c.sampling, c.backend, c.on_error, c.epochs) == ("gop_shuffle", "pyav", "skip", None)
    assert (c.rank, c.world_size, c.timeout, c.lookahead, c.decode_threads) == (1, 2, 2.5, 16, 3)


def test_prefetch_config_is_frozen_and_replace_validates() -> None:
    c = PrefetchConfig(seq_len=4)
    with pytest.raises(pydantic.ValidationError):
        c.seq_len = 5
    d = c.replace(batch_size=8)
    assert (d.seq_len, d.batch_size, c.batch_size) == (4, 8, 1)
    with pytest.raises(pydantic.ValidationError, match=r"Invalid batch_size \(0\)"):
        c.replace(batch_size=0)


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        (
            {"sampling": "foo"},
            [
                "Invalid sampling ('foo'). Supported values are sequential, uniform, chunked, "
                "gop_shuffle."
            ],
        ),
        ({"backend": "ffmpeg"}, ["backend", "'ffmpeg'", "auto, pyav, nvdec"]),
        ({"on_error": "ignore"}, ["on_error", "'ignore'", "raise, skip"]),
        ({"device": "gpu"}, ["device", "'gpu'", "'cpu', 'cuda', 'cuda:N'"]),
        ({"device": "cuda:-1"}, ["device", "'cuda:-1'", "'cuda:N'"]),
        ({"device": "cpu:0"}, ["device", "'cpu:0'", "'cpu'"]),
        ({"device": 0}, ["device", "0", "'cuda:N'"]),
        ({"seq_len": 0}, ["seq_len", "0", ">= 1"]),
        ({"seq_len": True}, ["seq_len", "True", "integer"]),
        ({"batch_size": -1}, ["batch_size", "-1", ">= 1"]),
        ({"chunk_size": 0}, ["chunk_size", "0", ">= 1"]),
        ({"shuffle_buffer": 0}, ["shuffle_buffer", "0", ">= 1"]),
        ({"epochs": 0}, ["epochs", "0", ">= 1 or None"]),
        ({"stride": 0}, ["stride", "0", ">= 1"]),
        ({"step": 0}, ["step", "0", ">= 1"]),
        ({"lookahead": 0}, ["lookahead", "0", ">= 1 or None"]),
        ({"memory_budget": 0}, ["memory_budget", "0", ">= 1 (bytes)"]),
        ({"queue_depth": 0}, ["queue_depth", "0", ">= 1"]),
        ({"decode_threads": 0}, ["decode_threads", "0", ">= 1 or None"]),
        ({"max_file_failures": 0}, ["max_file_failures", "0", ">= 1"]),
        ({"timeout": 0}, ["timeout", "0", "> 0"]),
        ({"timeout": -1.5}, ["timeout", "-1.5", "> 0"]),
        ({"timeout": math.inf}, ["timeout", "inf", "finite"]),
        ({"rank": 0}, ["rank", "world_size=None", "both set or both None"]),
        ({"world_size": 2}, ["world_size=2", "rank=None", "both"]),
        ({"rank": 2, "world_size": 2}, ["rank", "2", "0 <= rank < world_size"]),
        ({"rank": -1, "world_size": 2}, ["rank", "-1", ">= 0"]),
        ({"world_size": 0, "rank": 0}, ["world_size", "0", ">= 1"]),
        ({"seed": -1}, ["seed", "-1", ">= 0"]),
        ({"processing": {"1bad": ProcessDesc()}}, ["processing", "'1bad'", "identifiers"]),
        ({"processing": {}}, ["processing", "{}", "non-empty"]),
        ({"processing": [ProcessDesc()]}, ["processing", "a ProcessDesc"]),
        ({"processing": {"x": {"dtype": "int8"}}}, ["dtype", "'int8'", "float32"]),
        (
            {"seq_len": 2, "processing": {"x": {"index_map": [0, 1, 2]}}},
            ["processing['x']: Invalid index_map", "[0, 1, 2]", "seq_len=2", "at most seq_len"],
        ),
        ({"seq_len": "abc"}, ["seq_len", "abc"]),
    ],
)
def test_prefetch_config_errors(kwargs: dict[str, Any], fragments: list[str]) -> None:
    message = _error(PrefetchConfig, **kwargs)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_unknown_options() -> None:
    # from a dict or JSON: a ValidationError with a suggestion and the known names
    with pytest.raises(pydantic.ValidationError) as info:
        PrefetchConfig.model_validate({"batchsize": 3})
    message = str(info.value)
    assert "Invalid option ('batchsize') for PrefetchConfig (did you mean 'batch_size'?)" in message
    assert "Supported values are seq_len, batch_size, device" in message
    with pytest.raises(pydantic.ValidationError, match=r"Invalid option \('widht'\).*'width'"):
        ProcessDesc.model_validate_json('{"widht": 3}')
    # as keyword arguments too (type checkers flag them already)
    with pytest.raises(pydantic.ValidationError, match=r"did you mean 'batch_size'\?"):
        PrefetchConfig(batchsize=3)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match=r"did you mean 'width'\?"):
        ProcessDesc(widht=3)  # type: ignore[call-arg]


# ------------------------------------------------- choice tuples and the Prefetcher's options


def test_choice_tuples_come_from_the_literals() -> None:
    from typing import get_args

    from tvl_async import _backends, _config, _process_desc, _sampling

    fields = PrefetchConfig.model_fields
    assert get_args(fields["sampling"].annotation) == _config.SAMPLINGS
    assert _sampling.SAMPLINGS is _config.SAMPLINGS
    assert _backends.BACKENDS is _config.BACKENDS
    assert get_args(fields["backend"].annotation) == _config.BACKENDS
    assert _config.BACKENDS == ("auto", "pyav", "nvdec")
    assert get_args(fields["on_error"].annotation) == _config.ON_ERROR
    assert _config.ON_ERROR == ("raise", "skip")
    assert (
        get_args(ProcessDesc.model_fields["interpolation"].annotation)
        == _process_desc._INTERPOLATIONS
    )
    with pytest.raises(pydantic.ValidationError, match=r"Supported values are RGB, YCbCr, gray"):
        ProcessDesc(color_space="HSV")


def test_no_choice_tuple_is_written_out_beside_its_literal() -> None:
    """Every module-level tuple of choices is ``get_args`` of a ``Literal`` (the list is
    written once), and the index's on_error choices are the config's."""
    from typing import get_args

    from tvl_async import _config, _index, _loader
    from tvl_async._backends import base, pyav, yuv

    assert _loader.LAYOUTS == get_args(_loader.Layout) == ("TCHW", "THWC")
    assert get_args(pyav.SwsInterpolation) == pyav.INTERPOLATIONS
    assert yuv.CHROMA_SITINGS == get_args(yuv.ChromaSiting) == ("left", "center")
    assert get_args(yuv.ChromaUpsampling) == yuv.CHROMA_MODES
    assert get_args(base.ReadMode) == base.READ_MODES
    assert _index.ON_ERROR is _config.ON_ERROR


def test_every_option_has_a_one_line_doc() -> None:
    for name, info in PrefetchConfig.model_fields.items():
        assert info.description, name
        assert "\n" not in info.description and "|" not in info.description, name


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from tvl_async.cli.synthetic import write_video

    d = tmp_path_factory.mktemp("config")
    write_video(d / "a.mp4", n_frames=10, width=32, height=24, gop=4)
    write_video(d / "b.mp4", n_frames=6, width=32, height=24, gop=4)
    return [str(d / "a.mp4"), str(d / "b.mp4")]


def test_prefetcher_forwards_options_to_prefetch_config(two_files: list[str]) -> None:
    from tvl_async import Prefetcher

    with Prefetcher(
        two_files,
        3,
        batch_size=4,
        shuffle=False,
        decode_threads=1,
        device=torch.device("cpu"),
        sampling="SEQUENTIAL",
    ) as it:
        assert it.config == PrefetchConfig(
            seq_len=3, batch_size=4, shuffle=False, decode_threads=1, sampling="sequential"
        )
        sizes = [len(b.sample_ids) for b in it]
    assert sizes == [4, 4, 4]  # 8 + 4 clips of 3 frames


def test_prefetcher_unknown_option_lists_the_valid_ones(two_files: list[str]) -> None:
    from tvl_async import Prefetcher

    with pytest.raises(TypeError) as info:
        Prefetcher(two_files, 3, batchsize=4)
    message = str(info.value)
    assert "Invalid option ('batchsize') for Prefetcher (did you mean 'batch_size'?)" in message
    assert "Supported values are " + ", ".join(PrefetchConfig.model_fields) + "." in message
    with pytest.raises(pydantic.ValidationError, match=r"Invalid batch_size \(0\)"):
        Prefetcher(two_files, 3, batch_size=0)
    with pytest.raises(TypeError, match=r"Invalid transform \(42\).*callables or None"):
        Prefetcher(two_files, 3, transform=42)


def test_prefetcher_config_and_options_override_it(two_files: list[str]) -> None:
    from tvl_async import Prefetcher

    base = PrefetchConfig(seq_len=2, batch_size=5, shuffle=False, decode_threads=1)
    it = Prefetcher(two_files, config=base)
    assert it.config is base and len(it) == 3  # 9 + 5 clips of 2 -> 5, 5, 4
    it.close()
    it = Prefetcher(two_files, 4, config=base, batch_size=2, drop_last=True)
    assert it.config == base.replace(seq_len=4, batch_size=2, drop_last=True)
    assert base.batch_size == 5  # the given config is not changed
    assert len(it) == 5  # 7 + 3 clips of 4 frames -> 5 full batches of 2
    it.close()
    with pytest.raises(TypeError, match=r"Invalid config \(\{'batch_size': 2\}\)"):
        Prefetcher(two_files, config={"batch_size": 2})  # type: ignore[arg-type]


def test_dataset_clip_options_from_config_count_only_when_set(two_files: list[str]) -> None:
    from tvl_async import Prefetcher, VideoDataset

    ds = VideoDataset(two_files, 3, stride=2)
    # defaults (not set) give way to the dataset's own values
    it = Prefetcher(ds, config=PrefetchConfig(batch_size=2, decode_threads=1))
    assert (it.config.seq_len, it.config.stride, it.config.batch_size) == (3, 2, 2)
    it.close()
    with pytest.raises(ValueError, match=r"Invalid stride \(1\) given with a VideoDataset"):
        Prefetcher(ds, config=PrefetchConfig(stride=1))
    with pytest.raises(ValueError, match=r"Invalid seq_len \(4\) given with a VideoDataset"):
        Prefetcher(ds, 4)


def _batch(outputs: Any = None) -> Batch:
    zeros = torch.zeros(1)
    return Batch(
        {"default": zeros} if outputs is None else outputs,
        sample_ids=zeros,
        files=[],
        frame_indices=zeros,
        timestamps=zeros,
        epoch=0,
    )


OTHER_BAD_VALUES: list[tuple[Callable[[], object], type[Exception], str]] = [
    (
        lambda: load_indexes([], on_error="ignore"),  # type: ignore[arg-type]
        ValueError,
        "Invalid on_error ('ignore'). Supported values are raise, skip.",
    ),
    (
        lambda: load_indexes([], timeout=0),
        ValueError,
        "Invalid index timeout (0). Supported values are seconds > 0 or None.",
    ),
    (
        lambda: load_indexes([], workers=-1),
        ValueError,
        "Invalid workers (-1). Supported values are integers >= 1 or None.",
    ),
    (
        lambda: env_int("RANK", {"RANK": "x"}),
        ValueError,
        "Invalid RANK ('x'). Supported values are integers >= 0, as torchrun sets them.",
    ),
    (
        lambda: _batch([torch.zeros(1)]),
        TypeError,
        "Invalid Batch outputs (list). Supported values are a mapping from output name to tensor.",
    ),
    (
        lambda: apply_transform(lambda _b: 42, _batch()),
        TypeError,
        "Invalid transform result (int). Supported values are a Batch, a mapping of tensors "
        "or None.",
    ),
]


@pytest.mark.parametrize(("call", "kind", "message"), OTHER_BAD_VALUES)
def test_bad_values_outside_the_models_read_the_house_form(
    call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    """The checks outside the pydantic models give the same form: the bad value, then what is
    allowed (and the file, where there is one)."""
    with pytest.raises(kind) as info:
        call()
    assert str(info.value) == message


def test_a_text_mode_file_object_is_refused_in_the_house_form(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("not a video")
    with (tmp_path / "t.txt").open() as f, pytest.raises(TypeError) as info:
        source_name(f)
    assert str(info.value).startswith("Invalid file object (<_io.TextIOWrapper ")
    assert str(info.value).endswith(
        "Supported values are file objects opened in binary mode ('rb')."
    )

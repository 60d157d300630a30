"""The per-file CPU fallback of the GPU path: with a stand-in GPU backend, and with the real
NvdecBackend over the fake PyNvVideoCodec of ``test_nvdec_cpu.py`` (NVDEC refusing a stream at
decode time; interlaced files)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import Video
from test_nvdec_cpu import big_videos, fake_nvc  # noqa: F401  (fixtures)

from tvl_async._backends.base import DecodeResult, ReadMode
from tvl_async._backends.fallback import FallbackBackend
from tvl_async._backends.nvdec import NvdecBackend, static_unsupported_reason
from tvl_async._backends.pyav import PyAVBackend
from tvl_async._index import VideoIndex, load_index
from tvl_async.cli.synthetic import frame_index_of


class FakeGpu:
    """Decodes through PyAV but says it cannot handle HEVC, like an old NVDEC would."""

    name = "fakegpu"
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.inner = PyAVBackend()
        self.calls: list[str] = []
        self.closed = False

    def unsupported_reason(self, index: VideoIndex) -> str | None:
        return "hevc is not supported by this GPU" if index.codec == "hevc" else None

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
    ) -> DecodeResult:
        self.calls.append(index.path)
        return self.inner.decode(index, frames, size=size, mode=mode)

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        self.calls.append(index.path)
        return self.inner.stream(index, start, size=size)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_unsupported_file_falls_back_once(
    videos: dict[str, Video], caplog: pytest.LogCaptureFixture
) -> None:
    gpu = FakeGpu()
    seen: list[tuple[str, str]] = []
    backend = FallbackBackend(gpu, PyAVBackend(), lambda p, r: seen.append((p, r)))
    h264 = load_index(videos["h264_mp4"].path)
    hevc = load_index(videos["hevc_mp4"].path)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert [frame_index_of(f) for f in backend.decode(hevc, [5, 1, 5]).frames] == [5, 1, 5]
            assert [frame_index_of(f) for f in backend.decode(h264, [7]).frames] == [7]
    assert gpu.calls == [h264.path] * 3  # HEVC never reached the "GPU"
    assert seen == [(hevc.path, "hevc is not supported by this GPU")]
    assert backend.fallback_files == [hevc.path]
    assert sum("decoded on the CPU" in r.message for r in caplog.records) == 1
    assert [frame_index_of(f) for f in backend.stream(hevc, 45)] == [45, 46, 47]
    backend.close()
    assert gpu.closed


# ------------------------------------------------- the real NvdecBackend (fake PyNvVideoCodec)


@pytest.fixture
def gpu_fallback(
    fake_nvc: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[FallbackBackend, list[tuple[str, str]]]]:
    """create_backend's nvdec stack: NvdecBackend (emulated) with the PyAV fallback; CPU frames
    stay on the CPU here (the upload to the GPU is an identity)."""
    from tvl_async import _devices

    monkeypatch.setattr(_devices, "to_device_async", lambda t, device, stream=None: t)
    seen: list[tuple[str, str]] = []
    backend = FallbackBackend(
        NvdecBackend("cuda:0"), PyAVBackend(), lambda p, r: seen.append((p, r))
    )
    yield backend, seen
    backend.close()


def test_nvdec_rejecting_a_stream_at_decode_time_falls_back(
    gpu_fallback: tuple[FallbackBackend, list[tuple[str, str]]],
    fake_nvc: Any,
    big_videos: dict[str, Video],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Decode`` raising PyNvVCExceptionUnsupported ("Resolution not supported", as NVDEC does
    when it meets the sequence header) moves the file to the CPU: exact frames, listed once in
    fallback_files, never sent to NVDEC again; other files stay on the GPU."""
    backend, seen = gpu_fallback
    gpu = backend.primary
    assert isinstance(gpu, NvdecBackend)
    fake_nvc.log["reject"].append("HEVC")
    hevc = load_index(big_videos["hevc"].path)
    h264 = load_index(big_videos["h264"].path)
    assert gpu.supports(hevc) is True  # nothing in the index or the caps says no
    with caplog.at_level(logging.WARNING):
        assert [frame_index_of(f) for f in backend.decode(hevc, [5, 1, 5]).frames] == [5, 1, 5]
    assert backend.fallback_files == [hevc.path]
    assert len(seen) == 1 and seen[0][0] == hevc.path
    assert "Resolution not supported" in seen[0][1] and hevc.path in seen[0][1]
    assert sum("decoded on the CPU" in r.message for r in caplog.records) == 1
    assert "Resolution not supported" in (gpu.unsupported_reason(hevc) or "")
    tries = fake_nvc.log["decode"].count("HEVC")
    assert [frame_index_of(f) for f in backend.decode(hevc, [30]).frames] == [30]
    assert [frame_index_of(f) for f in backend.stream(hevc, 33)] == [33, 34, 35]
    assert fake_nvc.log["decode"].count("HEVC") == tries  # NVDEC is not asked again
    assert gpu.decoders == 0  # the decoder NVDEC broke was dropped
    assert [frame_index_of(f) for f in backend.decode(h264, [7]).frames] == [7]
    assert gpu.decoders == 1 and len(seen) == 1


def test_nvdec_rejecting_a_stream_in_stream_mode_falls_back(
    gpu_fallback: tuple[FallbackBackend, list[tuple[str, str]]],
    fake_nvc: Any,
    big_videos: dict[str, Video],
) -> None:
    backend, seen = gpu_fallback
    fake_nvc.log["reject"].append("HEVC")
    hevc = load_index(big_videos["hevc"].path)
    assert [frame_index_of(f) for f in backend.stream(hevc, 30)] == list(range(30, 36))
    assert backend.fallback_files == [hevc.path] and len(seen) == 1


def test_decode_time_refusal_without_fallback_is_unsupported_codec_error(
    fake_nvc: Any, big_videos: dict[str, Video]
) -> None:
    from tvl_async._errors import UnsupportedCodecError

    fake_nvc.log["reject"].append("HEVC")
    hevc = load_index(big_videos["hevc"].path)
    gpu = NvdecBackend("cuda:0")
    try:
        with pytest.raises(
            UnsupportedCodecError,
            match=r"hevc.mp4: NVDEC rejected the stream \(PyNvVCExceptionUnsupported"
            r": Resolution not supported.*decode it on the CPU",
        ):
            gpu.decode(hevc, [3])
    finally:
        gpu.close()


def interlace(src: Path, dst: Path, top: int) -> Path:
    """Re-encode ``src`` as interlaced H.264 (``-flags +ilme+ildct``, top field first or not)."""
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-c:v",
            "libx264",
            "-flags",
            "+ilme+ildct",
            "-top",
            str(top),
            "-g",
            "8",
            "-bf",
            "0",
            "-x264-params",
            "log-level=error",
            "-an",
            str(dst),
        ],
        check=True,
    )
    return dst


@pytest.fixture(scope="module")
def interlaced(
    big_videos: dict[str, Video],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("interlaced")
    src = big_videos["hevc"].path  # 256x192, 36 frames
    return {"tt": interlace(src, root / "tff.mp4", 1), "bb": interlace(src, root / "bff.mkv", 0)}


def test_index_records_the_field_order(
    interlaced: dict[str, Path], big_videos: dict[str, Video]
) -> None:
    assert load_index(interlaced["tt"]).field_order == "tt"
    assert load_index(interlaced["bb"]).field_order == "bb"
    assert load_index(big_videos["h264"].path).field_order == "progressive"
    reason = static_unsupported_reason(load_index(interlaced["tt"]))
    assert reason is not None and "interlaced (field order 'tt')" in reason


def test_interlaced_files_are_decoded_on_the_cpu(
    gpu_fallback: tuple[FallbackBackend, list[tuple[str, str]]],
    fake_nvc: Any,
    interlaced: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NVDEC would deinterlace them: both field orders go to the CPU (logged, listed), frames
    exact, and NVDEC never sees a packet of them."""
    backend, seen = gpu_fallback
    with caplog.at_level(logging.WARNING):
        for order in ("tt", "bb"):
            index = load_index(interlaced[order])
            got = backend.decode(index, [9, 0, 35, 9]).frames
            assert [frame_index_of(f) for f in got] == [9, 0, 35, 9], order
    assert backend.fallback_files == [str(load_index(interlaced[o]).path) for o in ("tt", "bb")]
    assert [("interlaced" in r) for _, r in seen] == [True, True]
    assert fake_nvc.log["create"] == [] and fake_nvc.log["decode"] == []
    assert sum("interlaced" in r.message for r in caplog.records) == 2

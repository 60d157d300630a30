"""The per-file CPU fallback of the GPU path, with a stand-in for the GPU backend."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pytest
import torch
from conftest import Video

from tvl_async._backends.base import DecodeResult, ReadMode
from tvl_async._backends.fallback import FallbackBackend
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

    def decode(self, index: VideoIndex, frames: Sequence[int], *,
               size: tuple[int, int] | None = None, mode: ReadMode = "auto") -> DecodeResult:
        self.calls.append(index.path)
        return self.inner.decode(index, frames, size=size, mode=mode)

    def stream(self, index: VideoIndex, start: int = 0, *,
               size: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        self.calls.append(index.path)
        return self.inner.stream(index, start, size=size)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def test_unsupported_file_falls_back_once(videos: dict[str, Video],
                                          caplog: pytest.LogCaptureFixture) -> None:
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

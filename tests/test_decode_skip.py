"""Decoding less (``_backends.pyav_skip``): non-reference frames no sample wants are skipped and
the decoder is drained after the last wanted frame; every wanted frame stays bit-identical to
full decoding, on every codec and container of the test matrix."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from conftest import Video

from tvl_async._backends.pyav import PyAVBackend
from tvl_async._index import load_index


def _decode(
    path: str, frames: list[int], skip: bool, monkeypatch: pytest.MonkeyPatch, threads: int = 1
) -> Any:
    b = PyAVBackend(threads=threads, skip_unwanted=skip)
    try:
        index = load_index(path)
        result = b.decode(index, frames)
        return result.frames, b.frames_decoded
    finally:
        b.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "name",
    [
        "h264_mp4",
        "h264_mkv",
        "h264_ts",
        "hevc_mp4",
        "vp9_webm",
        "av1_mkv",
        "mpeg4_avi",
        "mjpeg_mov",
        "vfr_mkv",
        "start_mp4",
        "h264_10bit_mkv",
        "hevc_10bit_mkv",
        "edit_list_mp4",
        "audio_first_mp4",
    ],
)
@pytest.mark.parametrize("threads", [1, 3])  # 3: FFmpeg frame threads, skip_frame per packet
def test_skipping_gives_the_frames_of_full_decoding(
    name: str, threads: int, videos: dict[str, Video], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(videos[name].path)
    n = load_index(path).n_frames
    full, _ = _decode(path, list(range(n)), False, monkeypatch, 1)
    rng = random.Random(name)
    picks = [[k] for k in range(n)]  # each frame alone: everything before it is skippable
    picks += [sorted(rng.sample(range(n), rng.randint(2, 6))) for _ in range(12)]
    for frames in picks:
        got, _ = _decode(path, frames, True, monkeypatch, threads)
        for i, frame in zip(frames, got, strict=True):
            assert torch.equal(frame, full[i]), (name, frames, i)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["h264_mp4", "h264_ts"])
def test_skipping_decodes_fewer_frames_with_b_frames(
    name: str, videos: dict[str, Video], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(videos[name].path)  # B-frames
    n = load_index(path).n_frames
    without = sum(_decode(path, [k], False, monkeypatch)[1] for k in range(n))
    with_skip = sum(_decode(path, [k], True, monkeypatch)[1] for k in range(n))
    assert with_skip < 0.8 * without, (with_skip, without)

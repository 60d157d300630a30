"""Files with several video streams: ffmpeg's best stream by default, ``stream_index`` to choose.

The test file (Matroska written with PyAV, no stream marked default) holds stream 0: 320x180 whose
frame i shows i, stream 1: 480x270 whose frame i shows i + 100, and stream 2: audio. ffmpeg and
ffprobe pick stream 1 (the largest); so must tvl_async, and the index cache must keep the streams
apart.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tvl_async import Prefetcher, VideoDataset, VideoLoader, load_index
from tvl_async.cli.synthetic import frame_index_of, index_pattern

N = 12
SIZES = ((320, 180), (480, 270))
OFFSETS = (0, 100)


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("streams") / "f.mkv"
    with av.open(str(path), "w") as c:
        streams = []
        for w, h in SIZES:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.time_base = s.codec_context.time_base = Fraction(1, 25)
            s.disposition = 0  # no stream marked default (MP4 marks the first: ffmpeg takes it)
            streams.append(s)
        audio = c.add_stream("aac", rate=48000)
        for i in range(N):
            for s, (w, h), off in zip(streams, SIZES, OFFSETS, strict=True):
                fr = av.VideoFrame.from_ndarray(index_pattern(i + off, w, h), format="rgb24")
                fr = fr.reformat(format="yuv420p")
                fr.pts = i
                for p in s.encode(fr):
                    c.mux(p)
        silence = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        silence.sample_rate, silence.pts = 48000, 0
        for p in audio.encode(silence):
            c.mux(p)
        for s in (*streams, audio):
            for p in s.encode(None):
                c.mux(p)
    return path


def test_default_is_ffmpegs_best_stream(two_streams: Path) -> None:
    with VideoLoader(two_streams) as v:
        assert v.stream_index == 1 and (v.width, v.height) == (480, 270)
        assert [frame_index_of(f) for f in v.select_frames([0, 5, 11])] == [100, 105, 111]
    if shutil.which("ffmpeg"):  # the CLI decodes the same stream
        raw = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-i",
                str(two_streams),
                "-frames:v",
                "1",
                "-pix_fmt",
                "rgb24",
                "-f",
                "rawvideo",
                "-",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert len(raw) == 480 * 270 * 3


def test_stream_index_chooses(two_streams: Path) -> None:
    with VideoLoader(two_streams, stream_index=0) as v:
        assert v.stream_index == 0 and (v.width, v.height) == (320, 180)
        assert [frame_index_of(f) for f in v.select_frames([3, 0])] == [3, 0]
        assert frame_index_of(next(v.read_all_frames())) == 0
    with VideoLoader(two_streams, stream_index=1) as v:
        assert frame_index_of(v.select_frame(3)) == 103


def test_non_video_stream_is_a_clear_error(two_streams: Path) -> None:
    expected = (
        f"{two_streams}: Invalid stream_index (2). Supported values are the indices of the "
        f"video streams: 0 (h264 320x180), 1 (h264 480x270)."
    )
    with pytest.raises(ValueError) as e:
        VideoLoader(two_streams, stream_index=2)
    assert str(e.value) == expected
    with pytest.raises(ValueError, match=r"Invalid stream_index \(7\)"):
        load_index(two_streams, stream_index=7)


def test_cache_keeps_streams_apart(two_streams: Path) -> None:
    assert load_index(two_streams, stream_index=0).coded_width == 320
    assert load_index(two_streams).coded_width == 480  # a cache hit for stream 0 is not reused
    assert load_index(two_streams, stream_index=0).coded_width == 320
    assert load_index(two_streams, stream_index=1).coded_width == 480


def test_dataset_and_prefetcher_take_stream_index(two_streams: Path) -> None:
    ds = VideoDataset([two_streams], 2, stream_index=0)
    assert ds.indexes[0].stream_index == 0
    with Prefetcher([two_streams], seq_len=2, stream_index=0, shuffle=False) as it:
        clip = next(iter(it))["default"][0]
    assert clip.shape == (2, 3, 180, 320)
    assert [frame_index_of(f) for f in clip] == [0, 1]
    with Prefetcher([two_streams], seq_len=2, shuffle=False) as it:
        clip = next(iter(it))["default"][0]
    assert clip.shape == (2, 3, 270, 480) and [frame_index_of(f) for f in clip] == [100, 101]
    with pytest.raises(ValueError, match="stream_index"):
        Prefetcher([two_streams], seq_len=2, stream_index=-1)


def test_cli_probe_takes_stream_index(two_streams: Path) -> None:
    import sys

    def probe(*extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "tvl_async.cli.main", "probe", str(two_streams), *extra],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out

    assert "(reading #1)" in probe() and "480x270" in probe()
    chosen = probe("--stream-index", "0")
    assert "(reading #0)" in chosen and "320x180" in chosen

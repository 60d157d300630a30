"""Rotation (display matrices written by the ffmpeg CLI) and clips in time (a variable-rate file).

Rotated files must come out as ``ffmpeg -i f -pix_fmt rgb24`` (which autorotates) gives them, with
``width``/``height`` the displayed size; ``autorotate=False`` gives the stored picture. With
``frame_rate``, grid point ``j`` of a file is the last frame whose presentation time is at most
``t_first + j / frame_rate``.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tvl_async import Prefetcher, VideoDataset, VideoLoader
from tvl_async.cli.synthetic import frame_index_of, write_video

FFMPEG = shutil.which("ffmpeg")
W, H, N = 64, 48, 6


def _cli_frames(path: Path, width: int, height: int, *extra: str) -> np.ndarray:
    """Every frame as the ffmpeg CLI decodes it to rgb24: ``[n, height, width, 3]``."""
    assert FFMPEG is not None
    raw = subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            *extra,
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("rot") / "stored.mp4", n_frames=N, width=W, height=H)


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI (Debian: ffmpeg)")
@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotated_frames_equal_the_ffmpeg_cli(stored: Path, tmp_path: Path, angle: int) -> None:
    assert FFMPEG is not None
    path = tmp_path / f"r{angle}.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(stored), "-c", "copy",
         "-metadata:s:v", f"rotate={angle}", str(path)],
        check=True,
    )  # fmt: skip
    shown_w, shown_h = (H, W) if angle in (90, 270) else (W, H)
    with VideoLoader(path) as video:
        assert video.rotation == angle
        assert (video.width, video.height) == (shown_w, shown_h)
        frames = video.read_frames_at(list(range(N)), layout="THWC").numpy()
    cli = _cli_frames(path, shown_w, shown_h)
    assert frames.shape == cli.shape == (N, shown_h, shown_w, 3)
    assert np.array_equal(frames, cli)
    with VideoLoader(path, autorotate=False) as video:
        assert (video.width, video.height) == (W, H) and video.rotation == angle
        as_stored = video.read_frames_at(list(range(N)), layout="THWC").numpy()
    assert np.array_equal(as_stored, _cli_frames(path, W, H, "-autorotate", "0"))
    assert [
        frame_index_of(f) for f in VideoLoader(path, autorotate=False).select_frames([3, 1])
    ] == [3, 1]


# presentation times in ms of a variable-rate file (time base 1/1000)
VFR_MS = [0, 40, 80, 200, 240, 400, 410, 420, 600, 640]


def _grid_frames(rate: float, count: int) -> list[int]:
    """Independent reference: the last frame shown at each grid time ``j / rate``."""
    times = np.asarray(VFR_MS) / 1000.0
    return [int(np.searchsorted(times, j / rate + 1e-9, side="right") - 1) for j in range(count)]


@pytest.fixture(scope="module")
def vfr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("vfr") / "vfr.mkv",
        n_frames=len(VFR_MS),
        width=W,
        height=H,
        pts=VFR_MS,
        time_base=Fraction(1, 1000),
        gop=4,
    )


def test_clips_in_time_follow_the_grid(vfr: Path) -> None:
    rate, seq_len, stride = 10.0, 3, 2
    ds = VideoDataset([vfr], seq_len, stride=stride, frame_rate=rate)
    grid = _grid_frames(rate, 7)  # 0 .. 0.6 s: the file lasts past 0.64 s
    assert grid == [0, 2, 3, 4, 5, 7, 8]
    assert len(ds) >= 3
    for i in range(3):  # clip i: grid points i, i+2, i+4
        assert ds.clip_frames(i) == [grid[i], grid[i + stride], grid[i + 2 * stride]]
    with Prefetcher(ds, batch_size=3, shuffle=False, sampling="sequential") as it:
        batch = next(iter(it))
    want = [[grid[i + k * stride] for k in range(seq_len)] for i in range(3)]
    assert batch.frame_indices.tolist() == want
    shown = [[frame_index_of(f) for f in clip] for clip in batch["default"]]
    assert shown == want
    expected_t = [[VFR_MS[f] / 1000.0 for f in clip] for clip in want]
    assert np.allclose(batch.timestamps.numpy(), expected_t)


def test_frame_rate_in_every_sampler(vfr: Path) -> None:
    """Every sampler reads the same clips over the grid (only the order differs)."""
    ds = VideoDataset([vfr], 2, frame_rate=10.0)
    expected = sorted(tuple(ds.clip_frames(i)) for i in range(len(ds)))
    for sampling in ("sequential", "uniform", "chunked", "gop_shuffle"):
        with Prefetcher(ds, batch_size=1, sampling=sampling, seed=1) as it:
            got = sorted(tuple(b.frame_indices[0].tolist()) for b in it)
        assert got == expected, sampling

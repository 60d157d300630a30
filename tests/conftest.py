"""Shared fixtures: test videos written once per session with PyAV, frames carrying their index."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

from tvl_async.cli.synthetic import VideoSpec, write_video


@dataclass(frozen=True)
class Video:
    """A generated test video: frame ``i`` shows the number ``i + offset``."""

    path: Path
    n_frames: int
    offset: int = 0


def _vfr_pts(n: int) -> list[int]:
    # irregular gaps between 25 ms and 75 ms (time base 1/1000)
    pts, t = [], 0
    for i in range(n):
        pts.append(t)
        t += 25 + (i * 37) % 51
    return pts


# name -> (file name, spec); every file has 48 frames unless stated
SPECS: dict[str, tuple[str, VideoSpec]] = {
    "h264_mp4": ("h264.mp4", VideoSpec(codec="libx264", bframes=3)),
    "h264_mkv": ("h264.mkv", VideoSpec(codec="libx264", bframes=2)),
    "h264_ts": ("h264.ts", VideoSpec(codec="libx264", bframes=2)),
    "hevc_mp4": ("hevc.mp4", VideoSpec(codec="libx265", bframes=3)),
    "vp9_webm": ("vp9.webm", VideoSpec(codec="libvpx-vp9")),
    "av1_mkv": ("av1.mkv", VideoSpec(codec="libsvtav1")),
    "mpeg4_avi": ("mpeg4.avi", VideoSpec(codec="mpeg4", bframes=2)),
    "mjpeg_mov": ("mjpeg.mov", VideoSpec(codec="mjpeg", pix_fmt="yuvj420p")),
    "vfr_mkv": (
        "vfr.mkv",
        VideoSpec(codec="libx264", time_base=Fraction(1, 1000), pts=_vfr_pts(48)),
    ),
    "vfr_mp4": (
        "vfr.mp4",
        VideoSpec(codec="libx264", time_base=Fraction(1, 1000), pts=_vfr_pts(48)),
    ),
    "start_mp4": ("start.mp4", VideoSpec(codec="libx264", start_pts=37)),
    "odd_mp4": ("odd.mp4", VideoSpec(codec="libx264", width=322, height=182)),
    "h264_10bit_mkv": ("h264_10bit.mkv", VideoSpec(codec="libx264", pix_fmt="yuv420p10le")),
    "hevc_10bit_mkv": ("hevc_10bit.mkv", VideoSpec(codec="libx265", pix_fmt="yuv420p10le")),
    "audio_first_mp4": ("audio_first.mp4", VideoSpec(codec="libx264", audio_first=True)),
    "raw_h264": ("raw.h264", VideoSpec(codec="libx264", bframes=2)),
}

EDIT_LIST_CUT = 5  # frames hidden by the edit list in edit.mp4


def write_edit_list_mp4(src: Path, dst: Path, cut: int) -> None:
    """Remux ``src`` so its first ``cut`` frames lie before an MP4 edit list (not shown)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        shift = int(cut / (s.average_rate * s.time_base))
        for p in inp.demux(s):
            if p.dts is None:
                continue
            p.pts -= shift
            p.dts -= shift
            p.stream = o
            out.mux(p)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def videos(video_dir: Path) -> dict[str, Video]:
    """Every test video of the matrix, written once per session."""
    out: dict[str, Video] = {}
    for name, (fname, spec) in SPECS.items():
        out[name] = Video(write_video(video_dir / fname, spec), spec.n_frames)
    edit = video_dir / "edit.mp4"
    write_edit_list_mp4(out["h264_mp4"].path, edit, EDIT_LIST_CUT)
    out["edit_list_mp4"] = Video(edit, 48 - EDIT_LIST_CUT, EDIT_LIST_CUT)
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test session gets its own index cache so tests never see a user's cache."""
    monkeypatch.setenv("TVL_ASYNC_CACHE", str(tmp_path_factory.getbasetemp() / "index-cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda`` tests without a GPU, unless TVL_ASYNC_REQUIRE_CUDA=1 (then they must run)."""
    if os.environ.get("TVL_ASYNC_REQUIRE_CUDA") == "1" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs an NVIDIA GPU (set TVL_ASYNC_REQUIRE_CUDA=1 to fail instead)"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def no_new_threads() -> Iterator[None]:
    """Fail if a test leaves a thread running."""
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            return
        time.sleep(0.02)
    raise AssertionError(f"threads left running: {[t.name for t in extra]}")

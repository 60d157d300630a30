"""CPU RGB frames are bit-identical to ``ffmpeg -i f -pix_fmt rgb24 -f rawvideo -`` (the real CLI).

Test files are written by the ffmpeg CLI itself from its ``testsrc2`` source (saturated colour
edges, where chroma handling shows): 8-bit BT.601 and BT.709, full range, 10-bit BT.709 (H.264),
10-bit BT.2020 (HEVC), 10-bit full range. PyAV's ``to_ndarray(format="rgb24")``, the former
conversion, is checked to differ from the CLI on 10-bit sources, so these tests fail on it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tvl_async import Prefetcher, VideoLoader

FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI (Debian: ffmpeg)")

W, H, N = 160, 96, 3
X265 = ["-x265-params", "log-level=error"]

# name -> (file, encoder options, (pix_fmt, AVColorSpace value, full range) as decoded);
# AVColorSpace: 1 BT.709, 6 SMPTE 170M (BT.601), 9 BT.2020 non-constant
SOURCES: dict[str, tuple[str, list[str], tuple[str, int, bool]]] = {
    "bt601_8": (
        "bt601_8.mp4",
        [
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-colorspace",
            "smpte170m",
            "-color_range",
            "tv",
        ],
        ("yuv420p", 6, False),
    ),
    "bt709_8": (
        "bt709_8.mp4",
        ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "tv"],
        ("yuv420p", 1, False),
    ),
    "bt709_8_full": (
        "bt709_8_full.mp4",
        ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_range", "pc"],
        ("yuvj420p", 1, True),
    ),
    "bt709_10": (
        "bt709_10.mkv",
        [
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p10le",
            "-colorspace",
            "bt709",
            "-color_range",
            "tv",
        ],
        ("yuv420p10le", 1, False),
    ),
    "bt2020_10": (
        "bt2020_10.mkv",
        [
            "-c:v",
            "libx265",
            "-pix_fmt",
            "yuv420p10le",
            "-colorspace",
            "bt2020nc",
            "-color_primaries",
            "bt2020",
            "-color_trc",
            "bt2020-10",
            "-color_range",
            "tv",
            *X265,
        ],
        ("yuv420p10le", 9, False),
    ),
    "bt709_10_full": (
        "bt709_10_full.mkv",
        [
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p10le",
            "-colorspace",
            "bt709",
            "-color_range",
            "pc",
        ],
        ("yuv420p10le", 1, True),
    ),
}
TEN_BIT = [k for k, v in SOURCES.items() if v[2][0].endswith("10le")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("colour")
    out = {}
    for name, (fname, opts, _) in SOURCES.items():
        p = folder / fname
        subprocess.run(
            [
                str(FFMPEG),
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={W}x{H}:rate=25",
                "-frames:v",
                str(N),
                *opts,
                str(p),
            ],
            check=True,
        )
        out[name] = p
    return out


def cli_rgb(path: Path, *extra: str) -> np.ndarray:
    """``[N, H, W, 3]`` frames as the ffmpeg CLI converts them."""
    raw = subprocess.run(
        [
            str(FFMPEG),
            "-v",
            "error",
            *extra,
            "-i",
            str(path),
            "-pix_fmt",
            "rgb24",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


@pytest.mark.parametrize("name", list(SOURCES))
def test_sources_are_what_they_claim(sources: dict[str, Path], name: str) -> None:
    pix_fmt, space, full = SOURCES[name][2]
    with av.open(str(sources[name])) as c:
        frame = next(c.decode(video=0))
    assert frame.format.name == pix_fmt
    assert int(frame.colorspace) == space
    assert (int(frame.color_range) == 2) == full  # AVCOL_RANGE_JPEG


@pytest.mark.parametrize("name", list(SOURCES))
def test_random_access_equals_ffmpeg_cli(sources: dict[str, Path], name: str) -> None:
    ref = cli_rgb(sources[name])
    assert ref.shape == (N, H, W, 3)
    with VideoLoader(sources[name]) as v:
        got = v.read_frames_at([2, 0, 1], layout="THWC").numpy()
    assert np.array_equal(got, ref[[2, 0, 1]])


@pytest.mark.parametrize("name", ["bt709_10", "bt2020_10", "bt601_8"])
def test_sequential_reading_and_prefetcher_equal_ffmpeg_cli(
    sources: dict[str, Path], name: str
) -> None:
    ref = cli_rgb(sources[name])
    with VideoLoader(sources[name]) as v:
        seq = np.stack([f.permute(1, 2, 0).numpy() for f in v.read_all_frames()])
    assert np.array_equal(seq, ref)
    with Prefetcher([sources[name]], seq_len=N, shuffle=False) as it:
        clip = next(iter(it))["default"][0].permute(0, 2, 3, 1).numpy()
    assert np.array_equal(clip, ref)


@pytest.mark.parametrize("name", TEN_BIT)
def test_former_conversion_differs_on_10_bit(sources: dict[str, Path], name: str) -> None:
    """PyAV's ``to_ndarray(format="rgb24")`` (the conversion used before) is not the CLI's on
    10-bit sources: the tests above would fail on it."""
    ref = cli_rgb(sources[name])
    with av.open(str(sources[name])) as c:
        old = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert np.abs(old.astype(int) - ref.astype(int)).max() > 10

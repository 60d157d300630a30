"""Frame-exact random and sequential access on every container and codec of the test matrix."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Video

from tvl_async import BackendUnavailableError, NoVideoStreamError, VideoLoader, VideoOpenError
from tvl_async.cli.synthetic import frame_index_of, write_video

MATRIX = [
    "h264_mp4",
    "h264_mkv",
    "h264_ts",
    "hevc_mp4",
    "vp9_webm",
    "av1_mkv",
    "mpeg4_avi",
    "mjpeg_mov",
    "vfr_mkv",
    "vfr_mp4",
    "start_mp4",
    "odd_mp4",
    "h264_10bit_mkv",
    "hevc_10bit_mkv",
    "audio_first_mp4",
    "raw_h264",
    "edit_list_mp4",
]


def shown(frames: torch.Tensor | list[torch.Tensor]) -> list[int]:
    return [frame_index_of(f) for f in frames]


@pytest.mark.parametrize("name", MATRIX)
def test_n_frames_is_exact(videos: dict[str, Video], name: str) -> None:
    v = videos[name]
    with VideoLoader(v.path) as loader:
        assert loader.n_frames == v.n_frames


@pytest.mark.parametrize("name", MATRIX)
def test_random_reversed_repeated_indices(videos: dict[str, Video], name: str) -> None:
    v = videos[name]
    n = v.n_frames
    rng = random.Random(name)
    requests = {
        "random": rng.sample(range(n), n),
        "reversed": list(range(n - 1, -1, -1)),
        "repeated": [7, 7, 3, n - 1, 7, 0, 0, n - 1],
        "first_last": [0, n - 1],
        "sparse": sorted(rng.sample(range(n), 5)),
    }
    with VideoLoader(v.path) as loader:
        for kind, req in requests.items():
            got = shown(list(loader.select_frames(req)))
            assert got == [i + v.offset for i in req], f"{name} {kind}"
        stacked = loader.read_frames_at(requests["random"][:10])
        assert shown(stacked) == [i + v.offset for i in requests["random"][:10]]


@pytest.mark.parametrize("name", MATRIX)
def test_sequential_read_to_eof(videos: dict[str, Video], name: str) -> None:
    v = videos[name]
    with VideoLoader(v.path) as loader:
        got = shown(list(loader.read_all_frames()))
        assert got == [i + v.offset for i in range(v.n_frames)]
        with pytest.raises(EOFError, match="end of video"):
            loader.read_frame()


@pytest.mark.parametrize("name", ["h264_mp4", "hevc_mp4", "vfr_mkv", "raw_h264"])
def test_seek_then_read(videos: dict[str, Video], name: str) -> None:
    v = videos[name]
    with VideoLoader(v.path) as loader:
        loader.seek_to_frame(30)
        assert shown([loader.read_frame(), loader.read_frame()]) == [30 + v.offset, 31 + v.offset]
        loader.seek_to_frame(2)  # backwards
        assert shown(loader.read_frames(3)) == [2, 3, 4]
        t = loader.frame_time(17)
        loader.seek(t)
        assert loader.tell() == 17
        assert frame_index_of(loader.read_frame()) == 17 + v.offset
        loader.seek(loader.frame_time(17) + 0.001)  # inside frame 17's display time
        assert loader.tell() == 17
        rest = shown(list(loader.remaining_frames()))
        assert rest == [i + v.offset for i in range(17, v.n_frames)]


@pytest.mark.parametrize("mode", ["auto", "seek", "stream"])
def test_read_modes_agree(videos: dict[str, Video], mode: str) -> None:
    req = [10, 11, 12, 40, 3, 3, 25]
    with VideoLoader(videos["h264_mp4"].path) as loader:
        out = loader.read_frames_at(req, mode=mode)  # type: ignore[arg-type]
        assert shown(out) == req


def test_stream_mode_decodes_whole_range_once(videos: dict[str, Video]) -> None:
    from tvl_async._backends.pyav import PyAVBackend
    from tvl_async._index import load_index

    index = load_index(videos["h264_mp4"].path)  # GOP 12
    backend = PyAVBackend()
    spaced = [13, 17, 21]  # one GOP: both modes decode 12..21
    assert backend.decode(index, spaced, mode="auto").n_decoded == 10
    assert backend.decode(index, spaced, mode="seek").n_decoded == 2 + 6 + 10
    assert backend.decode(index, [1, 46], mode="stream").n_decoded == 47
    assert backend.decode(index, [1, 46], mode="auto").n_decoded == 2 + 11
    backend.close()


def test_layouts_dtypes_and_ranges(videos: dict[str, Video]) -> None:
    path = videos["odd_mp4"].path
    with VideoLoader(path) as loader:
        assert (loader.width, loader.height) == (322, 182)
        tchw = loader.read_frames_at([1, 2], layout="TCHW")
        thwc = loader.read_frames_at([1, 2], layout="THWC")
        assert tchw.shape == (2, 3, 182, 322) and tchw.dtype == torch.uint8
        assert thwc.shape == (2, 182, 322, 3)
        assert torch.equal(tchw.permute(0, 2, 3, 1), thwc)
        assert int(tchw.max()) > 200  # 0-255 range
        with pytest.raises(ValueError, match=r"odd\.mp4: Invalid layout \('CHWT'\)"):
            loader.read_frames_at([1], layout="CHWT")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        with VideoLoader(path, dtype=dtype) as loader:
            f = loader.select_frame(5)
            assert f.shape == (3, 182, 322) and f.dtype == dtype
            assert float(f.min()) >= 0.0 and float(f.max()) <= 1.0 and float(f.max()) > 0.7
            assert frame_index_of(f) == 5


def test_metadata(videos: dict[str, Video]) -> None:
    with VideoLoader(videos["h264_mp4"].path) as loader:
        assert loader.frame_rate == pytest.approx(25.0)
        assert loader.duration == pytest.approx(48 / 25)
        assert loader.timestamps[1].item() == pytest.approx(0.04)
    with VideoLoader(videos["start_mp4"].path) as loader:
        assert loader.timestamps[0].item() == pytest.approx(37 / 25)
        assert loader.frame_time(0) == pytest.approx(1.48)
    with VideoLoader(videos["vfr_mkv"].path) as loader:
        gaps = torch.diff(loader.timestamps)
        assert float(gaps.min()) == pytest.approx(0.025) and float(gaps.max()) > 0.07


def test_negative_and_out_of_range_indices(videos: dict[str, Video]) -> None:
    path = videos["h264_mkv"].path
    with VideoLoader(path) as loader:
        assert frame_index_of(loader.select_frame(-1)) == 47
        with pytest.raises(
            IndexError,
            match=r"h264\.mkv: Invalid frame index \(48\)\. Supported values are 0\.\.47 ",
        ):
            loader.select_frame(48)
        with pytest.raises(IndexError, match=r"Invalid frame index \(-49\)"):
            list(loader.select_frames([0, -49]))
        with pytest.raises(
            TypeError,
            match=r"h264\.mkv: Invalid frame index \(1\.5\)\. Supported values are integers",
        ):
            loader.select_frame(1.5)  # type: ignore[arg-type]


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        VideoLoader(tmp_path / "missing.mp4")
    with pytest.raises(IsADirectoryError, match="directory"):
        VideoLoader(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoOpenError, match=r"empty\.mp4: the file is empty"):
        VideoLoader(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoOpenError, match=r"notes\.mp4"):
        VideoLoader(text)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    import av
    import numpy as np

    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=48000)
        for k in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
            )
            frame.sample_rate = 48000
            frame.pts = k * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(
        NoVideoStreamError, match=r"audio\.m4a: no video stream \(streams found: audio\)"
    ):
        VideoLoader(path)


def test_close_twice_and_use_after_close(videos: dict[str, Video]) -> None:
    loader = VideoLoader(videos["h264_mp4"].path)
    loader.close()
    loader.close()
    with pytest.raises(ValueError, match="closed"):
        loader.select_frame(0)


def test_loader_shared_between_threads(videos: dict[str, Video]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with VideoLoader(videos["h264_mp4"].path) as loader:

        def work(seed: int) -> bool:
            req = random.Random(seed).sample(range(48), 12)
            return shown(loader.read_frames_at(req)) == req

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(work, range(16)))


def test_small_generated_file(tmp_path: Path) -> None:
    path = write_video(tmp_path / "one.mp4", n_frames=1)
    with VideoLoader(path) as loader:
        assert loader.n_frames == 1
        assert frame_index_of(loader.select_frame(0)) == 0


def test_bad_arguments_name_the_file(videos: dict[str, Video]) -> None:
    v = videos["h264_mp4"]
    with VideoLoader(v.path) as loader:
        assert loader.read_frames_at([], layout="THWC").shape == (0, loader.height, loader.width, 3)
        assert loader.read_frames_at([]).shape == (0, 3, loader.height, loader.width)
        with pytest.raises(ValueError, match=r"h264\.mp4: Invalid seek time \(nan\)"):
            loader.seek(float("nan"))
        for bad in ("abc", None, True):
            with pytest.raises(TypeError, match=r"h264\.mp4: Invalid seek time .*seconds"):
                loader.seek(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"h264\.mp4: Invalid read_frames n \(2\.5\)"):
            loader.read_frames(2.5)  # type: ignore[arg-type]
        loader.seek(np.float32(0.0))  # numpy numbers are numbers
        assert loader.tell() == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_fails_at_construction(videos: dict[str, Video]) -> None:
    with pytest.raises(BackendUnavailableError, match=r"h264\.mp4: device 'cuda' asked for"):
        VideoLoader(videos["h264_mp4"].path, device="cuda")

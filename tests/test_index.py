"""The index: exact frame tables, keyframe targets, and the on-disk cache (hit, stale, corrupt)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Video

from tvl_async import _index as index_mod
from tvl_async import _index_cache as cache_mod
from tvl_async._index import build_index, cache_dir, find_sources, find_videos, load_index
from tvl_async.cli.synthetic import write_video


def test_frames_sorted_by_presentation(videos: dict[str, Video]) -> None:
    idx = load_index(videos["h264_mp4"].path)
    assert idx.timestamps_ok
    assert np.all(np.diff(idx.pts) > 0)
    assert idx.n_keys == 4 and list(np.flatnonzero(idx.is_keyframe)) == [0, 12, 24, 36]
    assert list(idx.gop_lengths()) == [12, 12, 12, 12]
    assert idx.codec == "h264" and (idx.width, idx.height) == (128, 96)
    assert idx.header_frames == 48


def test_audio_first_stream_is_skipped(videos: dict[str, Video]) -> None:
    idx = load_index(videos["audio_first_mp4"].path)
    assert idx.stream_index == 1 and idx.n_frames == 48


def test_edit_list_hides_frames(videos: dict[str, Video]) -> None:
    idx = load_index(videos["edit_list_mp4"].path)
    assert idx.n_frames == 43
    assert idx.header_frames == 48  # the header counts hidden frames too: not trusted
    assert idx.times[0] == pytest.approx(0.0)


def test_open_gop_leading_pictures_seek_to_previous_keyframe(videos: dict[str, Video]) -> None:
    idx = load_index(videos["hevc_mp4"].path)
    keys = np.flatnonzero(idx.is_keyframe)
    assert len(keys) >= 2
    for i in range(idx.n_frames):
        key_pts = idx.key_pts[idx.seek_key[i]]
        assert key_pts <= idx.pts[i], f"frame {i} would be decoded from a later keyframe"


def test_raw_stream_falls_back_to_decode_scan(videos: dict[str, Video]) -> None:
    idx = load_index(videos["raw_h264"].path)
    assert not idx.timestamps_ok
    assert idx.n_frames == 48
    assert idx.frame_rate == pytest.approx(25.0)


def test_cache_hit_skips_scan(videos: dict[str, Video], monkeypatch: pytest.MonkeyPatch) -> None:
    path = videos["h264_mkv"].path
    first = load_index(path)
    calls = []
    monkeypatch.setattr(
        index_mod, "build_index", lambda p, *a: calls.append(p) or build_index(p, *a)
    )
    second = load_index(path)
    assert calls == []
    assert np.array_equal(first.pts, second.pts) and second.codec == first.codec
    folder = cache_dir()
    assert folder is not None and any(folder.glob("*.npz"))


def test_stale_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(tmp_path / "v.mp4", n_frames=20)
    assert load_index(path).n_frames == 20
    write_video(path, n_frames=30)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_index(path).n_frames == 30


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mkv", n_frames=24)
    load_index(path)
    folder = cache_dir()
    assert folder is not None
    st = path.stat()
    entry = cache_mod.cache_file(folder, path.resolve(), st.st_size, st.st_mtime_ns)
    assert entry.exists()
    entry.write_bytes(b"garbage" * 10)
    assert load_index(path).n_frames == 24
    # and the entry was rewritten with a good one
    assert cache_mod.load_entry(entry, path.resolve(), st.st_size, st.st_mtime_ns) is not None


def test_cache_can_be_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVL_ASYNC_CACHE", "off")
    assert cache_dir() is None
    path = write_video(tmp_path / "v.mp4", n_frames=12)
    assert load_index(path).n_frames == 12


def test_frame_at_time(videos: dict[str, Video]) -> None:
    idx = load_index(videos["vfr_mkv"].path)
    for i in (0, 5, 47):
        assert idx.frame_at_time(float(idx.times[i])) == i
        assert idx.frame_at_time(float(idx.times[i]) + 0.01) == i
    assert idx.frame_at_time(-5.0) == 0
    assert idx.frame_at_time(1e9) == 47


def test_unreadable_cache_folder_indexes_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache folder that cannot be read (mode 000 for a non-root user; emulated here, since
    root reads anything): the file is indexed anyway, with a warning, never a PermissionError."""
    path = write_video(tmp_path / "v.mp4", n_frames=12)
    locked = tmp_path / "locked"
    monkeypatch.setenv("TVL_ASYNC_CACHE", str(locked))
    real_exists = Path.exists

    def exists(self: Path, *args: object, **kwargs: object) -> bool:
        if locked in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setattr(
        cache_mod,
        "save_entry",
        lambda index, target: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied", str(target))
        ),
    )
    assert load_index(path).n_frames == 12
    assert "cannot write index cache" in caplog.text


def test_threads_indexing_one_file_share_the_cache_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    path = write_video(tmp_path / "v.mp4", n_frames=12)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_index(path).n_frames)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [12] * 6
    assert "cannot write index cache" not in caplog.text


def test_find_videos_leaves_hidden_names_in_folders_out(tmp_path: Path) -> None:
    """A killed writer's temporary (``.x.tmp.mp4``) and anything in a hidden folder are not
    listed from a folder; a hidden file given by its path is kept."""
    for rel in ("a.mp4", "sub/b.mkv", ".x.tmp.mp4", "sub/.y.mp4", ".git/c.mp4", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert find_videos(tmp_path) == [tmp_path / "a.mp4", tmp_path / "sub" / "b.mkv"]
    hidden = tmp_path / ".x.tmp.mp4"
    assert find_videos([hidden, tmp_path / "sub"]) == [hidden, tmp_path / "sub" / "b.mkv"]
    # a folder that is itself hidden, given by its path, is listed (what is below it counts)
    assert find_videos(tmp_path / ".git") == [tmp_path / ".git" / "c.mp4"]


def test_folder_urls_leave_hidden_names_out() -> None:
    """The same for a folder URL (fsspec's in-memory filesystem stands in for S3)."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    root = "tvl-hidden-test"
    try:
        for rel in ("a.mp4", "sub/b.mkv", ".x.tmp.mp4", "sub/.y.mp4", ".cache/c.mp4"):
            fs.pipe(f"/{root}/{rel}", b"")
        assert find_sources(f"memory://{root}/") == [
            f"memory://{root}/a.mp4",
            f"memory://{root}/sub/b.mkv",
        ]
        assert find_sources(f"memory://{root}/.x.tmp.mp4") == [f"memory://{root}/.x.tmp.mp4"]
    finally:
        fs.rm(f"/{root}", recursive=True)

"""The consolidated index of a dataset: exact records, files re-indexed alone, damaged entries,
cache off, builds in processes from a main module, and one build shared by several processes."""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Video

from tvl_async import VideoDataset
from tvl_async import _index_sets as sets_mod
from tvl_async._index import IndexFailure, build_index, cache_dir, load_indexes
from tvl_async._index_model import ARRAY_FIELDS, VideoIndex
from tvl_async._index_store import load
from tvl_async.cli.synthetic import write_video


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder per test, so that its entries can be counted."""
    monkeypatch.setenv("TVL_ASYNC_CACHE", str(tmp_path / "cache"))


FIELDS = [f.name for f in dataclasses.fields(VideoIndex) if f.name != "_frame_of_pts"]


def assert_same(a: VideoIndex, b: VideoIndex) -> None:
    """Every field equal; arrays equal in value, dtype and shape."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y), name
        else:
            assert x == y and type(x) is type(y), (name, x, y)


def small_set(folder: Path, n: int, frames: int = 12) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        str(write_video(folder / f"v{k}.mp4", n_frames=frames + k, width=64, height=48, gop=4))
        for k in range(n)
    ]


def spy_builds(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the files each build is asked for."""
    calls: list[list[str]] = []
    real = sets_mod.build_many

    def spy(paths: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(list(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(sets_mod, "build_many", spy)
    return calls


def entry_files() -> list[Path]:
    folder = cache_dir()
    assert folder is not None
    return sorted(folder.glob("*.tvlidx"))


def open_all(files: list[str], **options: Any) -> list[VideoIndex]:
    found = load_indexes(files, consolidate=True, workers=1, **options)
    assert all(isinstance(r, VideoIndex) for r in found)
    return found  # type: ignore[return-value]


def test_loaded_records_equal_fresh_builds(
    videos: dict[str, Video], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every codec and container of the test matrix (edit lists, VFR, a raw stream indexed by
    decoding, 10-bit, audio first): the records read back equal fresh builds, field by field."""
    files = [str(v.path) for v in videos.values()]
    first = open_all(files)
    calls = spy_builds(monkeypatch)
    again = open_all(files)
    assert calls == []
    for path, a, b in zip(files, first, again, strict=True):
        fresh = build_index(path)
        assert_same(a, fresh)
        assert_same(b, fresh)
        assert not b.pts.flags.writeable  # views into the mapped entry
    rotated = open_all(files, autorotate=False)
    assert calls == [] and all(not r.autorotate for r in rotated)


def test_changed_file_is_reindexed_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = small_set(tmp_path / "set", 5)
    before = open_all(files)
    write_video(files[2], n_frames=31, width=64, height=48, gop=4)
    os.utime(files[2], ns=(time.time_ns(), time.time_ns() + 10**9))
    calls = spy_builds(monkeypatch)
    after = open_all(files)
    assert calls == [[files[2]]]
    assert [i.n_frames for i in after] == [12, 13, 31, 15, 16]
    for k in (0, 1, 3, 4):
        assert_same(after[k], before[k])
    assert_same(after[2], build_index(files[2]))
    assert open_all(files)[2].n_frames == 31 and calls == [[files[2]]]  # rewritten: a hit
    assert len(entry_files()) == 1


def test_added_and_removed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = small_set(tmp_path / "set", 4)
    open_all(files[:3])
    calls = spy_builds(monkeypatch)
    assert [i.n_frames for i in open_all(files)] == [12, 13, 14, 15]
    assert calls == [[files[3]]]  # the added file alone
    os.unlink(files[1])
    assert [i.n_frames for i in open_all([files[0], files[2]])] == [12, 14]
    assert calls == [[files[3]]]  # a subset: nothing to build
    open_all([files[0], files[3], files[2]])  # any order
    assert calls == [[files[3]]]
    write_video(files[1], n_frames=20, width=64, height=48, gop=4)  # back, changed
    assert [i.n_frames for i in open_all(files)] == [12, 20, 14, 15]
    assert calls == [[files[3]], [files[1]]]
    (entry,) = entry_files()
    loaded = load(entry, str(tmp_path / "set"))
    assert loaded is not None and sorted(loaded.sources) == sorted(files)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_offsets"])
def test_damaged_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    files = small_set(tmp_path / "set", 3)
    open_all(files)
    (entry,) = entry_files()
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"garbage" * 10)
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    else:  # a valid header whose frame offsets run past the arrays
        entry.write_bytes(data.replace(b'"frame_off": ["<i8", [4]', b'"frame_off": ["<i8", [9]'))
    calls = spy_builds(monkeypatch)
    assert [i.n_frames for i in open_all(files)] == [12, 13, 14]
    assert calls == [files]
    assert load(entry, str(tmp_path / "set")) is not None  # rewritten whole
    open_all(files)
    assert calls == [files]


def test_cache_off_builds_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = small_set(tmp_path / "set", 2)
    monkeypatch.setenv("TVL_ASYNC_CACHE", "off")
    calls = spy_builds(monkeypatch)
    for _ in range(2):
        assert [i.n_frames for i in open_all(files)] == [12, 13]
    assert calls == [files, files]


def test_failures_are_not_stored_and_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = small_set(tmp_path / "set", 2)
    bad = tmp_path / "set" / "bad.mp4"
    bad.write_text("not a video\n" * 20)
    found = load_indexes([files[0], str(bad), files[1]], consolidate=True, on_error="skip")
    assert isinstance(found[1], IndexFailure) and found[1].path == str(bad)
    assert str(bad) in str(found[1].error)
    with pytest.raises(Exception, match=r"bad\.mp4"):
        load_indexes([files[0], str(bad)], consolidate=True)
    calls = spy_builds(monkeypatch)
    load_indexes([files[0], str(bad), files[1]], consolidate=True, on_error="skip")
    assert calls == [[str(bad)]]  # retried alone, the good files come from the entry


def test_dataset_opens_from_the_entry_and_keeps_bytes_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_set(tmp_path / "set", 3)
    ds = VideoDataset(files, 4, progress=True)
    assert "3/3" in capsys.readouterr().err  # the tqdm bar
    calls = spy_builds(monkeypatch)
    blob = Path(files[0]).read_bytes()
    again = VideoDataset([blob, *files], 4)
    assert calls == [] and len(again) == len(ds) + 9
    (entry,) = entry_files()
    loaded = load(entry, str(tmp_path / "set"))
    assert loaded is not None and not any(s.startswith("<bytes") for s in loaded.sources)


def test_held_lock_times_out_to_a_local_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process that holds the lock for too long: this one builds for itself, warned."""
    files = small_set(tmp_path / "set", 2)
    folder = cache_dir()
    assert folder is not None
    target = sets_mod.entry_file(folder, str(tmp_path / "set"), None)
    target.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TVL_ASYNC_INDEX_LOCK_TIMEOUT", "0.3")
    with open(target.with_suffix(".lock"), "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING):
            assert [i.n_frames for i in open_all(files)] == [12, 13]
        assert 0.3 <= time.monotonic() - t0 < 10
    assert "indexing here without the lock" in caplog.text


MAIN_SCRIPT = """
import sys
from tvl_async import _index_pool
from tvl_async._index import load_indexes

if __name__ == "__main__":
    _index_pool.PROCESS_MIN_FILES, _index_pool.PROBE_FILES = 3, 1
    _index_pool.PROCESS_MIN_SECONDS = 0.0
    used = []
    real = _index_pool._run_processes
    _index_pool._run_processes = lambda *a, **k: used.append(1) or real(*a, **k)
    found = load_indexes(sys.argv[1:], consolidate=True, workers=2, on_error="skip")
    print(len(used), [getattr(r, "n_frames", None) or r.cause for r in found])
"""


@pytest.mark.timeout(120)
def test_processes_build_from_a_main_module(tmp_path: Path) -> None:
    """A script's main module builds in worker processes (forkserver); per-file failures come
    back as from threads, naming the file."""
    files = small_set(tmp_path / "set", 4)
    bad = tmp_path / "set" / "bad.mp4"
    bad.write_text("not a video\n" * 20)
    script = tmp_path / "main.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script), *files, str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert r.returncode == 0, r.stderr
    used, found = r.stdout.strip().split(" ", 1)
    assert used == "1"
    assert found.startswith("[12, 13, 14, 15, ") and f"VideoOpenError: {bad}: " in found


def _rank(files: list[str], cache: str, log_path: str, barrier: Any) -> None:
    """One process of a job: count its builds in ``log_path``, open the files with the others."""
    os.environ["TVL_ASYNC_CACHE"] = cache
    from tvl_async import _index_sets

    real = _index_sets.build_many

    def counted(paths: list[str], *args: Any, **kwargs: Any) -> Any:
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()} {len(paths)}\n")
        time.sleep(1.0)  # hold the lock while the other processes arrive
        return real(paths, *args, **kwargs)

    _index_sets.build_many = counted  # type: ignore[assignment]
    try:
        barrier.wait(60)
        found = load_indexes(files, consolidate=True, workers=1)
    finally:
        _index_sets.build_many = real  # type: ignore[assignment]
    assert [r.n_frames for r in found] == [12 + k for k in range(len(files))]  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_processes_opening_one_dataset_share_one_build(tmp_path: Path) -> None:
    """Three processes (two spawned and this one) open the same files with one cache folder at
    once: exactly one builds, the others wait on the lock and load its entry."""
    files = small_set(tmp_path / "set", 4)
    log_path = tmp_path / "builds.log"
    cache = str(cache_dir())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_rank, args=(files, cache, str(log_path), barrier)) for _ in "ab"]
    for p in procs:
        p.start()
    try:
        _rank(files, cache, str(log_path), barrier)
    finally:
        for p in procs:
            p.join(100)
    assert [p.exitcode for p in procs] == [0, 0]
    builds = log_path.read_text().splitlines()
    assert len(builds) == 1 and builds[0].endswith(" 4"), builds


def test_small_builds_stay_in_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """70 quick files: the timed first files show that a pool would not pay off."""
    from tvl_async import _index_pool

    (src,) = small_set(tmp_path / "src", 1)
    folder = tmp_path / "links"
    folder.mkdir()
    files = []
    for k in range(_index_pool.PROCESS_MIN_FILES + 6):
        os.link(src, folder / f"l{k:03d}.mp4")
        files.append(str(folder / f"l{k:03d}.mp4"))
    monkeypatch.setattr(
        _index_pool, "_run_processes", lambda *a, **k: pytest.fail("processes started")
    )
    found = load_indexes(files, consolidate=True, workers=2)
    assert [r.n_frames for r in found] == [12] * len(files)  # type: ignore[union-attr]


def test_workers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tvl_async._index_pool import default_workers

    monkeypatch.setenv("TVL_ASYNC_INDEX_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("TVL_ASYNC_INDEX_WORKERS", "zero")
    with pytest.raises(ValueError, match=r"TVL_ASYNC_INDEX_WORKERS \('zero'\)"):
        default_workers()


def test_the_caches_store_every_array_field_of_the_index() -> None:
    arrays = [f.name for f in dataclasses.fields(VideoIndex) if f.type == "np.ndarray"]
    assert sorted(arrays) == sorted(ARRAY_FIELDS) and len(ARRAY_FIELDS) == 10

"""Opening the indexes of a dataset of local files: one consolidated cache entry, one build.

:func:`load_local_many` stats every file (``os.stat``; threads for large lists, which helps on
network file systems), loads the consolidated entry of their folder (:mod:`tvl_async.
_index_store`) and uses each record whose ``(size, mtime_ns, inode)`` still matches. Files that
are new or changed are built alone (:func:`~tvl_async._index_pool.build_many`: processes across
the cores), and the entry is rewritten atomically. The build happens under an exclusive lock
(``fcntl.flock`` on ``<entry>.lock`` next to the entry), so when the ranks of a ``torchrun`` job
open the same files with the same cache folder, one builds and the others wait for it, then load
its entry. The wait is bounded (:data:`LOCK_TIMEOUT` seconds, or
``TVL_ASYNC_INDEX_LOCK_TIMEOUT``); past it, or where the cache folder
cannot be locked, a process builds for itself, with a warning. Functions here block (stat, build,
lock) and may run in any thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tvl_async._checks import env_number
from tvl_async._index_cache import cache_dir
from tvl_async._index_model import VideoIndex
from tvl_async._index_pool import Result, build_many
from tvl_async._index_store import Entry, entry_file, file_key, load, save

try:
    import fcntl
except ImportError:  # not POSIX: no lock (each process builds what it lacks)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Seconds a process waits for another one building the same entry before building itself
#: (``TVL_ASYNC_INDEX_LOCK_TIMEOUT`` overrides it).
LOCK_TIMEOUT = 3600.0
#: Files per stat thread; lists this long or longer are stat-ed by several threads.
_STAT_CHUNK = 4096

Key = tuple[int, int, int]


def load_local_many(
    paths: Sequence[str],
    *,
    stream_index: int | None,
    autorotate: bool,
    timeout: float | None,
    workers: int | None,
    bar: Any = None,
) -> list[Result]:
    """The index of each local file, from the consolidated entry where it is fresh, built
    otherwise (and the entry rewritten); results in the order given; blocks.

    Args:
        paths: local video files (not URLs or bytes).
        stream_index, autorotate: as for :func:`tvl_async._index.load_index`.
        timeout: seconds one file may take to build (None: no limit).
        workers: build processes (None: one per core; 1: one thread of this process).
        bar: a progress bar counting files (cached ones at once), or None.
    """
    folder = cache_dir()
    if folder is None:  # TVL_ASYNC_CACHE=off: build everything, store nothing
        built = build_many(paths, stream_index, workers=workers, timeout=timeout, bar=bar)
        return [_rotated(r, autorotate) for r in built]
    absolute = [os.path.abspath(p) for p in paths]
    location = os.path.commonpath(sorted({os.path.dirname(p) for p in absolute}))
    target = entry_file(folder, location, stream_index)
    keys = stat_all(absolute)
    entry = _load(target, location)
    rows = _match(entry, absolute, keys)
    built_at: dict[int, Result] = {}
    if any(r is None for r in rows):
        with _locked(target) as held:
            if held:  # another process may have built it while we waited
                entry = _load(target, location)
                rows = _match(entry, absolute, keys)
            missing = [k for k, r in enumerate(rows) if r is None]
            if bar is not None:
                bar.update(len(paths) - len(missing))
            if missing:  # else: built by the process that held the lock
                todo = [paths[k] for k in missing]
                log.info("%s: indexing %d of %d file(s)", location, len(todo), len(paths))
                built = build_many(todo, stream_index, workers=workers, timeout=timeout, bar=bar)
                built_at = dict(zip(missing, built, strict=True))
                try:
                    _save(target, location, entry, absolute, keys, rows, built_at)
                except OSError as e:
                    log.warning("cannot write index cache %s: %s", target, e)
    elif bar is not None:
        bar.update(len(paths))
    out: list[Result] = []
    collecting = gc.isenabled()
    gc.disable()  # 10^5 new records: no collections of the whole heap while they are made
    try:
        for k, r in enumerate(rows):
            if r is not None and entry is not None:
                out.append(entry.index(r, autorotate))
            else:
                out.append(_rotated(built_at[k], autorotate))
    finally:
        if collecting:
            gc.enable()
    return out


def stat_all(paths: Sequence[str]) -> list[Key | None]:
    """``(size, mtime_ns, inode)`` of each readable regular non-empty file, None for anything
    else; long lists are split over threads (``os.stat`` releases the GIL); blocks."""

    def chunk(part: Sequence[str]) -> list[Key | None]:
        return [_key(p) for p in part]

    if len(paths) < 2 * _STAT_CHUNK:
        return chunk(paths)
    parts = [paths[k : k + _STAT_CHUNK] for k in range(0, len(paths), _STAT_CHUNK)]
    with concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="tvl-async-stat") as ex:
        return [key for part in ex.map(chunk, parts) for key in part]


def _key(path: str) -> Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or not os.access(path, os.R_OK):
        return None
    return file_key(st)


def _rotated(r: Result, autorotate: bool) -> Result:
    return r.with_autorotate(autorotate) if isinstance(r, VideoIndex) else r


def _load(target: Path, location: str) -> Entry | None:
    try:
        return load(target, location)
    except Exception as e:  # any damage means: rebuild
        log.info("index cache entry %s is unreadable (%s: %s); rebuilding", target, type(e), e)
        return None


def _match(entry: Entry | None, sources: list[str], keys: list[Key | None]) -> list[int | None]:
    if entry is None:
        return [None] * len(sources)
    return [None if k is None else entry.row_of(s, k) for s, k in zip(sources, keys, strict=True)]


def _save(
    target: Path,
    location: str,
    entry: Entry | None,
    sources: list[str],
    keys: list[Key | None],
    rows: list[int | None],
    built_at: dict[int, Result],
) -> None:
    """Rewrite the entry: the files asked for that have an index, plus the entry's other
    records whose files are unchanged (records of deleted or changed files are dropped)."""
    items: dict[str, tuple[str, Key, VideoIndex]] = {}
    if entry is not None:
        asked = set(sources)
        others = [s for s in entry.sources if s not in asked]
        for s, key in zip(others, stat_all(others), strict=True):
            r = entry.row_of(s, key) if key is not None else None
            if r is not None and key is not None:
                items[s] = (s, key, entry.index(r, True))
    for k, (s, key) in enumerate(zip(sources, keys, strict=True)):
        r = rows[k]
        if key is None:
            continue
        if r is not None and entry is not None:
            items[s] = (s, key, entry.index(r, True))
        elif isinstance(built_at.get(k), VideoIndex):
            items[s] = (s, key, built_at[k])  # type: ignore[assignment]
    save(target, location, list(items.values()))


@contextlib.contextmanager
def _locked(target: Path, wait: float | None = None) -> Iterator[bool]:
    """Hold the exclusive lock of ``target``'s entry; yields False when it could not be had
    (no ``fcntl``, a folder that cannot be written or locked, or ``wait`` seconds passed)."""
    if wait is None:
        wait = env_number("TVL_ASYNC_INDEX_LOCK_TIMEOUT", LOCK_TIMEOUT, 0.0)
    lock_path = target.with_suffix(".lock")
    try:
        if fcntl is None:
            raise OSError("no fcntl on this platform")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a+b")  # noqa: SIM115 (closed below)
    except OSError as e:
        log.warning("cannot lock index cache %s (%s); indexing without the lock", lock_path, e)
        yield False
        return
    with f:
        deadline, announced = time.monotonic() + wait, False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("%s: another process is indexing; waiting up to %g s", lock_path, wait)
                    announced = True
                if time.monotonic() > deadline:
                    log.warning(
                        "waited %g s for another process to index (lock %s); indexing here "
                        "without the lock",
                        wait,
                        lock_path,
                    )
                    yield False
                    return
                time.sleep(0.05)
            except OSError as e:  # a file system without locks
                log.warning("cannot lock index cache %s (%s); indexing without it", lock_path, e)
                yield False
                return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)

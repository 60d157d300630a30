"""The video index: every frame of a file in presentation order, found by demuxing once.

:func:`load_index` indexes one file (ffmpeg's best video stream unless ``stream_index`` says
otherwise), from the on-disk cache when it can (:mod:`tvl_async._index_cache`), else by building
it (:mod:`tvl_async._index_build`). :func:`load_indexes` indexes many files in parallel, in a pool
of daemon threads (FFmpeg releases the GIL while it demuxes), with an optional progress bar, a
time limit per file, and bad files either raised or left out. The record itself is
:class:`~tvl_async._index_model.VideoIndex`; opening and stream choice are in
:mod:`tvl_async._index_open`. Functions here block on file I/O and may run in any thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvl_async import _index_cache
from tvl_async._index_build import build_index, orientation_of
from tvl_async._index_cache import cache_dir
from tvl_async._index_model import INDEX_VERSION, NO_TS, ORIENTATIONS, VideoIndex
from tvl_async._index_open import (
    check_readable,
    describe_video_streams,
    first_video_stream,
    open_container,
    select_video_stream,
    stat_source,
    survive_new_streams,
)
from tvl_async._source import (
    is_buffer,
    is_url,
    list_url_folder,
    local_path,
    remember_options,
    source_name,
)

__all__ = [
    "INDEX_TIMEOUT",
    "INDEX_VERSION",
    "NO_TS",
    "ORIENTATIONS",
    "VIDEO_SUFFIXES",
    "IndexFailure",
    "VideoIndex",
    "build_index",
    "cache_dir",
    "check_readable",
    "describe_video_streams",
    "find_videos",
    "first_video_stream",
    "load_index",
    "load_indexes",
    "open_container",
    "orientation_of",
    "select_video_stream",
    "survive_new_streams",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".ts", ".m4v", ".mpg", ".mpeg", ".flv")
#: Seconds one file may take to index before it counts as failed (a read that never returns).
INDEX_TIMEOUT = 300.0
ON_ERROR = ("raise", "skip")


def load_index(
    path: str | os.PathLike[str],
    *,
    cache: bool = True,
    stream_index: int | None = None,
    autorotate: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> VideoIndex:
    """Index ``path``, from the on-disk cache when a fresh entry exists; blocks.

    Args:
        path: the video file, or an fsspec URL (read by byte ranges).
        cache: use the on-disk cache (``TVL_ASYNC_CACHE``).
        stream_index: the video stream, as an index among all the file's streams; None picks
            ffmpeg's best video stream.
        autorotate: frames in displayed orientation (the display matrix applied); False gives
            the stored orientation (:attr:`VideoIndex.width`/``height`` follow).
        storage_options: fsspec options for a URL ``path`` (credentials, an endpoint),
            remembered for it in this process.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the path cannot be read.
        VideoOpenError: not a regular file, not a video, corrupt, or no frames (subclasses
            name the exact cause).
        ValueError: ``stream_index`` is not a video stream (the video streams are listed).
    """
    remember_options(os.fspath(path), storage_options)
    p, size, version = stat_source(path)
    folder = cache_dir() if cache and not is_buffer(p) else None  # bytes: nothing to key on
    target = _index_cache.cache_file(folder, p, size, version, stream_index) if folder else None
    index = None
    if target is not None:
        index = _index_cache.load_entry(target, p, size, version, stream_index)
    if index is None:
        index = build_index(p, stream_index)
        if target is not None:
            try:
                _index_cache.save_entry(index, target)
            except OSError as e:
                log.warning("cannot write index cache %s: %s", target, e)
    return index.with_autorotate(autorotate)


@dataclass(frozen=True)
class IndexFailure:
    """A file :func:`load_indexes` could not index.

    Attributes:
        path: the file as given.
        error: the exception (its message names the file).
    """

    path: str
    error: BaseException

    @property
    def cause(self) -> str:
        """One line: the exception's type and message."""
        return f"{type(self.error).__name__}: {self.error}"


def load_indexes(
    paths: Iterable[str | os.PathLike[str]],
    *,
    cache: bool = True,
    stream_index: int | None = None,
    autorotate: bool = True,
    on_error: str = "raise",
    progress: bool = False,
    timeout: float | None = INDEX_TIMEOUT,
    workers: int | None = None,
) -> list[VideoIndex | IndexFailure]:
    """:func:`load_index` for each path, in parallel; results in the order given; blocks.

    Args:
        paths: video files.
        cache, stream_index, autorotate: as for :func:`load_index`.
        on_error: ``"raise"``: the first failure (in the order given) is raised, its message
            naming the file; ``"skip"``: failures come back as :class:`IndexFailure` entries.
        progress: show a tqdm progress bar on stderr (needs ``tqdm``).
        timeout: seconds one file may take (None: no limit); a file over it fails with
            ``TimeoutError`` and its thread is abandoned (a daemon thread: it cannot keep the
            interpreter alive).
        workers: indexing threads (None: up to 2 per core, at most 16).

    Raises:
        ValueError: a bad ``on_error``, ``timeout`` or ``workers``.
        ImportError: ``progress=True`` without tqdm installed.
    """
    if on_error not in ON_ERROR:
        raise ValueError(
            f"Invalid on_error ({on_error}). Supported values are {', '.join(ON_ERROR)}"
        )
    if timeout is not None and not timeout > 0:
        raise ValueError(
            f"Invalid index timeout ({timeout}). Supported values are seconds > 0 or None"
        )
    items = [os.fspath(p) for p in paths]
    n_workers = workers or min(16, 2 * (os.cpu_count() or 1))
    if n_workers < 1:
        raise ValueError(f"Invalid workers ({workers}). Supported values are ints >= 1 or None")

    def work(path: str) -> VideoIndex:
        return load_index(path, cache=cache, stream_index=stream_index, autorotate=autorotate)

    bar = _progress_bar(len(items)) if progress else None
    try:
        results = _run_pool(work, items, min(n_workers, max(len(items), 1)), timeout, bar)
    finally:
        if bar is not None:
            bar.close()
    if on_error == "raise":
        for r in results:
            if isinstance(r, IndexFailure):
                if r.path not in str(r.error) and str(Path(r.path).resolve()) not in str(r.error):
                    r.error.add_note(f"while indexing '{r.path}'")
                raise r.error
    return results


def index_files(
    paths: list[str], **options: Any
) -> tuple[list[str], list[VideoIndex], list[tuple[str, str]]]:
    """:func:`load_indexes` for a dataset: the files that could be indexed, their indexes, and
    ``(path, cause)`` of the others, each warned about once (``UserWarning``); blocks.

    Raises:
        ValueError: none of the files could be indexed (naming the first and its cause).
    """
    found = load_indexes(paths, **options)
    failures = [r for r in found if isinstance(r, IndexFailure)]
    for r in failures:
        warnings.warn(
            f"leaving out '{r.path}': it cannot be indexed ({r.cause})", UserWarning, stacklevel=4
        )
    if len(failures) == len(found):
        first = failures[0]
        raise ValueError(
            f"none of the {len(found)} file(s) could be indexed; the first: '{first.path}' "
            f"({first.cause})"
        )
    kept = [(p, r) for p, r in zip(paths, found, strict=True) if isinstance(r, VideoIndex)]
    return [p for p, _ in kept], [r for _, r in kept], [(r.path, r.cause) for r in failures]


def _progress_bar(total: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ImportError("progress=True needs tqdm (pip install tqdm)") from e
    return tqdm(total=total, desc="indexing", unit="file")


def _run_pool(
    work: Any, items: list[str], n_workers: int, timeout: float | None, bar: Any
) -> list[VideoIndex | IndexFailure]:
    """Run ``work(item)`` on daemon threads; wait in short slices, failing items over
    ``timeout`` seconds (their thread is abandoned and replaced)."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for k in range(len(items)):
        todo.put(k)
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    results: dict[int, VideoIndex | IndexFailure] = {}
    started: dict[int, float] = {}
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                k = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                started[k] = time.monotonic()
            try:
                r: VideoIndex | IndexFailure = work(items[k])
            except Exception as e:
                r = IndexFailure(items[k], e)
            with lock:
                started.pop(k, None)
                if k in results:  # timed out meanwhile: this thread was replaced
                    return
                results[k] = r
            done.put(k)

    def spawn() -> None:
        threading.Thread(target=worker, name="tvl-async-index", daemon=True).start()

    for _ in range(n_workers):
        spawn()
    resolved = 0
    while resolved < len(items):
        try:
            done.get(timeout=0.05)
            resolved += 1
            if bar is not None:
                bar.update(1)
        except queue.Empty:
            pass
        if timeout is None:
            continue
        now = time.monotonic()
        with lock:
            late = [k for k, t0 in started.items() if now - t0 > timeout]
            for k in late:
                started.pop(k)
                results[k] = IndexFailure(
                    items[k],
                    TimeoutError(
                        f"{items[k]}: indexing took longer than {timeout:g} s (a read that does "
                        f"not return?); the file is left out"
                    ),
                )
        for _ in late:
            done.put(-1)
            spawn()
    return [results[k] for k in range(len(items))]


def find_videos(items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, by :data:`VIDEO_SUFFIXES`) into a list of files:
    files as given, each folder's videos sorted by path; blocks on listing folders (no file is
    opened: a FIFO named ``x.mp4`` is listed, and refused later by :func:`check_readable`).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: nothing found.
    """
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(2, "No such file or folder", str(p))
    if not out:
        raise ValueError(
            f"no video files given (got {[str(i) for i in items]}; folders are "
            f"searched for {' '.join(VIDEO_SUFFIXES)})"
        )
    return out


def find_sources(
    items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """:func:`find_videos` for paths and fsspec URLs: a folder URL (``s3://bucket/videos/``) is
    listed like a local folder (videos only, recursive, sorted); other URLs are kept as given.
    ``storage_options`` are remembered for every URL (``tvl_async._source``); blocks.

    Raises:
        FileNotFoundError: a local path does not exist. ValueError: nothing found.
    """
    single = isinstance(items, (str, os.PathLike, bytes, bytearray, memoryview))
    given = [items] if single or hasattr(items, "read") else list(items)  # type: ignore[arg-type]
    out: list[str] = []
    for item in given:
        text = local_path(source_name(item))
        if is_buffer(text):
            out.append(text)
            continue
        if not is_url(text):
            out.extend(str(p) for p in find_videos([text]))
            continue
        remember_options(text, storage_options)
        listed = list_url_folder(text, VIDEO_SUFFIXES) if text.endswith("/") else None
        out.extend([text] if listed is None else listed)
    if not out:
        raise ValueError(f"no video files given (got {[str(i) for i in given]})")
    return out

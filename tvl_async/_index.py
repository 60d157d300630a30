"""The video index: every frame of a file in presentation order, found by demuxing once.

:func:`load_index` indexes one file (ffmpeg's best video stream unless ``stream_index`` says
otherwise), from the on-disk cache when it can (:mod:`tvl_async._index_cache`), else by building
it (:mod:`tvl_async._index_build`). :func:`load_indexes` indexes many files in parallel, in a pool
of daemon threads (FFmpeg releases the GIL while it demuxes), with an optional progress bar, a
time limit per file, and bad files either raised or left out; for a dataset
(``consolidate=True``, :func:`index_files`) local files share one cache entry per folder,
built across processes by one process at a time (:mod:`tvl_async._index_sets`). The record itself is
:class:`~tvl_async._index_model.VideoIndex`; opening and stream choice are in
:mod:`tvl_async._index_open`. Functions here block on file I/O and may run in any thread.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tvl_async import _index_cache
from tvl_async._checks import invalid_value
from tvl_async._config import ON_ERROR, OnError
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
from tvl_async._index_pool import IndexFailure, build_many, progress_bar, run_threads
from tvl_async._index_sets import load_local_many
from tvl_async._source import (
    is_buffer,
    is_hidden,
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


def load_indexes(
    paths: Iterable[str | os.PathLike[str]],
    *,
    cache: bool = True,
    stream_index: int | None = None,
    autorotate: bool = True,
    on_error: OnError = "raise",
    progress: bool = False,
    timeout: float | None = INDEX_TIMEOUT,
    workers: int | None = None,
    consolidate: bool = False,
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
        workers: indexing threads (None: up to 2 per core, at most 16); with ``consolidate``,
            the processes building local files (None: ``TVL_ASYNC_INDEX_WORKERS``, else one
            per core; 1: one thread).
        consolidate: local files use one consolidated cache entry for their folder
            (:mod:`tvl_async._index_sets`: a changed file is re-indexed alone, the build is
            spread over processes and shared by the processes opening the same files); URLs
            and bytes are indexed one by one as without it.

    Raises:
        ValueError: a bad ``on_error``, ``timeout`` or ``workers``.
        ImportError: ``progress=True`` without tqdm installed.
    """
    if on_error not in ON_ERROR:
        raise invalid_value("on_error", on_error, ON_ERROR)
    if timeout is not None and not timeout > 0:
        raise invalid_value("index timeout", timeout, "seconds > 0 or None")
    items = [os.fspath(p) for p in paths]
    n_workers = workers or min(16, 2 * (os.cpu_count() or 1))
    if n_workers < 1:
        raise invalid_value("workers", workers, "integers >= 1 or None")

    def work(path: str) -> VideoIndex:
        return load_index(path, cache=cache, stream_index=stream_index, autorotate=autorotate)

    bar = progress_bar(len(items)) if progress else None
    try:
        if consolidate:
            results = _load_consolidated(
                items, work, cache, stream_index, autorotate, timeout, workers, bar
            )
        else:
            results = run_threads(work, items, min(n_workers, max(len(items), 1)), timeout, bar)
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
    found = load_indexes(paths, consolidate=True, **options)
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


def _load_consolidated(
    items: list[str],
    work: Callable[[str], VideoIndex],
    cache: bool,
    stream_index: int | None,
    autorotate: bool,
    timeout: float | None,
    workers: int | None,
    bar: Any,
) -> list[VideoIndex | IndexFailure]:
    """Local files through :func:`load_local_many` (or :func:`build_many` without the cache),
    URLs and bytes through ``work`` in threads; results in the order of ``items``."""
    local = [k for k, p in enumerate(items) if not is_buffer(p) and not is_url(local_path(p))]
    others = sorted(set(range(len(items))) - set(local))
    results: list[VideoIndex | IndexFailure | None] = [None] * len(items)
    if local:
        names = [local_path(items[k]) for k in local]
        if cache:
            found = load_local_many(
                names,
                stream_index=stream_index,
                autorotate=autorotate,
                timeout=timeout,
                workers=workers,
                bar=bar,
            )
        else:
            built = build_many(names, stream_index, workers=workers, timeout=timeout, bar=bar)
            found = [
                r.with_autorotate(autorotate) if isinstance(r, VideoIndex) else r for r in built
            ]
        for k, r in zip(local, found, strict=True):
            results[k] = r if isinstance(r, VideoIndex) else IndexFailure(items[k], r.error)
    if others:
        n = min(workers or min(16, 2 * (os.cpu_count() or 1)), len(others))
        found = run_threads(work, [items[k] for k in others], n, timeout, bar)
        for k, r in zip(others, found, strict=True):
            results[k] = r
    return [r for r in results if r is not None]


def find_videos(items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, by :data:`VIDEO_SUFFIXES`) into a list of files:
    files as given, each folder's videos sorted by path; blocks on listing folders (no file is
    opened: a FIFO named ``x.mp4`` is listed, and refused later by :func:`check_readable`).
    Hidden names (``.x.tmp.mp4``, a temporary left by a killed writer; anything under ``.git/``)
    are not listed from a folder; a hidden file given by its path is kept.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: nothing found.
    """
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.rglob("*")
                    if q.suffix.lower() in VIDEO_SUFFIXES and not is_hidden(q.relative_to(p).parts)
                )
            )
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

"""Opening a video file for the index and the backends: checks, PyAV open, stream choice.

:func:`check_readable` refuses what is not a readable regular file **without opening it** (a
FIFO, device or socket named ``x.mp4`` would block the first read forever).
:func:`select_video_stream` picks the stream the user asked for, or ffmpeg's best video stream.
Functions here block briefly on file I/O and may run in any thread.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av

from tvl_async._checks import invalid_type, invalid_value
from tvl_async._errors import NoVideoStreamError, VideoOpenError
from tvl_async._source import (
    RemoteFile,
    buffer_of,
    is_buffer,
    is_url,
    local_path,
    open_remote,
    remote_info,
)

log = logging.getLogger(__name__)

_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_readable(path: str | os.PathLike[str]) -> Path:
    """Raise the standard exception for a missing, directory, non-regular or unreadable path.

    The path is ``stat``-ed before it is opened: a FIFO, device or socket is refused unopened.
    Blocks briefly (one ``stat``, one 1-byte read).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: as their names say.
        VideoOpenError: not a regular file, or empty.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(2, "No such video file", str(p)) from None  # "...: 'path'"
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "Expected a video file but got a directory", str(p))
    if not stat.S_ISREG(st.st_mode):
        raise VideoOpenError(
            f"{p}: not a regular file ({_kind(st.st_mode)}); refused without "
            f"opening it, since reading it could block forever"
        )
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except PermissionError as e:
        raise PermissionError(13, "Cannot read video file (permission denied)", str(p)) from e
    if not head:
        raise VideoOpenError(f"{p}: the file is empty (0 bytes)")
    return p.resolve()


def stat_source(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """``(name, size in bytes, version)`` of a video source, checked readable; blocks briefly.

    A local file: its resolved path, size and ``st_mtime_ns`` (:func:`check_readable` first).
    An fsspec URL: the URL, its size, and its ETag (else mtime) as an integer, from one
    metadata request (``tvl_async._source``).
    """
    text = local_path(os.fspath(path))
    if is_buffer(text):
        return text, len(buffer_of(text)), 0
    if is_url(text):
        size, version = remote_info(text)
        return text, size, int(hashlib.sha1(version.encode()).hexdigest()[:15], 16)
    p = check_readable(text)
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


def open_container(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open ``path`` (a file or an fsspec URL, read by byte ranges) with PyAV, turning FFmpeg's
    errors into tvl_async ones naming the source."""
    text = local_path(os.fspath(path))
    if is_buffer(text):
        source: Any = io.BytesIO(buffer_of(text))
        p = text
    elif is_url(text):
        source = open_remote(text)
        p = text
    else:
        p = str(check_readable(text))
        source = p
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        if isinstance(source, RemoteFile) and source.error is not None:
            raise source.error from e  # the read that failed, not FFmpeg's version of it
        raise VideoOpenError(f"{p}: cannot open as a video ({type(e).__name__}: {e})") from e
    if isinstance(source, RemoteFile):
        source.opened()
    return container


def remote_of(container: Any) -> RemoteFile | None:
    """The :class:`RemoteFile` a container reads from, or None (a local file or bytes)."""
    source = getattr(container, "file", None)  # PyAV wraps file objects (PyIOFile.file)
    source = getattr(source, "file", source)
    return source if isinstance(source, RemoteFile) else None


def source_error(container: Any) -> BaseException | None:
    """The exception the container's remote source raised last (a failed or stalled read, a
    vanished object), which FFmpeg may have reported as a generic error or an early end of
    file; None for a local source or when no read failed. Callers raise it instead."""
    source = remote_of(container)
    return source.error if source is not None else None


def describe_video_streams(container: av.container.InputContainer) -> str:
    """``"0 (h264 320x180), 1 (hevc 480x270)"``: the video streams, for error messages."""
    parts = []
    for s in container.streams:
        if s.type == "video":
            ctx = s.codec_context
            name = ctx.name if ctx is not None else "unknown codec"
            size = f"{ctx.width}x{ctx.height}" if ctx is not None else "?x?"
            parts.append(f"{s.index} ({name} {size})")
    return ", ".join(parts) or "none"


def select_video_stream(
    container: av.container.InputContainer, path: str, stream_index: int | None = None
) -> av.video.stream.VideoStream:
    """The video stream to read: ``stream_index`` (an index among all the file's streams), or,
    when None, the one the ``ffmpeg`` command picks (:func:`best_video_stream`).

    Raises:
        NoVideoStreamError: the file has no video stream.
        ValueError: ``stream_index`` is not the index of a video stream (the video streams are
            listed).
    """
    videos = [s for s in container.streams if s.type == "video"]
    if not videos:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise NoVideoStreamError(f"{path}: no video stream (streams found: {kinds})")
    if stream_index is None:
        return best_video_stream(videos)
    if isinstance(stream_index, bool) or not isinstance(stream_index, int):
        raise invalid_type("stream_index", stream_index, "integers or None", file=path)
    for s in videos:
        if s.index == stream_index:
            return s
    raise invalid_value(
        "stream_index",
        stream_index,
        f"the indices of the video streams: {describe_video_streams(container)}",
        file=path,
    )


def best_video_stream(videos: list[Any]) -> Any:
    """The video stream the ``ffmpeg`` command reads by default: the largest picture
    (width x height), a stream marked *default* counting 5,000,000 pixels more, the first one
    on a tie; cover art (*attached pic*) only when there is nothing else.

    This is fftools' rule (``ffmpeg_opt.c``), not PyAV's ``streams.best("video")``
    (``av_find_best_stream``), which ignores the size: on a Matroska file with a 320x180 and
    a 480x270 stream, neither marked default, ffmpeg reads the 480x270 one and
    ``av_find_best_stream`` the first.
    """

    def flags(s: Any) -> int:
        try:
            return int(s.disposition)
        except (AttributeError, TypeError, ValueError):
            return 0

    def score(s: Any) -> int:
        ctx = s.codec_context
        pixels = ctx.width * ctx.height if ctx is not None else 0
        return pixels + (_DEFAULT_BONUS if flags(s) & _DISPOSITION_DEFAULT else 0)

    movies = [s for s in videos if not flags(s) & _DISPOSITION_ATTACHED_PIC] or videos
    best = movies[0]
    for s in movies[1:]:
        if score(s) > score(best):
            best = s
    return best


_DISPOSITION_DEFAULT = 1  # AV_DISPOSITION_DEFAULT
_DISPOSITION_ATTACHED_PIC = 1024  # AV_DISPOSITION_ATTACHED_PIC
_DEFAULT_BONUS = 5_000_000  # fftools' score for the default disposition


def first_video_stream(
    container: av.container.InputContainer, path: str
) -> av.video.stream.VideoStream:
    """ffmpeg's best video stream (kept for callers of the former name)."""
    return select_video_stream(container, path, None)


def survive_new_streams(items: Iterable[Any]) -> Iterator[Any]:
    """Wrap ``container.demux(...)`` or ``container.decode(...)``: end quietly where PyAV's
    demuxer fails on a stream that appeared mid-file.

    PyAV (up to at least 18.x) sizes its stream table when the file is opened; when the file adds
    a stream later (MPEG-TS can), the end-of-stream flush indexes that table out of range and
    raises ``IndexError``. The flush packets of the streams known at open come first (new streams
    get higher indices), so every packet and frame of our stream has been delivered by then.
    """
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except IndexError as e:
            log.debug("demuxer hit a stream added mid-file (%s); treating it as the end", e)
            return
        yield item

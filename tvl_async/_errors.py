"""The exception hierarchy: one class per condition, all under :class:`TvlAsyncError`.

Standard exceptions are used where Python has one that fits (``FileNotFoundError``,
``IsADirectoryError``, ``PermissionError``, ``IndexError``, ``TimeoutError``, ``ValueError`` for
configuration); every message names the file and the offending value.
"""

from __future__ import annotations

from collections.abc import Iterable


class TvlAsyncError(Exception):
    """Base class of every error raised by tvl_async itself."""


class VideoOpenError(TvlAsyncError):
    """A file could not be opened or indexed as a video (not a media file, truncated, no stream)."""


class NoVideoStreamError(VideoOpenError):
    """The file opened but holds no video stream (for example an audio-only file)."""


class UnsupportedCodecError(VideoOpenError):
    """The file's codec cannot be decoded by this build of FFmpeg or by the chosen backend."""


class DecodeError(TvlAsyncError):
    """Decoding failed, or a requested frame never came out of the decoder."""


class BackendUnavailableError(TvlAsyncError):
    """The requested backend cannot be used here (package missing, no GPU)."""


class ServiceError(TvlAsyncError):
    """The prefetch service thread stopped unexpectedly."""


class PrefetcherClosedError(TvlAsyncError, RuntimeError):
    """The Prefetcher was used after ``close()``."""


def short_list(values: Iterable[object], limit: int = 8) -> str:
    """``[a, b, …]``: the first ``limit`` values, for error messages (frame lists can be long)."""
    items = list(values)
    text = ", ".join(str(i) for i in items[:limit])
    return f"[{text}{', …' if len(items) > limit else ''}]"


class RemoteReadError(TvlAsyncError, OSError):
    """A remote source (an fsspec URL) stalled past the read timeout or kept failing after
    the retries; the message names the URL."""

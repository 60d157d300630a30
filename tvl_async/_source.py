"""Where a video's bytes come from: a local path, an fsspec URL read by byte ranges, or bytes.

A source is named by the string the user gave. Local paths (and ``file://`` URLs) are opened by
FFmpeg itself; any other ``scheme://`` URL that fsspec knows (``http(s)://``, ``s3://``,
``gs://``, ``hf://``...; the filesystem packages are extras: ``tvl-async[s3]``) is read through
:class:`RemoteFile`, a seekable file object that fetches aligned blocks (:data:`BLOCK_BYTES`)
and keeps the last few, so a decode job reads the byte ranges of its GOPs, not the whole object.

Every remote read is bounded: it runs in a helper thread and gives up after
``TVL_ASYNC_READ_TIMEOUT`` seconds (default 30) with :class:`~tvl_async.RemoteReadError`
naming the URL, never a hang; transient errors (``OSError``, timeouts) are retried
``TVL_ASYNC_READ_RETRIES`` times (default 2) with a short backoff. Bytes fetched are counted per
process (:func:`bytes_read`). ``storage_options`` (fsspec's name: credentials, endpoints) given
for a URL are remembered for it in this process (:func:`remember_options`), so each decode
thread opens its own handle with them. Thread-safe; each :class:`RemoteFile` belongs to one
thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tvl_async._checks import invalid_type
from tvl_async._errors import RemoteReadError

__all__ = [
    "BLOCK_BYTES",
    "RemoteFile",
    "buffer_of",
    "bytes_read",
    "is_buffer",
    "is_hidden",
    "is_url",
    "list_url_folder",
    "local_path",
    "open_remote",
    "remember_options",
    "remote_info",
    "source_name",
]

#: Bytes fetched per range request (aligned blocks; the last few are kept per open file).
BLOCK_BYTES = 256 << 10
_BLOCKS_KEPT = 16
_T = TypeVar("_T")
_lock = threading.Lock()
_options: dict[str, dict[str, Any]] = {}
_buffers: dict[str, bytes] = {}
_bytes_read = [0]
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="tvl-async-read")


def read_timeout() -> float:
    """Seconds one remote read may take (``TVL_ASYNC_READ_TIMEOUT``, default 30)."""
    return float(os.environ.get("TVL_ASYNC_READ_TIMEOUT", "30"))


def read_retries() -> int:
    """Retries of a failed remote read (``TVL_ASYNC_READ_RETRIES``, default 2)."""
    return int(os.environ.get("TVL_ASYNC_READ_RETRIES", "2"))


def is_url(source: str) -> bool:
    """True for a ``scheme://`` URL that is not ``file://`` (those are read by fsspec)."""
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file" and len(scheme) > 1


def local_path(source: str) -> str:
    """``file://x`` as ``x``; other sources unchanged."""
    return source[len("file://") :] if source.startswith("file://") else source


def source_name(item: Any) -> str:
    """The name a source goes by: a path or URL as given (``os.fspath``); ``bytes`` (or
    ``bytearray``/``memoryview``) and binary file objects (read whole, now) are kept in memory
    under a name like ``<bytes 0: 12345 B>`` for the rest of the process (:func:`is_buffer`)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif hasattr(item, "read"):
        data = item.read()
        if not isinstance(data, bytes):
            raise invalid_type("file object", item, "file objects opened in binary mode ('rb')")
    else:
        return str(os.fspath(item))
    with _lock:
        name = f"<bytes {len(_buffers)}: {len(data)} B>"
        _buffers[name] = data
    return name


def is_buffer(name: str) -> bool:
    """True for the name of an in-memory source (:func:`source_name`)."""
    with _lock:
        return name in _buffers


def buffer_of(name: str) -> bytes:
    """The bytes of an in-memory source."""
    with _lock:
        return _buffers[name]


def remember_options(url: str, storage_options: Mapping[str, Any] | None) -> None:
    """Use ``storage_options`` whenever ``url`` is opened in this process."""
    if storage_options:
        with _lock:
            _options[url] = dict(storage_options)


def bytes_read() -> int:
    """Bytes fetched from remote sources by this process so far."""
    with _lock:
        return _bytes_read[0]


def _filesystem(url: str) -> tuple[Any, str]:
    import fsspec

    with _lock:
        options = dict(_options.get(url, {}))
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as e:
        scheme = url.partition("://")[0]
        raise ImportError(
            f"{url}: reading {scheme}:// needs an fsspec filesystem package ({e}); "
            f"install tvl-async[{'s3' if scheme == 's3' else 'http'}] or the one fsspec names"
        ) from e
    return fs, path


def _bounded(url: str, what: str, call: Callable[[], _T]) -> _T:
    """``call()`` with the read timeout and bounded retries; errors name ``url``."""
    timeout, attempts = read_timeout(), read_retries() + 1
    for attempt in range(attempts):
        future = _pool.submit(call)
        try:
            return future.result(timeout=timeout)
        except FileNotFoundError:
            raise FileNotFoundError(2, "No such video object", url) from None
        except concurrent.futures.TimeoutError:
            raise RemoteReadError(
                f"{url}: {what} took longer than {timeout:g} s (TVL_ASYNC_READ_TIMEOUT); "
                f"the server stalled"
            ) from None
        except (OSError, TimeoutError) as e:
            if attempt + 1 == attempts:
                raise RemoteReadError(
                    f"{url}: {what} failed after {attempts} attempt(s) ({type(e).__name__}: {e})"
                ) from e
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def remote_info(url: str) -> tuple[int, str]:
    """``(size in bytes, version)`` of a remote object (version: ETag, else mtime), from one
    metadata request; blocks.

    Raises:
        FileNotFoundError: no such object (naming the URL). RemoteReadError: it stalled or failed.
    """
    fs, path = _filesystem(url)
    info = _bounded(url, "reading its metadata", lambda: fs.info(path))
    if info.get("type") == "directory":
        raise IsADirectoryError(21, "Expected a video file but got a folder", url)
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    size = info.get("size")
    if not size:
        raise RemoteReadError(f"{url}: the server reports no size (needed for range reads)")
    return int(size), str(version or "")


def is_hidden(parts: Iterable[str]) -> bool:
    """True when a name below a listed folder is hidden: one of its ``parts`` (the path
    components below the folder) starts with ``.``."""
    return any(part.startswith(".") for part in parts)


def list_url_folder(url: str, suffixes: tuple[str, ...]) -> list[str] | None:
    """The video URLs under folder ``url`` (recursive, sorted), or None if it is not a folder.
    Hidden names below the folder (:func:`is_hidden`) are left out."""
    fs, path = _filesystem(url)
    info = _bounded(url, "listing it", lambda: fs.info(path))
    if info.get("type") != "directory":
        return None
    names = _bounded(url, "listing it", lambda: fs.find(path))
    protocol = url.partition("://")[0]
    top = path.rstrip("/")

    def below(name: str) -> list[str]:
        rel = name[len(top) :] if name.startswith(top) else name.rpartition("/")[2]
        return rel.split("/")

    found = sorted(n for n in names if n.lower().endswith(suffixes) and not is_hidden(below(n)))
    urls = [n if "://" in n else f"{protocol}://{n.lstrip('/')}" for n in found]
    for u in urls:
        with _lock:
            if url in _options:
                _options.setdefault(u, _options[url])
    return urls


class RemoteFile:
    """A read-only, seekable view of a remote object, fetched by aligned byte ranges.

    ``size`` comes from :func:`remote_info`. Reads are served from the blocks kept (the last
    :data:`_BLOCKS_KEPT`), else fetched with one range request each (bounded, retried). Owned by
    one thread (a decode thread or the indexer).
    """

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size = url, size
        self._fs, self._path = _filesystem(url)
        self._pos = 0
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        parts = []
        while self._pos < end:
            block = self._block(self._pos // BLOCK_BYTES)
            offset = self._pos % BLOCK_BYTES
            chunk = block[offset : offset + end - self._pos]
            if not chunk:
                break
            parts.append(chunk)
            self._pos += len(chunk)
        return b"".join(parts)

    def _block(self, k: int) -> bytes:
        if k in self._blocks:
            self._blocks.move_to_end(k)
            return self._blocks[k]
        start = k * BLOCK_BYTES
        length = min(BLOCK_BYTES, self.size - start)

        def fetch() -> bytes:  # one range request (fsspec's cat_file with start/end)
            return bytes(self._fs.cat_file(self._path, start=start, end=start + length))

        data = _bounded(self.url, f"reading bytes {start}..{start + length - 1}", fetch)
        with _lock:
            _bytes_read[0] += len(data)
        self._blocks[k] = data
        while len(self._blocks) > _BLOCKS_KEPT:
            self._blocks.popitem(last=False)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        elif whence == os.SEEK_END:
            self._pos = self.size + offset
        else:  # FFmpeg's AVSEEK_SIZE (0x10000) is answered by PyAV itself
            raise ValueError(f"{self.url}: unsupported seek whence {whence}")
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._blocks.clear()


def open_remote(url: str) -> RemoteFile:
    """A :class:`RemoteFile` for ``url`` (one metadata request first); blocks."""
    size, _ = remote_info(url)
    return RemoteFile(url, size)

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
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from tvl_async._bounded_read import bounded
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
#: Bytes of one range request for an announced decode job (:meth:`RemoteFile.expect`).
_SPAN_CHUNK = 8 << 20
#: First extension when the decoder reads past an announced range (then doubling).
_EXTEND_BYTES = 32 << 10
#: Blocks read while FFmpeg opens a container (the header: small, and shared per URL).
_HEADER_BLOCK_BYTES = 64 << 10
#: Header blocks kept per process, over all URLs.
_HEADER_BYTES_KEPT = 64 << 20
_HeaderKey = tuple[str, str, int, int]  # (url, version, size, block number)
_header_blocks: collections.OrderedDict[_HeaderKey, bytes] = collections.OrderedDict()
_header_locks: dict[_HeaderKey, threading.Lock] = {}
_header_sizes = [0]
_T = TypeVar("_T")
_lock = threading.Lock()
_options: dict[str, dict[str, Any]] = {}
_buffers: dict[str, bytes] = {}
_bytes_read = [0]


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


def remote_info(url: str) -> tuple[int, str]:
    """``(size in bytes, version)`` of a remote object (version: ETag, else mtime), from one
    metadata request; blocks.

    Raises:
        FileNotFoundError: no such object (naming the URL). RemoteReadError: it stalled or failed.
    """
    fs, path = _filesystem(url)
    info = bounded(url, "reading its metadata", lambda: fs.info(path))
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
    info = bounded(url, "listing it", lambda: fs.info(path))
    if info.get("type") != "directory" and not (  # HTTP: a page of links is a folder
        url.endswith("/") and bounded(url, "listing it", lambda: fs.isdir(path))
    ):
        return None
    names = bounded(url, "listing it", lambda: fs.find(path))
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
    """A read-only, seekable view of a remote object, fetched by byte ranges.

    ``size`` comes from :func:`remote_info`. Three ways bytes arrive, each one range request
    (bounded, retried):

    * while the container is being opened (until :meth:`opened`), aligned blocks of
      :data:`_HEADER_BLOCK_BYTES` kept per URL for the whole process (:data:`_HEADER_BYTES_KEPT`
      in all), so that the many handles decode threads open on one object read its header once;
    * for a decode job announced with :meth:`expect`, exactly its packets' bytes (chunks of at
      most :data:`_SPAN_CHUNK`), continued by small growing extensions if the decoder reads on;
    * otherwise aligned blocks of :data:`BLOCK_BYTES` (the last :data:`_BLOCKS_KEPT` kept).

    A read that fails is remembered in :attr:`error`, so that a caller that sees FFmpeg's
    version of it (PyAV's read callback may turn it into a generic error or an early end of
    file) can raise the original, naming the URL. Owned by one thread (a decode thread or the
    indexer).
    """

    def __init__(self, url: str, size: int, version: str = "") -> None:
        self.url, self.size, self.version = url, size, version
        #: The last exception a read raised (None if none).
        self.error: BaseException | None = None
        self._fs, self._path = _filesystem(url)
        self._pos = 0
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._opening = True
        self._span_start, self._span, self._span_want, self._extend = 0, bytearray(), 0, 0

    def opened(self) -> None:
        """The container's header is read: later blocks are not kept for other handles."""
        self._opening = False

    def expect(self, start: int, end: int) -> None:
        """The next reads are of bytes ``start…end-1`` (a decode job's packets): fetch that range
        in one request when first read, instead of aligned blocks. Does not block."""
        start, end = max(0, start), min(self.size, end)
        span_end = self._span_start + len(self._span)
        if not self._span_start <= start <= span_end:  # keep what overlaps, fetch the rest
            self._span_start, self._span = start, bytearray()
        elif start - self._span_start > _SPAN_CHUNK:
            del self._span[: start - self._span_start]
            self._span_start = start
        self._span_want, self._extend = end, 0

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all with -1) from the current position; fewer at the end of an
        announced range (FFmpeg reads again). Blocks (each fetch bounded by the read timeout).

        Raises:
            RemoteReadError: the server failed or stalled (naming the URL).
            FileNotFoundError: the object is gone.
        """
        try:
            return self._read(n)
        except BaseException as e:
            self.error = e
            raise

    def _read(self, n: int) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if self._pos >= end:
            return b""
        if self._span_start <= self._pos < self._span_want or (
            self._span and self._pos == self._span_start + len(self._span)
        ):
            return self._read_span(end)
        parts: list[bytes] = []
        while self._pos < end:
            k = self._pos // _HEADER_BLOCK_BYTES
            block = self._header_block(k) if self._opening else self._kept_header_block(k)
            offset = self._pos % _HEADER_BLOCK_BYTES
            if block is None and parts:  # a short read: the rest may be an announced range
                break
            if block is None:
                block, offset = self._block(self._pos // BLOCK_BYTES), self._pos % BLOCK_BYTES
            chunk = block[offset : offset + end - self._pos]
            if not chunk:
                break
            parts.append(chunk)
            self._pos += len(chunk)
        return b"".join(parts)

    def _read_span(self, end: int) -> bytes:
        span_end = self._span_start + len(self._span)
        if not self._span_start <= self._pos < span_end:
            if self._pos != span_end:  # a jump forward inside the range: start again there
                self._span_start, self._span = self._pos, bytearray()
            if self._pos < self._span_want:
                stop = min(self._span_want, self._pos + _SPAN_CHUNK)
            else:  # the decoder reads past the job: small extensions, doubling
                self._extend = min(max(2 * self._extend, _EXTEND_BYTES), BLOCK_BYTES)
                stop = self._pos + max(self._extend, end - self._pos)
            self._span += self._fetch(self._pos, min(stop, self.size))
            if len(self._span) > 2 * _SPAN_CHUNK:  # bounded: drop what lies behind
                drop = min(len(self._span) - _SPAN_CHUNK, self._pos - self._span_start)
                del self._span[:drop]
                self._span_start += drop
        offset = self._pos - self._span_start
        out = bytes(self._span[offset : offset + end - self._pos])
        self._pos += len(out)
        return out

    def _fetch(self, start: int, end: int) -> bytes:
        def fetch() -> bytes:  # one range request (fsspec's cat_file with start/end)
            return bytes(self._fs.cat_file(self._path, start=start, end=end))

        data = bounded(self.url, f"reading bytes {start}..{end - 1}", fetch)
        with _lock:
            _bytes_read[0] += len(data)
        return data

    def _block(self, k: int) -> bytes:
        if k in self._blocks:
            self._blocks.move_to_end(k)
            return self._blocks[k]
        start = k * BLOCK_BYTES
        data = self._fetch(start, min(start + BLOCK_BYTES, self.size))
        self._blocks[k] = data
        while len(self._blocks) > _BLOCKS_KEPT:
            self._blocks.popitem(last=False)
        return data

    def _kept_header_block(self, k: int) -> bytes | None:
        """Header block ``k`` if some handle on this object read it while opening."""
        with _lock:
            return _header_blocks.get((self.url, self.version, self.size, k))

    def _header_block(self, k: int) -> bytes:
        """Block ``k`` of :data:`_HEADER_BLOCK_BYTES` read while opening, shared per URL: one
        handle fetches it while the others opening the same object wait for it."""
        key = (self.url, self.version, self.size, k)
        with _lock:
            lock = _header_locks.setdefault(key, threading.Lock())
        with lock:
            with _lock:
                data = _header_blocks.get(key)
                if data is not None:
                    _header_blocks.move_to_end(key)
                    return data
            start = k * _HEADER_BLOCK_BYTES
            data = self._fetch(start, min(start + _HEADER_BLOCK_BYTES, self.size))
            _keep_header_block(key, data)
            return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (bytes); no I/O."""
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
        self._span = bytearray()


def _keep_header_block(key: _HeaderKey, data: bytes) -> None:
    """Keep a block read while opening, for the next handle on the same object (LRU-bounded)."""
    with _lock:
        _header_blocks[key] = data
        _header_sizes[0] += len(data)
        while _header_sizes[0] > _HEADER_BYTES_KEPT and len(_header_blocks) > 1:
            gone, old = _header_blocks.popitem(last=False)
            _header_locks.pop(gone, None)
            _header_sizes[0] -= len(old)


def open_remote(url: str) -> RemoteFile:
    """A :class:`RemoteFile` for ``url`` (one metadata request first); blocks."""
    size, version = remote_info(url)
    return RemoteFile(url, size, version)

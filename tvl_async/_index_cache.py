"""The on-disk index cache (``TVL_ASYNC_CACHE``, default ``~/.cache/tvl_async``; ``off``
disables).

Entries are keyed by absolute path, size, modification time and the stream asked for (``best``
or its index); an entry that is stale or cannot be read is rebuilt, never trusted. Writes are
atomic (a temporary file renamed into place). Functions here block on file I/O and may run in
any thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tvl_async._index_model import ARRAY_FIELDS, INDEX_VERSION, VideoIndex

log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """The index cache directory (``TVL_ASYNC_CACHE``), or None when caching is off."""
    env = os.environ.get("TVL_ASYNC_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvl_async"


def cache_file(
    folder: Path, path: str | Path, size: int, mtime_ns: int, stream_index: int | None = None
) -> Path:
    """The cache entry's path for this file version and stream (None: the best stream)."""
    stream = "best" if stream_index is None else str(stream_index)
    key = hashlib.sha1(f"{path}\0{size}\0{mtime_ns}\0{stream}".encode()).hexdigest()
    return folder / f"{key}.npz"


def save_entry(index: VideoIndex, target: Path) -> None:
    meta = {
        k: getattr(index, k)
        for k in (
            "path",
            "file_size",
            "mtime_ns",
            "stream_index",
            "codec",
            "pix_fmt",
            "coded_width",
            "coded_height",
            "rotation",
            "mirrored",
            "average_rate",
            "color_matrix",
            "full_range",
            "header_frames",
            "timestamps_ok",
            "frame_duration",
            "color_space",
            "field_order",
        )
    }
    meta["time_base"] = [index.time_base.numerator, index.time_base.denominator]
    meta["version"] = INDEX_VERSION
    target.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread: two threads may index the same file at once
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    arrays = {k: getattr(index, k) for k in ARRAY_FIELDS}
    np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    os.replace(tmp, target)


def load_entry(
    target: Path, path: str | Path, size: int, mtime_ns: int, stream_index: int | None = None
) -> VideoIndex | None:
    """The cached index, or None when the entry is absent, stale or unreadable."""
    try:
        if not target.exists():  # may raise PermissionError for an unreadable cache folder
            return None
        with np.load(target, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays: dict[str, Any] = {k: np.array(data[k]) for k in ARRAY_FIELDS}
        if (
            meta.pop("version") != INDEX_VERSION
            or meta["path"] != str(path)
            or meta["file_size"] != size
            or meta["mtime_ns"] != mtime_ns
            or (stream_index is not None and meta["stream_index"] != stream_index)
        ):
            return None
        tb = meta.pop("time_base")
        index = VideoIndex(time_base=Fraction(tb[0], tb[1]), **meta, **arrays)
        n = index.n_frames
        if n == 0 or any(len(a) != n for a in (index.times, index.is_keyframe, index.seek_key)):
            return None
        if index.seek_key.max() >= index.n_keys:
            return None
        return index
    except Exception as e:  # any damage means: rebuild
        log.info("index cache entry %s for %s is unreadable (%s); rebuilding", target, path, e)
        return None

"""The consolidated index cache: one entry holds the indexes of many files (a dataset).

An entry is one file ``<key>.tvlidx`` in the cache folder (:func:`~tvl_async._index_cache.
cache_dir`), keyed by a folder (the common parent of the files asked for), the stream choice and
:data:`~tvl_async._index_model.INDEX_VERSION`. It stores every file's arrays concatenated (with
offsets), its scalar fields as columns, and the ``(size, mtime_ns, inode)`` the file had when
indexed: a file whose ``os.stat`` differs is re-indexed alone. An entry is the union of the files
indexed under its folder (a subset or a superset of a former list reuses it); records of files
that no longer exist are dropped when the entry is rewritten.

Layout: ``MAGIC``, a little-endian uint64 header length, a JSON header (columns of strings,
array table), then the raw arrays, each 64-byte aligned. Loading reads the file into memory in
one call (a memory map would keep a file descriptor open for as long as any index lives, past
the Prefetcher that loaded it); the arrays are read-only views into it. Writes are atomic (a
temporary file renamed into place), so a reader never sees half an entry; a damaged entry loads
as None and is rebuilt. Functions here block on file I/O and may run in any thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tvl_async._index_model import (
    FRAME_ARRAYS,
    INDEX_VERSION,
    KEY_ARRAYS,
    PACKET_ARRAYS,
    VideoIndex,
)

MAGIC = b"TVLIDX1\n"
_ALIGN = 64
#: Per-frame, per-keyframe and per-packet arrays, with the offsets table that splits each.
_GROUPS = (("frame_off", FRAME_ARRAYS), ("key_off", KEY_ARRAYS), ("packet_off", PACKET_ARRAYS))
_INTS = ("stream_index", "coded_width", "coded_height", "header_frames", "rotation", "color_space")
_FLOATS = ("average_rate", "frame_duration")
_BOOLS = ("timestamps_ok", "full_range", "mirrored")
_STRINGS = ("codec", "pix_fmt", "color_matrix", "field_order")
_SCALARS = ("path", *_INTS, *_FLOATS, *_BOOLS, *_STRINGS)


def entry_file(folder: Path, location: str, stream_index: int | None) -> Path:
    """The entry's path for the files under ``location`` (an absolute folder) and a stream
    choice (None: ffmpeg's best stream)."""
    stream = "best" if stream_index is None else str(stream_index)
    key = hashlib.sha1(f"{location}\0{stream}\0{INDEX_VERSION}".encode()).hexdigest()
    return folder / f"{key}.tvlidx"


def file_key(st: os.stat_result) -> tuple[int, int, int]:
    """``(size in bytes, mtime in ns, inode)``: what must not change for a record to be used."""
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass
class Entry:
    """A loaded entry: :meth:`row_of` finds a file's row, :meth:`index` makes the
    :class:`VideoIndex` of a row (cheap: views into the mapped arrays)."""

    location: str
    sources: list[str]
    columns: dict[str, Any]
    arrays: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self.rows = {s: r for r, s in enumerate(self.sources)}
        c = self.columns
        # per row, the scalar fields in _SCALARS order (zip runs in C: ~1 us per row)
        self._scalars = list(zip(*(c[k] for k in _SCALARS), strict=True))
        self._time_bases: dict[tuple[int, int], Fraction] = {}  # a few distinct ones

    def row_of(self, source: str, key: tuple[int, int, int]) -> int | None:
        """The row of ``source`` if its stored key equals ``key``, else None."""
        r = self.rows.get(source)
        if r is None or tuple(self.columns["key"][r]) != key:
            return None
        return r

    def index(self, r: int, autorotate: bool) -> VideoIndex:
        """The :class:`VideoIndex` of row ``r`` (arrays are read-only views); non-blocking."""
        c, a = self.columns, self.arrays
        fields: dict[str, Any] = dict(zip(_SCALARS, self._scalars[r], strict=True))
        fields["file_size"], fields["mtime_ns"] = c["key"][r][0], c["key"][r][1]
        tb = (c["tb_num"][r], c["tb_den"][r])
        if tb not in self._time_bases:
            self._time_bases[tb] = Fraction(*tb)
        fields["time_base"] = self._time_bases[tb]
        fields["autorotate"] = autorotate
        for off, names in _GROUPS:
            lo, hi = c[off][r], c[off][r + 1]
            for name in names:
                fields[name] = a[name][lo:hi]
        return VideoIndex.from_fields(fields)


def save(
    target: Path, location: str, items: list[tuple[str, tuple[int, int, int], VideoIndex]]
) -> None:
    """Write the entry of ``(source, key, index)`` items atomically; blocks.

    Raises:
        OSError: the cache folder cannot be written.
    """
    n = len(items)
    idx = [i for _, _, i in items]
    header: dict[str, Any] = {
        "version": INDEX_VERSION,
        "location": location,
        "sources": [s for s, _, _ in items],
        "path": [i.path for i in idx],
    }
    for name in _STRINGS:
        values = [getattr(i, name) for i in idx]
        uniq = sorted(set(values), key=lambda v: (v is None, str(v)))
        code = {v: k for k, v in enumerate(uniq)}
        header[name] = {"values": uniq, "codes": [code[v] for v in values]}
    arrays: dict[str, np.ndarray] = {
        "key": np.array([k for _, k, _ in items], dtype=np.int64).reshape(n, 3),
        "tb_num": np.array([i.time_base.numerator for i in idx], dtype=np.int64),
        "tb_den": np.array([i.time_base.denominator for i in idx], dtype=np.int64),
    }
    for name in _INTS:
        arrays[name] = np.array([getattr(i, name) for i in idx], dtype=np.int64)
    for name in _FLOATS:
        arrays[name] = np.array([getattr(i, name) for i in idx], dtype=np.float64)
    for name in _BOOLS:
        arrays[name] = np.array([getattr(i, name) for i in idx], dtype=bool)
    for off, names in _GROUPS:
        counts = [len(getattr(i, names[0])) for i in idx]
        arrays[off] = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        for name in names:
            parts = [np.asarray(getattr(i, name)) for i in idx]
            dtype = parts[0].dtype if parts else np.int64
            arrays[name] = np.concatenate(parts) if parts else np.zeros(0, dtype)
    table: dict[str, list[Any]] = {}
    pos = 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        arrays[name] = a
        table[name] = [a.dtype.str, list(a.shape), pos]
        pos += -(-a.nbytes // _ALIGN) * _ALIGN
    header["arrays"] = table
    head = json.dumps(header).encode()
    start = -(-(len(MAGIC) + 8 + len(head)) // _ALIGN) * _ALIGN
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(head).to_bytes(8, "little") + head)
            for name, a in arrays.items():
                f.seek(start + table[name][2])
                f.write(a.tobytes())
            f.truncate(start + pos)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(target: Path, location: str) -> Entry | None:
    """The entry at ``target``, or None when absent; blocks (reads the header, maps the rest).

    Raises:
        ValueError: the entry is damaged or of another version (the caller rebuilds it).
        OSError: it exists but cannot be read.
    """
    try:
        f = open(target, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        return None
    with f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("not an index entry (bad magic)")
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size).decode())
    if header.get("version") != INDEX_VERSION or header.get("location") != location:
        raise ValueError(f"entry of version {header.get('version')}, {header.get('location')}")
    start = -(-(len(MAGIC) + 8 + size) // _ALIGN) * _ALIGN
    raw = np.fromfile(target, dtype=np.uint8)
    raw.flags.writeable = False
    arrays: dict[str, np.ndarray] = {}
    for name, (dtype, shape, pos) in header["arrays"].items():
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        lo = start + pos
        if lo + count * dt.itemsize > len(raw):
            raise ValueError(f"array {name} runs past the end of the file")
        arrays[name] = raw[lo : lo + count * dt.itemsize].view(dt).reshape(shape)
    sources = header["sources"]
    n = len(sources)
    columns: dict[str, Any] = {"path": header["path"], "key": arrays.pop("key").tolist()}
    for name in _STRINGS:
        values, codes = header[name]["values"], header[name]["codes"]
        columns[name] = [values[k] for k in codes]
    for name in ("tb_num", "tb_den", *_INTS, *_FLOATS, *_BOOLS):
        columns[name] = arrays.pop(name).tolist()
    for off, names in _GROUPS:
        o = arrays[off]
        columns[off] = arrays.pop(off).tolist()
        if len(o) != n + 1 or o[0] != 0 or np.any(np.diff(o) < 0):
            raise ValueError(f"bad offsets {off}")
        if any(len(arrays[name]) != o[-1] for name in names):
            raise ValueError(f"arrays of {off} do not match its offsets")
    _check(columns, arrays, n)
    return Entry(location, sources, columns, arrays)


def _check(columns: dict[str, Any], arrays: dict[str, np.ndarray], n: int) -> None:
    """Whole-entry sanity checks (a damaged entry must not yield a wrong index)."""
    for name, values in columns.items():
        if len(values) != (n + 1 if name.endswith("_off") else n):
            raise ValueError(f"column {name} has {len(values)} values for {n} files")
    frames: np.ndarray = np.diff(np.asarray(columns["frame_off"], dtype=np.int64))
    keys: np.ndarray = np.diff(np.asarray(columns["key_off"], dtype=np.int64))
    if n and (frames.min() <= 0 or keys.min() <= 0):
        raise ValueError("a record without frames or keyframes")
    if len(arrays["seek_key"]) and np.any(arrays["seek_key"] >= np.repeat(keys, frames)):
        raise ValueError("a seek_key past its keyframe table")

"""The sample space: :class:`VideoDataset`, NVVL's index of clips over many files.

Sample ``i`` is NVVL's clip: ``seq_len`` frames ``start, start+stride, …`` of one file, with every
valid start ``step`` frames apart, files concatenated in the order given. With ``frame_rate``, the
same over each file's time grid ``t_first + j / frame_rate`` (grid point ``j``: the frame shown at
that time), so clips have a fixed time between frames on files of any (or variable) rate. Files too
short for one clip are skipped with one warning. Lookups are vectorised (10^7 samples: few arrays).

It knows nothing of decoding (``tvl_async._clips.VideoClipDataset`` decodes for a plain
``DataLoader``) and starts no thread; it blocks only on indexing. Sample order: ``_sampling``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tvl_async._checks import check_int, invalid_type, out_of_range
from tvl_async._grid import IntArray, check_frame_rate, readonly, time_grid
from tvl_async._index import INDEX_TIMEOUT, VideoIndex, find_sources, index_files
from tvl_async._source import remember_options, source_name

PathLike = str | os.PathLike[str]

_MAX_NAMED_SKIPS = 10


class VideoDataset:
    """Every valid clip of a list of video files, addressed by one integer (NVVL's index space).

    Sample ``i`` is the clip of ``seq_len`` frames ``start, start+stride, …,
    start+(seq_len-1)*stride`` of one file; a file offers the starts ``0, step, 2*step, …`` while
    the clip fits. Files are concatenated in the order given.

    Args:
        files: video paths, fsspec URLs or bytes (see the README), or a single one.
        seq_len: frames per clip, >= 1.
        stride: frame distance inside a clip, >= 1.
        step: frame distance between consecutive clip starts of a file, >= 1.
        get_label: optional ``get_label(path) -> label`` for :meth:`label`.
        indexes: optional pre-built :class:`VideoIndex` per file, aligned with ``files``; by
            default the files are indexed in parallel (blocks; uses the disk cache).
        frame_rate: None: clips count frames. A rate (grid points per second): each file is
            sampled on its time grid ``t_first + j / frame_rate`` (``t_first``: its first
            frame's time), grid point ``j`` being the last frame whose time is <= it; then
            ``seq_len``, ``stride``, ``step`` and :meth:`locate`'s start count grid points, and
            :meth:`clip_frames` gives the frames used (repeated where the file's rate is lower).
        stream_index: the video stream of every file (None: ffmpeg's best video stream).
        autorotate: frames in displayed orientation (True) or as stored (False).
        on_error: ``"raise"``: a file that cannot be indexed raises (the message names it);
            ``"skip"``: it is left out of :attr:`files` with one warning naming it and the
            cause, and listed in :attr:`unindexed_files`.
        progress: a tqdm progress bar while indexing (needs tqdm).
        index_timeout: seconds one file may take to index (None: no limit); a file over it
            counts as failed (``TimeoutError``).
        storage_options: fsspec options for URL files (credentials, endpoints).

    Raises:
        ValueError: no files, bad sizes, ``indexes`` of the wrong length, or no file holds a clip.
        FileNotFoundError, VideoOpenError, TimeoutError...: with ``on_error="raise"``, the
            first file that cannot be indexed.

    Warns:
        UserWarning: once, naming every file too short for one clip (its frame count and the
            clip span needed). Skipped files keep their place in ``files``; they own no samples.

    The object is immutable after construction and may be read from any thread.
    """

    def __init__(
        self,
        files: PathLike | Iterable[PathLike],
        seq_len: int,
        *,
        stride: int = 1,
        step: int = 1,
        get_label: Callable[[str], Any] | None = None,
        indexes: Sequence[VideoIndex] | None = None,
        frame_rate: float | None = None,
        stream_index: int | None = None,
        autorotate: bool = True,
        on_error: str = "raise",
        progress: bool = False,
        index_timeout: float | None = INDEX_TIMEOUT,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        one = isinstance(files, (str, os.PathLike, bytes)) or hasattr(files, "read")
        items: list[Any] = [files] if one else list(files)  # type: ignore[arg-type]
        if not items:
            raise ValueError("VideoDataset needs at least one file, got an empty list")
        listed = indexes is None  # folders (local, or URLs ending in /) listed; else one each
        paths = find_sources(items, storage_options) if listed else [source_name(f) for f in items]
        rate = check_frame_rate(frame_rate)
        for p in paths:
            remember_options(p, storage_options)
        self._unindexed: list[tuple[str, str]] = []
        if indexes is None:
            paths, idx, self._unindexed = index_files(
                paths,
                stream_index=stream_index,
                autorotate=autorotate,
                on_error=on_error,
                progress=progress,
                timeout=index_timeout,
            )
        else:
            idx = list(indexes)
            if len(idx) != len(paths):
                raise ValueError(
                    f"indexes has {len(idx)} entries for {len(paths)} files; "
                    f"give one VideoIndex per file, in the same order"
                )
        self._frame_rate = rate
        self._grids = None if rate is None else [time_grid(i, rate) for i in idx]
        lengths = (
            [i.n_frames for i in idx] if self._grids is None else [len(g) for g in self._grids]
        )
        self._setup(
            paths, lengths, [i.seek_key for i in idx], idx, seq_len, stride, step, get_label
        )

    @classmethod
    def from_frame_counts(
        cls,
        frame_counts: Sequence[int],
        seq_len: int,
        *,
        stride: int = 1,
        step: int = 1,
        gop_size: int | None = None,
        get_label: Callable[[str], Any] | None = None,
        names: Sequence[str] | None = None,
    ) -> VideoDataset:
        """A dataset over imaginary files with these frame counts: for samplers and tests.

        No file is opened. GOP ``g`` of a file holds frames ``g*gop_size … (g+1)*gop_size-1``
        (``gop_size=None``: one GOP per file). Files are named ``names`` or ``<file K>``.
        :attr:`indexes` and :meth:`check_uniform_size` raise RuntimeError.
        """
        counts = [check_int("frame count", n, 0) for n in frame_counts]
        gop = None if gop_size is None else check_int("gop_size", gop_size, 1)
        paths = list(names) if names is not None else [f"<file {k}>" for k in range(len(counts))]
        if len(paths) != len(counts):
            raise ValueError(f"names has {len(paths)} entries for {len(counts)} frame counts")
        if not paths:
            raise ValueError("VideoDataset needs at least one file, got an empty list")
        keys = [np.arange(n, dtype=np.int64) // (gop or max(n, 1)) for n in counts]
        obj = cls.__new__(cls)
        obj._frame_rate, obj._grids, obj._unindexed = None, None, []
        obj._setup(paths, counts, keys, None, seq_len, stride, step, get_label)
        return obj

    def _setup(
        self,
        paths: list[str],
        n_frames: list[int],
        seek_keys: list[np.ndarray],
        indexes: list[VideoIndex] | None,
        seq_len: int,
        stride: int,
        step: int,
        get_label: Callable[[str], Any] | None,
    ) -> None:
        self._seq_len = check_int("seq_len", seq_len, 1)
        self._stride = check_int("stride", stride, 1)
        self._step = check_int("step", step, 1)
        self._paths = paths
        self._indexes = indexes
        self._seek_keys = seek_keys
        self._get_label = get_label
        span = self.span
        frames = np.asarray(n_frames, dtype=np.int64)
        counts = np.where(frames >= span, (frames - span) // self._step + 1, 0).astype(np.int64)
        self._n_frames = readonly(frames)
        self._counts = readonly(counts)
        self._offsets = readonly(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        self._len = int(self._offsets[-1])
        self._skipped = [paths[k] for k in np.flatnonzero(counts == 0)]
        self._arrays: tuple[IntArray, IntArray] | None = None
        self._gops: IntArray | None = None
        if self._skipped:
            named = ", ".join(
                f"'{paths[k]}' ({frames[k]} frames)"
                for k in np.flatnonzero(counts == 0)[:_MAX_NAMED_SKIPS]
            )
            more = len(self._skipped) - _MAX_NAMED_SKIPS
            unit = (
                "frames" if self._frame_rate is None else f"grid points at {self._frame_rate:g}/s"
            )
            warnings.warn(
                f"skipping {len(self._skipped)} file(s) too short for one clip of seq_len="
                f"{self._seq_len}, stride={self._stride} (a clip spans {span} {unit}): {named}"
                + (f" and {more} more" if more > 0 else ""),
                UserWarning,
                stacklevel=3,
            )
        if self._len == 0:
            raise ValueError(
                f"no file holds a clip spanning {span} frames (seq_len="
                f"{self._seq_len}, stride={self._stride}); the longest file has "
                f"{frames.max()} frames"
            )

    # ------------------------------------------------------------------ geometry and lookup

    @property
    def seq_len(self) -> int:
        """Frames per clip."""
        return self._seq_len

    @property
    def stride(self) -> int:
        """Frame distance between the frames of a clip."""
        return self._stride

    @property
    def step(self) -> int:
        """Frame distance between consecutive clip starts in a file."""
        return self._step

    @property
    def span(self) -> int:
        """Frames a clip covers from its first to its last frame: ``(seq_len-1)*stride + 1``."""
        return (self._seq_len - 1) * self._stride + 1

    @property
    def files(self) -> list[str]:
        """All files as given (skipped ones included); ``file_index`` values index this list."""
        return list(self._paths)

    @property
    def frame_rate(self) -> float | None:
        """Grid points per second of the time grid, or None (clips count frames)."""
        return self._frame_rate

    @property
    def unindexed_files(self) -> list[tuple[str, str]]:
        """``(path, cause)`` of each file left out because it could not be indexed
        (``on_error="skip"``); they are not in :attr:`files`."""
        return list(self._unindexed)

    def grid(self, file_index: int) -> IntArray:
        """``[n_points]`` frame index at each grid point of file ``file_index`` (read-only);
        without ``frame_rate``, every frame (``arange(n_frames)``)."""
        if self._grids is None:
            return readonly(np.arange(int(self._n_frames[file_index]), dtype=np.int64))
        return self._grids[file_index]

    @property
    def skipped_files(self) -> list[str]:
        """Files too short for one clip, which own no samples."""
        return list(self._skipped)

    @property
    def indexes(self) -> list[VideoIndex]:
        """One :class:`VideoIndex` per entry of :attr:`files`.

        Raises:
            RuntimeError: the dataset was made by :meth:`from_frame_counts`.
        """
        return list(self._require_indexes())

    @property
    def samples_per_file(self) -> IntArray:
        """``[n_files]`` samples each file owns (0 for skipped files); read-only."""
        return self._counts

    @property
    def file_offsets(self) -> IntArray:
        """``[n_files + 1]`` first sample id of each file (and the total at the end); read-only."""
        return self._offsets

    def __len__(self) -> int:
        return self._len

    def _check_sample(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise invalid_type("sample index", i, "integers")
        if not -self._len <= i < self._len:
            raise out_of_range("sample index", i, self._len)
        return int(i) % self._len

    def locate(self, i: int) -> tuple[int, int]:
        """``(file_index, start_frame)`` of sample ``i`` (negative ``i`` counts from the end).

        ``file_index`` indexes :attr:`files` (the original list, skipped files included).

        Raises:
            IndexError: ``i`` outside ``-len..len-1``, naming ``i`` and the valid range.
        """
        i = self._check_sample(i)
        f = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return f, (i - int(self._offsets[f])) * self._step

    def locate_many(self, ids: npt.ArrayLike) -> tuple[IntArray, IntArray]:
        """Vectorised :meth:`locate`: ``(file_index, start_frame)`` arrays for sample ``ids``."""
        a = np.asarray(ids, dtype=np.int64)
        if a.size and (a.min() < -self._len or a.max() >= self._len):
            bad = a[(a < -self._len) | (a >= self._len)][0]
            raise out_of_range("sample index", bad, self._len)
        a = a % self._len if self._len else a
        f = np.searchsorted(self._offsets, a, side="right").astype(np.int64) - 1
        return f, (a - self._offsets[f]) * self._step

    def clip_frames(self, i: int) -> list[int]:
        """Presentation indices of the ``seq_len`` frames of sample ``i`` in its file (with
        ``frame_rate``: the frames at its grid points, repeats included)."""
        f, start = self.locate(i)
        points = range(start, start + self.span, self._stride)
        if self._grids is None:
            return list(points)
        return self._grids[f][list(points)].tolist()  # type: ignore[no-any-return]

    def file_of(self, i: int) -> str:
        """Path (as given) of the file holding sample ``i``."""
        return self._paths[self.locate(i)[0]]

    def gop_of(self, i: int) -> int:
        """GOP id (keyframe-table entry, ``seek_key``) of the first frame of sample ``i``."""
        f, start = self.locate(i)
        frame = start if self._grids is None else int(self._grids[f][start])
        return int(self._seek_keys[f][frame])

    def label(self, i: int) -> Any:
        """``get_label(path)`` for the file of sample ``i``, or None without ``get_label``."""
        return None if self._get_label is None else self._get_label(self.file_of(i))

    def sample_arrays(self) -> tuple[IntArray, IntArray]:
        """``([N] file_index, [N] start_frame)`` for every sample, read-only, built once.

        About 16 bytes per sample; thread-safe (a race builds the same arrays twice).
        """
        if self._arrays is None:
            ids = np.arange(self._len, dtype=np.int64)
            f = np.repeat(np.arange(len(self._counts), dtype=np.int64), self._counts)
            start = (ids - self._offsets[f]) * self._step
            self._arrays = (readonly(f), readonly(start))
        return self._arrays

    def sample_gops(self) -> IntArray:
        """``[N]`` GOP id (within its file) of each sample's first frame; read-only, built once."""
        if self._gops is None:
            parts = [
                np.asarray(self._seek_keys[f], dtype=np.int64)[
                    self._first_frames(f, np.arange(int(c), dtype=np.int64) * self._step)
                ]
                for f, c in enumerate(self._counts)
                if c > 0
            ]
            self._gops = readonly(np.concatenate(parts))
        return self._gops

    def _first_frames(self, f: int, starts: IntArray) -> IntArray:
        """Frame index of clip starts ``starts`` (frames, or grid points) of file ``f``."""
        return starts if self._grids is None else self._grids[f][starts]

    def check_uniform_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels shared by every file that owns samples.

        Raises:
            ValueError: two files differ in size (both are named, with their sizes).
            RuntimeError: the dataset was made by :meth:`from_frame_counts`.
        """
        idx = self._require_indexes()
        used = [k for k in range(len(idx)) if self._counts[k] > 0]
        first = idx[used[0]]
        for k in used[1:]:
            other = idx[k]
            if (other.height, other.width) != (first.height, first.width):
                raise ValueError(
                    f"files differ in frame size: '{self._paths[used[0]]}' is "
                    f"{first.width}x{first.height} and '{self._paths[k]}' is "
                    f"{other.width}x{other.height} (width x height); a batch needs one size: "
                    f"give a processing with a fixed output size (scale_width/scale_height or "
                    f"width/height)"
                )
        return first.height, first.width

    def _require_indexes(self) -> list[VideoIndex]:
        if self._indexes is None:
            raise RuntimeError(
                "this VideoDataset was built from frame counts and has no video "
                "indexes (use VideoDataset(files, ...) to read videos)"
            )
        return self._indexes

    def __repr__(self) -> str:
        return (
            f"VideoDataset({len(self._paths)} files, {len(self._skipped)} skipped, "
            f"{self._len} samples, seq_len={self._seq_len}, stride={self._stride}, "
            f"step={self._step})"
        )

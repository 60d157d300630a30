"""Clip grids: a file's time grid and the run expansion the samplers share.

Pure functions of numpy arrays and a :class:`VideoIndex`; any thread may call them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from tvl_async._index_model import VideoIndex

IntArray = npt.NDArray[np.int64]


def readonly(a: IntArray) -> IntArray:
    a.flags.writeable = False
    return a


def check_frame_rate(value: object) -> float | None:
    """``frame_rate`` as a float, or None; raises naming the value and what is allowed."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise ValueError(
            f"Invalid frame_rate ({value!r}). Supported values are numbers > 0 "
            f"(grid points per second) or None (every frame)"
        )
    return float(value)


def time_grid(index: VideoIndex, frame_rate: float) -> IntArray:
    """Frame shown at each grid time ``t_first + j / frame_rate`` (the last frame whose
    presentation time is <= it), for every ``j`` before the end of the last frame."""
    n = max(math.ceil(index.duration * frame_rate - 1e-6), 1)
    t = index.times[0] + np.arange(n, dtype=np.float64) / frame_rate
    frames = np.searchsorted(index.times, t + 1e-9, side="right").astype(np.int64) - 1
    return readonly(np.clip(frames, 0, index.n_frames - 1))


def expand_runs(starts: IntArray, lengths: IntArray) -> IntArray:
    """Concatenate ``arange(s, s + n)`` for each (s, n), vectorised."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)

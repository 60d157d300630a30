"""The decoding backend protocol that ``pyav.py`` (CPU) and ``nvdec.py`` (GPU) implement.

A backend decodes exactly the frames it is asked for, identified by presentation index in a
:class:`~tvl_async.index.VideoIndex`. A backend instance is owned by one thread: it is created,
used and closed there (CUDA contexts and FFmpeg decoders are not shared between threads).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from tvl_async.index import VideoIndex

ReadMode = Literal["auto", "seek", "stream"]
READ_MODES: tuple[str, ...] = ("auto", "seek", "stream")


@dataclass
class DecodeResult:
    """Frames returned by :meth:`Backend.decode`.

    Attributes:
        frames: one ``[3, H, W]`` uint8 RGB tensor per requested index, in the order asked,
            duplicates included, on the backend's device.
        n_decoded: frames the decoder produced to get them (the cost of random access).
    """

    frames: list[torch.Tensor]
    n_decoded: int


@runtime_checkable
class Backend(Protocol):
    """A frame decoder owned by a single thread."""

    name: str
    device: torch.device

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
    ) -> DecodeResult:
        """Decode the frames at presentation indices ``frames`` of ``index.path``; blocks.

        Args:
            index: the file's index (from :func:`tvl_async.index.load_index`).
            frames: presentation indices, any order, duplicates allowed; each in
                ``0..index.n_frames-1``, else ``IndexError`` naming the file and the range.
            size: optional output ``(width, height)`` in pixels; resizing happens during colour
                conversion.
            mode: ``"auto"`` seeks once per GOP run; ``"seek"`` seeks for every frame;
                ``"stream"`` decodes the whole range from the first frame's keyframe in one pass.
        """
        ...

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield frames ``start, start+1, …`` to the end of the file, decoding forward once."""
        ...

    def close(self) -> None:
        """Release decoders and open files; safe to call twice."""
        ...


def plan_runs(index: VideoIndex, wanted: list[int], mode: ReadMode) -> list[tuple[int, list[int]]]:
    """Split the wanted frames into ``(keyframe entry, frames)`` decode runs, in decoding order.

    ``seek``: one run per distinct frame. ``stream``: one run from the earliest keyframe.
    ``auto``: one run per GOP, going on into the next GOP without a seek when at most
    ``MERGE_SLACK`` frames would be decoded in vain. Shared by every backend.
    """
    if mode == "seek":
        return [(int(index.seek_key[i]), [i]) for i in dict.fromkeys(wanted)]
    unique = np.unique(np.asarray(wanted, dtype=np.int64))
    keys = index.seek_key[unique]
    if mode == "stream":
        return [(int(keys.min()), unique.tolist())]
    runs: list[tuple[int, list[int]]] = []
    last_key = -2
    for k in np.unique(keys).tolist():
        frames = unique[keys == k].tolist()
        # Decoding on from GOP k-1 into GOP k saves a seek but decodes the rest of GOP k-1 for
        # nothing; a seek costs far less than decoding a frame, so go on only when at most
        # MERGE_SLACK frames of GOP k-1 would be wasted.
        if k == last_key + 1 and _gop_last_frame(index, last_key) - runs[-1][1][-1] <= MERGE_SLACK:
            runs[-1][1].extend(frames)
        else:
            runs.append((k, frames))
        last_key = k
    return runs


#: Frames of a GOP that may be decoded in vain to go on into the next GOP without a seek.
MERGE_SLACK = 2


def _gop_last_frame(index: VideoIndex, key: int) -> int:
    """Last frame (presentation index) whose seek entry is ``key`` (seek_key is sorted)."""
    return int(np.searchsorted(index.seek_key, key, side="right")) - 1

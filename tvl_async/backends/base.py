"""The decoding backend protocol that ``pyav.py`` (CPU) and ``nvdec.py`` (GPU) implement.

A backend decodes exactly the frames it is asked for, identified by presentation index in a
:class:`~tvl_async.index.VideoIndex`. A backend instance is owned by one thread: it is created,
used and closed there (CUDA contexts and FFmpeg decoders are not shared between threads).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

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

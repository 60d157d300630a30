"""The decoding backend protocol that ``pyav.py`` (CPU) and ``nvdec.py`` (GPU) implement.

A backend decodes exactly the frames it is asked for, identified by presentation index in a
:class:`~tvl_async._index.VideoIndex`. A backend instance is owned by one thread: it is created,
used and closed there (CUDA contexts and FFmpeg decoders are not shared between threads).
What both backends share is here too: :func:`plan_runs` (which frames to decode from which
keyframe) and :func:`packets_from_key` (PyAV's demuxer positioned exactly on a keyframe packet).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np
import torch

from tvl_async._errors import DecodeError
from tvl_async._index import NO_TS, VideoIndex, survive_new_streams

log = logging.getLogger(__name__)

ReadMode = Literal["auto", "seek", "stream"]
READ_MODES: tuple[str, ...] = get_args(ReadMode)


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
            index: the file's index (from :func:`tvl_async._index.load_index`).
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


def pts_positions(index: VideoIndex) -> dict[int, int]:
    """``pts -> position in decode order`` of each packet with a pts (:func:`packets_from_key`)."""
    return {int(p): i for i, p in enumerate(index.packet_pts) if p != NO_TS}


#: Packets a decoder may take after a frame's own before it outputs it (B-frame reordering).
REORDER_PACKETS = 2


def job_byte_range(
    index: VideoIndex, key: int, wanted: Iterable[int], pos_of_pts: dict[int, int], threads: int
) -> tuple[int, int] | None:
    """``(start, end)`` bytes a decode run reads: from keyframe entry ``key``'s packet to the
    last packet the decoder needs before it outputs the last wanted frame (that of every frame
    shown up to it: B-frames come after their references), plus the decoder's delay
    (:data:`REORDER_PACKETS`, and one packet per extra frame thread; ``threads`` 0 counts as
    FFmpeg's automatic choice, cores + 1); None when the index has no packet offsets. A remote
    source fetches it in one range request.
    """
    hi = max(wanted, default=-1)
    first = int(np.searchsorted(index.seek_key, key))  # the GOP's first shown frame
    last = max((pos_of_pts.get(int(index.pts[j]), -1) for j in range(first, hi + 1)), default=-1)
    if last < 0:
        return None
    threads = threads or min((os.cpu_count() or 1) + 1, 16)  # FFmpeg's automatic count
    delay = REORDER_PACKETS + threads - 1
    return index.byte_range(int(index.key_decode_pos[key]), last + delay)


def packets_from_key(
    container: Any, stream: Any, index: VideoIndex, key: int, pos_of_pts: dict[int, int]
) -> Iterator[Any]:
    """Seek and yield the stream's PyAV packets from keyframe entry ``key`` to the end, in
    decode order, starting exactly at that keyframe's packet (found by its pts; the seek lands
    at or before it). Empty packets, and incomplete ones the index left out (the end of a
    truncated file), are not yielded. Blocks on file I/O; the caller owns ``container``.

    Raises:
        DecodeError: the demuxer cannot be positioned on the keyframe packet (the file changed
            since it was indexed, or is damaged).
    """
    target = int(index.key_decode_pos[key])
    stamps = [int(t) for t in (index.key_pts[key], index.key_dts[key]) if t != NO_TS]
    if not stamps:
        raise DecodeError(f"{index.path}: keyframe {key} has no timestamp to seek to")
    # The keyframe's own pts first: seeking to its (smaller) dts lands on the keyframe before
    # in MP4 with B-frames, and the whole GOP before would be read and skipped. Then its dts,
    # then the very first keyframe (skipping forward), should the demuxer land after it.
    stamps0 = [int(t) for t in (index.key_pts[0], index.key_dts[0]) if t != NO_TS]
    tries = [stamps[0], min(stamps), min(stamps0 or stamps) - 1]
    for seek_ts in dict.fromkeys(tries):
        container.seek(seek_ts, stream=stream, backward=True, any_frame=False)
        demux = survive_new_streams(container.demux(stream))
        overshoot = False
        for pkt in demux:
            if pkt.pts is None:
                if pkt.size == 0:
                    continue
                raise DecodeError(
                    f"{index.path}: a packet without pts after seeking to "
                    f"keyframe {key}; the file changed since it was indexed"
                )
            pos = pos_of_pts.get(int(pkt.pts))
            if pos is None or pos < target:
                continue
            if pos > target:
                overshoot = True
                break
            yield pkt
            yield from (p for p in demux if p.size > 0 and not _unindexed_corrupt(p, pos_of_pts))
            return
        if not overshoot:
            break
        log.debug("%s: seek to keyframe %d at %d overshot; retrying", index.path, key, seek_ts)
    raise DecodeError(
        f"{index.path}: could not position the demuxer on keyframe {key} "
        f"(pts {index.key_pts[key]}); the file may be damaged"
    )


def _unindexed_corrupt(pkt: Any, pos_of_pts: dict[int, int]) -> bool:
    """A packet the demuxer flagged as incomplete that the index left out (truncated file)."""
    if not getattr(pkt, "is_corrupt", False):
        return False
    return pkt.pts is None or int(pkt.pts) not in pos_of_pts

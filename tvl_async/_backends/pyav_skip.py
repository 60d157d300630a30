"""Decode a run of packets with no more decoding than the wanted frames need (PyAV).

:func:`decode_packets` feeds a decoder the packets of one run (from a keyframe) and yields what
comes out. Told which frames are wanted, it spares work two exact ways: the packets of other
shown frames go in with ``skip_frame="NONREF"``, which makes FFmpeg drop a frame only if no
other frame refers to it (H.264/HEVC non-reference pictures, MPEG-4 B-frames), on the decoders
of :data:`SKIP_DECODERS` only, which read it per packet (libdav1d, for one, reads it once and
would go on skipping frames that are wanted later); and once every wanted frame's packet has
gone in, the decoder is drained at the next frame's packet instead of decoding on. Frames are
identified by pts downstream, so a frame skipped by mistake could only go missing (the caller
then decodes the run again without skipping), never come out as another. Runs in the thread
that owns the decoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tvl_async._index import VideoIndex

__all__ = ["SKIP_DECODERS", "decode_packets"]

#: FFmpeg decoders whose ``skip_frame`` applies per packet (tested against full decoding).
SKIP_DECODERS = frozenset({"h264", "hevc", "mpeg4"})


def decode_packets(
    ctx: Any, packets: Iterable[Any], index: VideoIndex, wanted: set[int] | None
) -> Iterator[Any]:
    """Frames that ``ctx`` (a PyAV codec context) decodes from ``packets``, then the drained rest.

    Args:
        ctx: the stream's codec context (flushed by the caller before a new run).
        packets: one run's packets in decode order, from a keyframe.
        index: the file's index (maps packet pts to presentation indices).
        wanted: presentation indices wanted from this run; None decodes every packet.

    ``ctx.skip_frame`` is back to ``"DEFAULT"`` when the generator ends or is closed.
    """
    unsent = None if wanted is None else set(wanted)
    want = wanted or set()
    can_skip = unsent is not None and ctx.name in SKIP_DECODERS
    skipping = False
    try:
        for pkt in packets:
            if unsent is not None:
                i = index.frame_of_pts(pkt.pts) if pkt.pts is not None else None
                if i is not None and not unsent:
                    break  # a new frame starts: every wanted one is complete
                # a packet that names no shown frame (a second field, a hidden frame) decodes
                skip = can_skip and i is not None and i not in want
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
                if i is not None:
                    unsent.discard(i)
            yield from ctx.decode(pkt)
        if skipping:
            ctx.skip_frame = "DEFAULT"
            skipping = False
        yield from ctx.decode(None)
    finally:
        if skipping:
            ctx.skip_frame = "DEFAULT"

"""Decode a run of packets with no more decoding than the wanted frames need (PyAV).

:func:`decode_packets` feeds a decoder the packets of one run (from a keyframe) and yields what
comes out. Told which frames are wanted, it spares work where that is exact: the packets of other
shown frames that no frame refers to go in with ``skip_frame="NONREF"`` (FFmpeg then drops
them): H.264 only, where every slice of the packet says so itself (``nal_ref_idc`` 0, read here
from the NAL headers: FFmpeg also reports no decoding error for a packet sent with
``skip_frame`` set, so a damaged reference frame must never be sent that way; and libdav1d,
for one, reads ``skip_frame`` once and would go on skipping frames wanted later). Decoding
goes on past the last wanted frame's packet as far as the caller reads (the decoder's reorder
delay): draining there instead would save about one frame per run but would also no longer
meet damage in the packets that follow, which full decoding reports. Frames are identified by
pts downstream, so a frame skipped by mistake could only go missing (the caller then decodes
the run again without skipping), never come out as another. Runs in the thread that owns the
decoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tvl_async._index import VideoIndex

__all__ = ["decode_packets", "h264_nonref"]

_H264_SLICE, _H264_IDR = 1, 5
_H264_HARMLESS = frozenset({6, 9, 12})  # SEI, access unit delimiter, filler


def h264_nonref(data: memoryview, length_size: int | None) -> bool:
    """Whether an H.264 packet holds slices and only non-reference slices (``nal_ref_idc`` 0)
    besides SEI, delimiters and filler: no other frame can refer to it.

    Args:
        data: the packet's bytes.
        length_size: NAL length field size in bytes (``avcC``, MP4/MKV); None for Annex B
            start codes (MPEG-TS, raw streams).
    """
    headers: list[int] = []
    n = len(data)
    if length_size is None:
        buf = bytes(data)
        i = buf.find(b"\x00\x00\x01")
        while 0 <= i < n - 3:
            headers.append(buf[i + 3])
            i = buf.find(b"\x00\x00\x01", i + 3)
    else:
        i = 0
        while i + length_size < n:
            size = int.from_bytes(data[i : i + length_size], "big")
            headers.append(data[i + length_size])
            i += length_size + size
    slices = 0
    for h in headers:
        kind, ref = h & 31, (h >> 5) & 3
        if kind == _H264_SLICE and ref == 0:
            slices += 1
        elif kind == _H264_IDR or kind not in _H264_HARMLESS:
            return False
    return slices > 0


def _length_size(ctx: Any) -> int | None:
    """NAL length size of an ``avcC`` H.264 stream; None for Annex B (no ``avcC``)."""
    extra = ctx.extradata
    if extra and len(extra) > 4 and extra[0] == 1:
        return int(extra[4] & 3) + 1
    return None


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
    want = wanted or set()
    can_skip = wanted is not None and ctx.name == "h264"
    length_size = _length_size(ctx) if can_skip else None
    skipping = False
    try:
        for pkt in packets:
            if can_skip:
                i = index.frame_of_pts(pkt.pts) if pkt.pts is not None else None
                # a packet that names no shown frame (a second field, a hidden frame) decodes
                skip = i is not None and i not in want and h264_nonref(memoryview(pkt), length_size)
                if skip != skipping:
                    ctx.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            yield from ctx.decode(pkt)
        if skipping:
            ctx.skip_frame = "DEFAULT"
            skipping = False
        yield from ctx.decode(None)
    finally:
        if skipping:
            ctx.skip_frame = "DEFAULT"

"""Compressed packets for NVDEC, demuxed by PyAV and positioned by our index (no decoding).

:class:`PacketSource` seeks to the keyframe packet our index names for a GOP (never trusting
PyNvVideoCodec's demuxer), yields every packet from there in decode order as an
:class:`EncodedPacket`, converts H.264/HEVC to Annex B (``h264_mp4toannexb``/``hevc_mp4toannexb``:
NVDEC parses only that) and gives AV1 keyframes without an in-band sequence header the one from
the container. It blocks on file I/O and belongs to one thread at a time; it needs no GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tvl_async._backends.base import packets_from_key, pts_positions
from tvl_async._errors import DecodeError
from tvl_async._index import VideoIndex, open_container

log = logging.getLogger(__name__)

# FFmpeg decoder/codec names (``VideoIndex.codec``) -> PyNvVideoCodec ``cudaVideoCodec`` member.
NVDEC_CODECS: dict[str, str] = {
    "h264": "H264",
    "hevc": "HEVC",
    "vp8": "VP8",
    "libvpx": "VP8",
    "vp9": "VP9",
    "libvpx-vp9": "VP9",
    "av1": "AV1",
    "libdav1d": "AV1",
    "libaom-av1": "AV1",
    "mpeg1video": "MPEG1",
    "mpeg2video": "MPEG2",
}
ANNEXB_FILTERS: dict[str, str] = {"H264": "h264_mp4toannexb", "HEVC": "hevc_mp4toannexb"}


def nvdec_codec(index: VideoIndex) -> str | None:
    """The ``cudaVideoCodec`` member name for the file's codec, or None if NVDEC has none."""
    return NVDEC_CODECS.get(index.codec)


@dataclass
class EncodedPacket:
    """One compressed packet ready for the decoder.

    Attributes:
        data: the bytes as a uint8 array (a view that keeps PyAV's packet alive).
        pts: presentation timestamp in stream time-base units.
    """

    data: np.ndarray
    pts: int


class PacketSource:
    """PyAV demuxer positioned by our index; blocks on file I/O; one thread at a time.

    Args:
        index: the file's index.
    """

    def __init__(self, index: VideoIndex) -> None:
        self.index = index
        self._codec = nvdec_codec(index)
        self._container = open_container(index.path)
        try:
            self._stream = self._container.streams[index.stream_index]
            if self._stream.type != "video":
                raise DecodeError(
                    f"{index.path}: stream {index.stream_index} is not video; "
                    f"the file changed since it was indexed"
                )
        except BaseException:
            self._container.close()
            raise
        self._pos_of_pts = pts_positions(index)
        extradata = self._stream.codec_context.extradata
        self._av1_config = _av1_config_obus(extradata) if self._codec == "AV1" else b""

    def close(self) -> None:
        """Close the container; safe to call twice."""
        with contextlib.suppress(Exception):
            self._container.close()

    def packets_from(self, key: int) -> Iterator[EncodedPacket]:
        """Yield the stream's packets from keyframe entry ``key`` to the end, decoder-ready.

        Raises:
            DecodeError: the demuxer cannot be positioned on the keyframe packet.
        """
        first = True
        bsf = self._new_filter()
        for pkt in self._raw_packets_from(key):
            outs = bsf.filter(pkt) if bsf is not None else [pkt]
            for out in outs:
                packet = self._to_encoded(out, pkt.pts, first)
                if packet is not None:
                    first = False
                    yield packet
        if bsf is not None:
            for out in bsf.filter(None):
                packet = self._to_encoded(out, out.pts, first)
                if packet is not None:
                    yield packet

    def _new_filter(self) -> Any:
        name = ANNEXB_FILTERS.get(self._codec or "")
        if name is None:
            return None
        from av.bitstream import BitStreamFilterContext

        return BitStreamFilterContext(name, self._stream)

    def _to_encoded(self, pkt: Any, fallback_pts: Any, first: bool) -> EncodedPacket | None:
        data = np.frombuffer(memoryview(pkt), dtype=np.uint8) if pkt.size else None
        if data is None or data.size == 0:
            return None
        pts = pkt.pts if pkt.pts is not None else fallback_pts
        if pts is None:
            raise DecodeError(
                f"{self.index.path}: a packet without pts; the file changed since it was indexed"
            )
        if first and self._av1_config and not av1_has_sequence_header(data.tobytes()):
            # Seeking may land on a keyframe without an in-band sequence header; give NVDEC the
            # one from the container (av1C configOBUs) in front of it.
            data = np.frombuffer(self._av1_config + data.tobytes(), dtype=np.uint8)
        return EncodedPacket(data, int(pts))

    def _raw_packets_from(self, key: int) -> Iterator[Any]:
        """PyAV packets starting exactly at keyframe entry ``key`` (``base.packets_from_key``)."""
        return packets_from_key(self._container, self._stream, self.index, key, self._pos_of_pts)


def _av1_config_obus(extradata: bytes | None) -> bytes:
    """The configOBUs of an ``av1C`` record (marker/version byte 0x81), else empty."""
    if not extradata or len(extradata) <= 4 or extradata[0] != 0x81:
        return b""
    return bytes(extradata[4:])


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value, n = 0, 0
    while pos + n < len(data) and n < 8:
        byte = data[pos + n]
        value |= (byte & 0x7F) << (7 * n)
        n += 1
        if not byte & 0x80:
            break
    return value, n


def av1_has_sequence_header(data: bytes) -> bool:
    """True if the AV1 temporal unit ``data`` (low-overhead format) holds a sequence header OBU."""
    pos = 0
    while pos < len(data):
        header = data[pos]
        obu_type = (header >> 3) & 0x0F
        if obu_type == 1:
            return True
        has_extension = (header >> 2) & 1
        has_size = (header >> 1) & 1
        pos += 1 + has_extension
        if not has_size:
            return False
        size, n = _leb128(data, pos)
        if n == 0:
            return False
        pos += n + size
    return False

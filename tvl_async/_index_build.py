"""Building a :class:`~tvl_async._index_model.VideoIndex`: demux a stream once, no decoding.

Frame ``i`` is the i-th frame a player shows: packets the container marks as discarded (MP4 edit
lists) are not frames, B-frame reordering is undone by sorting on pts, and no header frame count
or constant rate is trusted. For each frame the index records its pts, its time in seconds and
the keyframe to seek to (the latest keyframe in decode order that is at or before the frame both
in decode and in presentation order, so open-GOP leading pictures decode from the previous
keyframe).

Streams without usable timestamps (raw elementary streams; duplicate or missing pts) fall back to
an exact one-time decode scan: frames are counted as the decoder outputs them, and reading them
later decodes forward from the start (``timestamps_ok`` is False).

The display matrix (rotation, mirror) is read from the first decoded frame's side data (PyAV
exposes no stream-level getter): the one frame decoded per file at indexing time.
Functions here block on file I/O and may run in any thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from tvl_async._errors import UnsupportedCodecError, VideoOpenError
from tvl_async._index_model import NO_TS, ORIENTATIONS, VideoIndex
from tvl_async._index_open import (
    open_container,
    select_video_stream,
    source_error,
    stat_source,
    survive_new_streams,
)

log = logging.getLogger(__name__)


_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


def _scan_info(ctx: Any) -> dict[str, Any]:
    """Colour-space code and field order as FFmpeg reports them (for the GPU decoder)."""
    info: dict[str, Any] = {"color_space": 2, "field_order": "unknown"}
    with contextlib.suppress(Exception):
        info["color_space"] = int(ctx.colorspace)
    with contextlib.suppress(Exception):
        info["field_order"] = _FIELD_ORDERS.get(int(ctx.field_order), "unknown")
    return info


def _color_info(stream: Any) -> tuple[str | None, bool]:
    ctx = stream.codec_context
    matrix = None
    with contextlib.suppress(Exception):
        cs = int(ctx.colorspace)
        matrix = {1: "bt709", 5: "bt601", 6: "bt601"}.get(cs)
    full = False
    with contextlib.suppress(Exception):
        full = int(ctx.color_range) == 2
    if stream.codec_context.pix_fmt and stream.codec_context.pix_fmt.startswith("yuvj"):
        full = True
    return matrix, full


def orientation_of(matrix: np.ndarray | None, path: str = "") -> tuple[int, bool]:
    """``(rotation, mirrored)`` from a 3x3 display matrix (9 int32, FFmpeg's layout).

    ``rotation``: counter-clockwise degrees (0/90/180/270) as ``ffprobe`` reports them. An angle
    that is not a multiple of 90 degrees is ignored with a warning (frames stay as stored).
    """
    if matrix is None or len(matrix) != 9:
        return 0, False
    signs = tuple(int(np.sign(round(float(matrix[i]) / 65536.0, 2))) for i in (0, 1, 3, 4))
    found = ORIENTATIONS.get(signs)  # type: ignore[arg-type]
    if found is None:
        log.warning(
            "%s: the display matrix %s is not a quarter turn or mirror; frames are given as stored",
            path,
            [int(v) for v in matrix],
        )
        return 0, False
    return found[0] * 90, found[1]


def _frame_matrix(frame: Any) -> np.ndarray | None:
    for sd in frame.side_data:
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            return np.frombuffer(bytes(sd), dtype=np.int32)[:9]
    return None


class _OrientationProbe:
    """Decodes packets of the stream until one frame comes out, to read its display matrix."""

    def __init__(self, stream: Any) -> None:
        self.ctx = stream.codec_context
        self.matrix: np.ndarray | None = None
        self.done = False
        with contextlib.suppress(Exception):
            self.ctx.thread_type = "NONE"  # the first frame out of the first packets

    def feed(self, pkt: Any) -> None:
        if self.done:
            return
        try:
            frames = self.ctx.decode(pkt)
        except Exception as e:  # a damaged start: the orientation stays unknown (none)
            log.debug("orientation probe: decode failed (%s)", e)
            self.done = True
            return
        if frames:
            self.matrix = _frame_matrix(frames[0])
            self.done = True

    def finish(self) -> None:
        if not self.done:
            with contextlib.suppress(Exception):
                frames = self.ctx.decode(None)
                if frames:
                    self.matrix = _frame_matrix(frames[0])
        self.done = True


# ------------------------------------------------------------------------------- building


@dataclass
class _Packet:
    pts: int | None
    dts: int | None
    key: bool
    discard: bool
    duration: int
    pos: int = -1  # byte offset in the file (-1: unknown)
    size: int = 0


def _demux_packets(
    container: av.container.InputContainer,
    stream: Any,
    path: str,
    probe: _OrientationProbe | None = None,
) -> list[_Packet]:
    packets: list[_Packet] = []
    trailing_corrupt = 0  # packets the demuxer flagged as incomplete, at the end so far
    try:
        for pkt in survive_new_streams(container.demux(stream)):
            if pkt.size == 0:
                continue
            if probe is not None and not probe.done:
                probe.feed(pkt)
            corrupt = bool(getattr(pkt, "is_corrupt", False))
            trailing_corrupt = trailing_corrupt + 1 if corrupt else 0
            packets.append(
                _Packet(
                    pkt.pts,
                    pkt.dts,
                    bool(pkt.is_keyframe),
                    bool(getattr(pkt, "is_discard", False)),
                    int(pkt.duration or 0),
                    int(pkt.pos if pkt.pos is not None else -1),
                    int(pkt.size),
                )
            )
    except av.FFmpegError as e:
        raise VideoOpenError(
            f"{path}: the stream is corrupt or truncated after {len(packets)} packets "
            f"({type(e).__name__}: {e})"
        ) from e
    if trailing_corrupt and trailing_corrupt < len(packets):
        # A truncated file: the last packet(s) were cut short. They are not frames (the decoder
        # would fail on them); every complete packet before them decodes normally.
        del packets[-trailing_corrupt:]
        log.warning(
            "%s: the file is truncated: its last %d packet(s) are incomplete and are not "
            "indexed; %d complete packets remain",
            path,
            trailing_corrupt,
            len(packets),
        )
    return packets


def _timestamps_usable(packets: list[_Packet]) -> bool:
    pts = [p.pts for p in packets]
    if not pts or any(p is None for p in pts):
        return False
    return len(set(pts)) == len(pts)


def _assign_seek_keys(packets: list[_Packet]) -> tuple[list[int], list[int]]:
    """Keyframe table (decode positions) and, per shown packet, the table entry to seek to."""
    keys: list[int] = []
    seek_of_packet: list[int] = []
    for pos, pkt in enumerate(packets):
        if pkt.key:
            keys.append(pos)
        if pkt.discard:
            seek_of_packet.append(-1)
            continue
        k = len(keys) - 1
        # A frame shown before its keyframe (open-GOP leading picture) needs the keyframe before.
        while k > 0 and _shown_after(packets[keys[k]], pkt):
            k -= 1
        seek_of_packet.append(k)
    return keys, seek_of_packet


def _shown_after(a: _Packet, b: _Packet) -> bool:
    return a.pts is not None and b.pts is not None and a.pts > b.pts


def _build_from_packets(packets: list[_Packet], tb: Fraction) -> dict[str, Any]:
    keys, seek_of_packet = _assign_seek_keys(packets)
    if not keys:
        keys = [0]
    shown = [i for i, p in enumerate(packets) if not p.discard]
    shown.sort(key=lambda i: packets[i].pts)  # type: ignore[arg-type,return-value]
    pts = np.array([packets[i].pts for i in shown], dtype=np.int64)
    seek_key = np.array([max(seek_of_packet[i], 0) for i in shown], dtype=np.int64)
    is_key = np.array([packets[i].key for i in shown], dtype=bool)
    last = packets[shown[-1]]
    if last.duration > 0:
        last_dur = float(last.duration * tb)
    elif len(pts) > 1:
        last_dur = float((pts[-1] - pts[0]) * tb) / (len(pts) - 1)
    else:
        last_dur = 0.0
    return {
        "pts": pts,
        "times": pts.astype(np.float64) * float(tb),
        "is_keyframe": is_key,
        "seek_key": seek_key,
        "key_pts": np.array([_ts(packets[k].pts) for k in keys], dtype=np.int64),
        "key_dts": np.array([_ts(packets[k].dts) for k in keys], dtype=np.int64),
        "key_decode_pos": np.array(keys, dtype=np.int64),
        "packet_pts": np.array([_ts(p.pts) for p in packets], dtype=np.int64),
        "packet_pos": np.array([p.pos for p in packets], dtype=np.int64),
        "packet_size": np.array([p.size for p in packets], dtype=np.int64),
        "frame_duration": last_dur,
    }


def _ts(value: int | None) -> int:
    return NO_TS if value is None else int(value)


def _build_by_decode_scan(path: str, rate: float, stream_index: int) -> dict[str, Any]:
    """Exact fallback without timestamps: decode every frame once and count them."""
    keyflags: list[bool] = []
    with open_container(path) as container:
        stream = select_video_stream(container, path, stream_index)
        stream.thread_type = "AUTO"
        try:
            for frame in survive_new_streams(container.decode(stream)):
                keyflags.append(bool(frame.key_frame))
        except av.FFmpegError as e:
            raise VideoOpenError(
                f"{path}: decoding failed after {len(keyflags)} frames: {e}"
            ) from e
    n = len(keyflags)
    rate = rate if rate > 0 else 25.0
    pts = np.arange(n, dtype=np.int64)
    return {
        "pts": pts,
        "times": pts / rate,
        "is_keyframe": np.array(keyflags, dtype=bool),
        "seek_key": np.zeros(n, dtype=np.int64),
        "key_pts": np.array([NO_TS], dtype=np.int64),
        "key_dts": np.array([NO_TS], dtype=np.int64),
        "key_decode_pos": np.array([0], dtype=np.int64),
        "packet_pts": np.zeros(0, dtype=np.int64),
        "frame_duration": 1.0 / rate,
    }


def build_index(path: str | os.PathLike[str], stream_index: int | None = None) -> VideoIndex:
    """Demux ``path`` once (decoding only its first frame, for the display matrix) and return
    the index of stream ``stream_index`` (None: ffmpeg's best video stream); does not touch the
    cache; blocks."""
    p, size, version = stat_source(path)
    with open_container(p) as container:
        stream = select_video_stream(container, str(p), stream_index)
        ctx = stream.codec_context
        if ctx is None or not ctx.name:
            raise UnsupportedCodecError(
                f"{p}: this FFmpeg build has no decoder for the video stream"
            )
        tb = stream.time_base or Fraction(1, 1)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        matrix, full = _color_info(stream)
        meta: dict[str, Any] = {
            "stream_index": stream.index,
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "coded_width": ctx.width,
            "coded_height": ctx.height,
            "header_frames": int(stream.frames or 0),
            "color_matrix": matrix,
            "full_range": full,
            **_scan_info(ctx),
        }
        probe = _OrientationProbe(stream)
        packets = _demux_packets(container, stream, str(p), probe)
        if (error := source_error(container)) is not None:
            raise error  # FFmpeg took the failed read for the end of the file
        probe.finish()
        meta["rotation"], meta["mirrored"] = orientation_of(probe.matrix, str(p))
    ok = _timestamps_usable(packets)
    if ok and all(pk.discard for pk in packets):
        ok = False
    arrays = (
        _build_from_packets(packets, tb)
        if ok
        else _build_by_decode_scan(str(p), rate, meta["stream_index"])
    )
    if len(arrays["pts"]) == 0:
        raise VideoOpenError(
            f"{p}: the video stream has no frames (header claims {meta['header_frames']}); "
            f"the file may be truncated or damaged"
        )
    times = arrays["times"]
    if not rate and len(times) > 1 and times[-1] > times[0]:
        rate = (len(times) - 1) / float(times[-1] - times[0])
    if not ok:
        tb = Fraction(1, 1) / Fraction(rate or 25.0).limit_denominator(1001)
    return VideoIndex(
        path=str(p),
        file_size=size,
        mtime_ns=version,
        time_base=tb,
        average_rate=rate,
        timestamps_ok=ok,
        **meta,
        **arrays,
    )

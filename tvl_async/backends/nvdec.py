"""GPU decoding with NVDEC through PyNvVideoCodec (the ``nvdec`` extra), frame-exact.

PyNvVideoCodec is imported lazily: importing this module needs neither the package nor a GPU;
constructing :class:`NvdecBackend` without them raises
:class:`~tvl_async.errors.BackendUnavailableError` saying what is missing.

How a decode works (the same semantics as the CPU backend, ``pyav.py``):

1. The wanted frames are grouped into runs by the keyframe our index names for them.
2. For each run, PyAV demuxes the file (never PyNvVideoCodec's demuxer): it seeks to
   ``min(key_pts, key_dts)`` backward, skips packets until the keyframe packet itself (found by its
   pts in ``index.packet_pts``), and from there every packet goes to the decoder, through
   ``h264_mp4toannexb``/``hevc_mp4toannexb`` for H.264/HEVC (NVDEC parses Annex B only).
3. NVDEC returns frames in display order, each carrying the pts of the packet it came from; the
   pts is mapped to our frame index with ``index.frame_of_pts``. Only the requested frames are
   converted (NV12/P016 to RGB on the GPU with :mod:`tvl_async.backends.yuv`, using the index's
   colour matrix and range); feeding stops once the run's frames are out, then the decoder is
   flushed. PyNvVideoCodec's batch-by-index calls are never used: they silently drop duplicate
   and out-of-range indices.
4. Frames are returned in the order asked, duplicates included, as ``[3, H, W]`` uint8 CUDA
   tensors. They never leave device memory.

CUDA: decoders are created on the device's primary context (the one PyTorch uses) and bound to a
CUDA stream owned by the backend; conversions run on that stream. Before frames are returned, the
caller's current stream is made to wait on it (no host synchronisation) and the tensors are
marked with ``record_stream`` for it. Decoders are cached per (codec, bit depth) and reconfigured
for size changes, least recently used first out.

Threads: a backend belongs to the thread that created it (the service thread). It creates, uses and
destroys its decoders there; nothing here is thread-safe.

The GPU-only code is confined to :class:`_NvDecoder`, :func:`_load_pynvvideocodec` and
:class:`NvdecBackend`; packet feeding and frame selection live in :class:`_Engine`, which the CPU
tests drive with a stand-in decoder.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch

from tvl_async.backends.base import READ_MODES, DecodeResult, ReadMode, plan_runs
from tvl_async.backends.yuv import nv12_to_rgb, p016_to_rgb
from tvl_async.errors import (
    BackendUnavailableError,
    DecodeError,
    TvlAsyncError,
    UnsupportedCodecError,
)
from tvl_async.index import NO_TS, VideoIndex, open_container

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install tvl-async[nvdec]"

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
# Highest bit depth NVDEC decodes per codec (4:2:0).
MAX_BIT_DEPTH: dict[str, int] = {"H264": 8, "HEVC": 12, "VP8": 8, "VP9": 12, "AV1": 10,
                                 "MPEG1": 8, "MPEG2": 8}
# Size limits used when the driver cannot be asked (GetDecoderCaps): (min w, min h, max w, max h).
STATIC_LIMITS: dict[str, tuple[int, int, int, int]] = {
    "H264": (48, 16, 4096, 4096),
    "HEVC": (144, 144, 8192, 8192),
    "VP8": (48, 16, 4096, 4096),
    "VP9": (128, 128, 8192, 8192),
    "AV1": (128, 128, 8192, 8192),
    "MPEG1": (48, 16, 4080, 4080),
    "MPEG2": (48, 16, 4080, 4080),
}
# 4:2:0 pixel formats and their bit depth; anything else (4:2:2, 4:4:4, gray) stays on the CPU.
PIX_FMT_DEPTH: dict[str, int] = {
    "yuv420p": 8, "yuvj420p": 8, "nv12": 8,
    "yuv420p10le": 10, "yuv420p10be": 10, "p010le": 10,
    "yuv420p12le": 12, "yuv420p12be": 12,
}
ANNEXB_FILTERS: dict[str, str] = {"H264": "h264_mp4toannexb", "HEVC": "hevc_mp4toannexb"}
# Codecs whose 4:2:0 chroma is co-sited with the even columns (FFmpeg reports "left"); the others
# leave it unspecified and FFmpeg centres it. Used to match the CPU path's 10-bit conversion.
LEFT_SITED: frozenset[str] = frozenset({"H264", "HEVC", "MPEG2"})
# Guard on end-of-stream flush calls per drain (NVDEC empties itself in one call).
MAX_FLUSH_CALLS = 64


# ------------------------------------------------------------------------------- support


def nvdec_codec(index: VideoIndex) -> str | None:
    """The ``cudaVideoCodec`` member name for the file's codec, or None if NVDEC has none."""
    return NVDEC_CODECS.get(index.codec)


def static_unsupported_reason(index: VideoIndex) -> str | None:
    """Why NVDEC cannot decode ``index`` judging from the index alone, or None if it may.

    Checks the codec, the pixel format (4:2:0 at 8/10/12 bits), per-codec bit depth, timestamps
    (frames are identified by pts) and conservative size limits. Pure: needs no GPU.
    """
    codec = nvdec_codec(index)
    if codec is None:
        names = ", ".join(sorted({k for k in NVDEC_CODECS if "lib" not in k}))
        return f"codec {index.codec!r} has no NVDEC decoder here (supported: {names})"
    if index.pix_fmt not in PIX_FMT_DEPTH:
        return (f"pixel format {index.pix_fmt!r} is not 4:2:0 at 8/10/12 bits "
                f"(supported: {', '.join(PIX_FMT_DEPTH)})")
    depth = PIX_FMT_DEPTH[index.pix_fmt]
    if depth > MAX_BIT_DEPTH[codec]:
        return f"NVDEC decodes {codec} at up to {MAX_BIT_DEPTH[codec]} bits, this file has {depth}"
    if not index.timestamps_ok:
        return "the stream has no usable timestamps (NVDEC output is matched to frames by pts)"
    min_w, min_h, max_w, max_h = STATIC_LIMITS[codec]
    if not (min_w <= index.width <= max_w and min_h <= index.height <= max_h):
        return (f"size {index.width}x{index.height} is outside NVDEC's {codec} range "
                f"{min_w}x{min_h}..{max_w}x{max_h}")
    return None


def caps_unsupported_reason(index: VideoIndex, caps: dict[str, int]) -> str | None:
    """Why the GPU's decoder capabilities (``GetDecoderCaps``) exclude ``index``, or None."""
    if not caps.get("supported", 0):
        return f"this GPU has no NVDEC support for {nvdec_codec(index)} at this bit depth"
    w, h = index.width, index.height
    min_w, min_h = caps.get("width_min", 0), caps.get("height_min", 0)
    max_w, max_h = caps.get("width_max", 1 << 30), caps.get("height_max", 1 << 30)
    if not (min_w <= w <= max_w and min_h <= h <= max_h):
        return f"size {w}x{h} is outside this GPU's NVDEC range {min_w}x{min_h}..{max_w}x{max_h}"
    mbs = ((w + 15) // 16) * ((h + 15) // 16)
    if mbs > caps.get("mb_num_max", 1 << 30):
        return f"{mbs} macroblocks exceed this GPU's NVDEC limit {caps['mb_num_max']}"
    return None


# ------------------------------------------------------------------------------- demuxing


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
                raise DecodeError(f"{index.path}: stream {index.stream_index} is not video; "
                                  f"the file changed since it was indexed")
        except BaseException:
            self._container.close()
            raise
        self._pos_of_pts = {int(p): i for i, p in enumerate(index.packet_pts) if p != NO_TS}
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
            raise DecodeError(f"{self.index.path}: a packet without pts; the file changed since "
                              f"it was indexed")
        if first and self._av1_config and not av1_has_sequence_header(data.tobytes()):
            # Seeking may land on a keyframe without an in-band sequence header; give NVDEC the
            # one from the container (av1C configOBUs) in front of it.
            data = np.frombuffer(self._av1_config + data.tobytes(), dtype=np.uint8)
        return EncodedPacket(data, int(pts))

    def _raw_packets_from(self, key: int) -> Iterator[Any]:
        """PyAV packets starting exactly at keyframe entry ``key`` (see ``pyav.py``)."""
        index = self.index
        target = int(index.key_decode_pos[key])
        stamps = [int(t) for t in (index.key_pts[key], index.key_dts[key]) if t != NO_TS]
        if not stamps:
            raise DecodeError(f"{index.path}: keyframe {key} has no timestamp to seek to")
        seek_ts = min(stamps)
        for _attempt in range(2):
            self._container.seek(seek_ts, stream=self._stream, backward=True, any_frame=False)
            demux = self._container.demux(self._stream)
            overshoot = False
            for pkt in demux:
                if pkt.pts is None:
                    if pkt.size == 0:
                        continue
                    raise DecodeError(f"{index.path}: a packet without pts after seeking to "
                                      f"keyframe {key}; the file changed since it was indexed")
                pos = self._pos_of_pts.get(int(pkt.pts))
                if pos is None or pos < target:
                    continue
                if pos > target:
                    overshoot = True
                    break
                yield pkt
                yield from (p for p in demux if p.size > 0)
                return
            if not overshoot:
                break
            stamps0 = [int(t) for t in (index.key_pts[0], index.key_dts[0]) if t != NO_TS]
            seek_ts = min(stamps0) - 1
            log.debug("%s: seek to keyframe %d overshot; retrying from the start", index.path, key)
        raise DecodeError(f"{index.path}: could not position the demuxer on keyframe {key} "
                          f"(pts {index.key_pts[key]}); the file may be damaged")


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


# --------------------------------------------------------------------------- the engine


class FrameDecoder(Protocol):
    """What :class:`_Engine` needs from a hardware decoder (NVDEC, or a stand-in in tests).

    ``feed`` and ``flush`` return ``(pts, frame)`` pairs in display order; a frame stays valid
    only until the next ``feed``/``flush`` (NVDEC reuses its output buffers), so the engine converts
    the frames it keeps with ``to_rgb`` right away.
    """

    dirty: bool

    def feed(self, packet: EncodedPacket) -> list[tuple[int, Any]]:
        """Decode one packet; returns the frames that became ready."""
        ...

    def flush(self) -> list[tuple[int, Any]]:
        """End of stream: return frames still inside (the engine calls it until it returns
        none); the decoder then accepts a new stream."""
        ...

    def to_rgb(self, frame: Any, index: VideoIndex, size: tuple[int, int] | None) -> torch.Tensor:
        """Convert one output frame to a new ``[3, H, W]`` uint8 tensor."""
        ...

    def close(self) -> None:
        """Release the decoder."""
        ...


DecoderFor = Callable[[VideoIndex, bool], FrameDecoder]


class _Engine:
    """Packet feeding and frame selection over any :class:`FrameDecoder`; device-agnostic.

    Args:
        decoder_for: ``(index, dedicated)`` -> decoder for that file; ``dedicated`` asks for a
            decoder of its own (for :meth:`stream`), which the engine closes when done.
        scope: context manager entered around every decoder call and conversion (the CUDA stream).
        deliver: called with frames before they are handed to the caller (stream handoff).
        retire: called with a dedicated decoder when a stream ends (may run in another thread
            when a generator is garbage-collected, so it must only queue the decoder).
        max_open_files: demuxers kept open, least recently used closed first.
    """

    def __init__(
        self,
        decoder_for: DecoderFor,
        *,
        scope: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        deliver: Callable[[Sequence[torch.Tensor]], None] | None = None,
        retire: Callable[[FrameDecoder], None] | None = None,
        max_open_files: int = 16,
    ) -> None:
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be >= 1, got {max_open_files}")
        self._decoder_for = decoder_for
        self._scope = scope
        self._deliver = deliver or (lambda frames: None)
        self._retire = retire or (lambda dec: dec.close())
        self.max_open_files = max_open_files
        self.frames_decoded = 0
        self._sources: OrderedDict[str, PacketSource] = OrderedDict()

    # -------------------------------------------------------------------- public

    def decode(self, index: VideoIndex, frames: Sequence[int], *,
               size: tuple[int, int] | None = None, mode: ReadMode = "auto") -> DecodeResult:
        """See :meth:`tvl_async.backends.base.Backend.decode`."""
        if mode not in READ_MODES:
            raise ValueError(
                f"Invalid read mode ({mode}). Supported values are {', '.join(READ_MODES)}")
        wanted = [index.check_frame(i) for i in frames]
        if not wanted:
            return DecodeResult([], 0)
        if not index.timestamps_ok:
            raise UnsupportedCodecError(
                f"{index.path}: the stream has no usable timestamps, so NVDEC output cannot be "
                f"matched to frames; decode this file on the CPU (backend='pyav')")
        got: dict[int, torch.Tensor] = {}
        before = self.frames_decoded
        src = self._source(index)
        dec = self._decoder_for(index, False)
        try:
            for key, run in plan_runs(index, wanted, mode):
                self._decode_run(src, dec, index, key, run, got, size)
        except (TvlAsyncError, torch.cuda.OutOfMemoryError):
            self._forget(index.path)
            raise
        except Exception as e:  # FFmpeg, PyNvVideoCodec (PyNvVCException) or CUDA errors
            self._forget(index.path)
            raise DecodeError(f"{index.path}: decoding frames {short(wanted)} failed: "
                              f"{type(e).__name__}: {e}") from e
        out = [got[i] for i in wanted]
        self._deliver(out)
        return DecodeResult(out, self.frames_decoded - before)

    def stream(self, index: VideoIndex, start: int = 0, *,
               size: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        """Yield frames ``start…n_frames-1`` decoding forward once, with a decoder of its own."""
        start = index.check_frame(start)
        if not index.timestamps_ok:
            raise UnsupportedCodecError(
                f"{index.path}: the stream has no usable timestamps; decode it on the CPU")
        src = PacketSource(index)
        dec: FrameDecoder | None = None
        expected = start
        try:
            dec = self._decoder_for(index, True)
            packets = src.packets_from(int(index.seek_key[start]))
            flushes = 0
            done = False
            while not done:
                with self._scope():
                    pkt = next(packets, None) if flushes == 0 else None
                    if pkt is not None:
                        outs = dec.feed(pkt)
                        dec.dirty = True
                    else:  # end of stream: drain (converting between calls)
                        outs = dec.flush()
                        flushes += 1
                        done = not outs or flushes >= MAX_FLUSH_CALLS
                        dec.dirty = not done
                    ready: list[torch.Tensor] = []
                    for pts, frame in outs:
                        self.frames_decoded += 1
                        i = index.frame_of_pts(pts)
                        if i is None or i < expected:
                            continue
                        if i != expected:
                            raise DecodeError(
                                f"{index.path}: frame {expected} never came out of the decoder "
                                f"(got frame {i} instead)")
                        ready.append(dec.to_rgb(frame, index, size))
                        expected += 1
                for t in ready:
                    self._deliver([t])
                    yield t
            if expected != index.n_frames:
                raise DecodeError(
                    f"{index.path}: the decoder stopped at frame {expected} of {index.n_frames}")
        except (TvlAsyncError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as e:
            raise DecodeError(f"{index.path}: decoding from frame {start} failed at frame "
                              f"{expected}: {type(e).__name__}: {e}") from e
        finally:
            src.close()
            if dec is not None:
                self._retire(dec)

    def close(self) -> None:
        """Close every demuxer; safe to call twice."""
        while self._sources:
            _, src = self._sources.popitem(last=False)
            src.close()

    @property
    def open_files(self) -> int:
        """Number of demuxers currently open."""
        return len(self._sources)

    # -------------------------------------------------------------------- internals

    def _source(self, index: VideoIndex) -> PacketSource:
        src = self._sources.get(index.path)
        if src is not None and src.index.mtime_ns == index.mtime_ns:
            self._sources.move_to_end(index.path)
            return src
        self._forget(index.path)
        src = PacketSource(index)
        self._sources[index.path] = src
        while len(self._sources) > self.max_open_files:
            _, old = self._sources.popitem(last=False)
            old.close()
        return src

    def _forget(self, path: str) -> None:
        src = self._sources.pop(path, None)
        if src is not None:
            src.close()

    def _settle(self, dec: FrameDecoder) -> None:
        """Flush and drop whatever an interrupted run left inside the decoder."""
        if dec.dirty:
            with self._scope():
                self._drain(dec, self._discard)

    def _discard(self, outs: list[tuple[int, Any]]) -> bool:
        self.frames_decoded += len(outs)
        return False

    def _drain(self, dec: FrameDecoder, take: Callable[[list[tuple[int, Any]]], bool]) -> None:
        """End of stream: ``flush`` until the decoder is empty, handing each batch to ``take``
        before the next call (the next call may reuse the previous frames' buffers)."""
        for _ in range(MAX_FLUSH_CALLS):
            outs = dec.flush()
            if not outs:
                break
            take(outs)
        dec.dirty = False

    def _decode_run(self, src: PacketSource, dec: FrameDecoder, index: VideoIndex, key: int,
                    run: list[int], got: dict[int, torch.Tensor],
                    size: tuple[int, int] | None) -> None:
        remaining = {i for i in run if i not in got}
        if not remaining:
            return
        last = max(remaining)
        self._settle(dec)

        def take(outs: list[tuple[int, Any]]) -> bool:
            """Keep wanted frames; True once nothing more can come for this run."""
            past = False
            for pts, frame in outs:
                self.frames_decoded += 1
                i = index.frame_of_pts(pts)
                if i is None:
                    continue
                if i in remaining:
                    got[i] = dec.to_rgb(frame, index, size)
                    remaining.discard(i)
                elif i > last:  # display order: the rest will not come
                    past = True
            return past or not remaining

        packets = src.packets_from(key)
        try:
            with self._scope():
                for pkt in packets:
                    dec.dirty = True
                    if take(dec.feed(pkt)):
                        break
                self._drain(dec, take)
        finally:
            packets.close()  # type: ignore[attr-defined]
            if dec.dirty:  # an error left frames inside: never let them leak into the next run
                with contextlib.suppress(Exception):
                    self._settle(dec)
        if remaining:
            raise DecodeError(f"{index.path}: frames {short(sorted(remaining))} never came out "
                              f"of the decoder (decoding from keyframe {key})")


def short(frames: Sequence[int], limit: int = 8) -> str:
    """``[a, b, …]`` with at most ``limit`` items, for messages."""
    items = list(frames)
    text = ", ".join(str(i) for i in items[:limit])
    return f"[{text}{', …' if len(items) > limit else ''}]"


# ------------------------------------------------------------------- PyNvVideoCodec (GPU)


def _load_pynvvideocodec(device: torch.device) -> ModuleType:
    """Import PyNvVideoCodec and check the CUDA device; BackendUnavailableError says what lacks."""
    problems: list[str] = []
    module: ModuleType | None = None
    try:
        module = importlib.import_module("PyNvVideoCodec")
    except Exception as e:  # ImportError, or the package's own driver checks failing
        problems.append(f"PyNvVideoCodec cannot be imported ({type(e).__name__}: {e}); install "
                        f"it with `{INSTALL_HINT}`")
    if not torch.cuda.is_available():
        problems.append(f"no CUDA device is visible (torch.cuda.is_available() is False; torch "
                        f"{torch.__version__}, CUDA build {torch.version.cuda})")
    elif device.index is not None and device.index >= torch.cuda.device_count():
        problems.append(f"device {device} does not exist ({torch.cuda.device_count()} CUDA "
                        f"device(s) visible)")
    if problems or module is None:
        raise BackendUnavailableError(
            "The NVDEC backend is unavailable: " + "; ".join(problems)
            + ". Use backend='pyav' to decode on the CPU.")
    return module


class _DeviceArray:
    """A raw device pointer described by ``__cuda_array_interface__`` (for ``torch.as_tensor``).

    Used instead of the frame's DLPack export because PyNvVideoCodec 2.0's DLPack shape is
    ``floor(1.5 * H)`` rows (one chroma row short for odd heights) and its P016 strides are wrong.
    """

    def __init__(self, ptr: int, rows: int, cols: int, typestr: str) -> None:
        self.__cuda_array_interface__ = {
            "shape": (rows, cols), "typestr": typestr, "data": (ptr, False),
            "version": 3, "strides": None, "stream": None,
        }


class _NvDecoder:
    """One PyNvVideoCodec decoder; used in the thread that created it (GPU only).

    Output frames are NATIVE surfaces copied by PyNvVideoCodec into its own contiguous buffers:
    ``H`` luma rows then ``ceil(H/2)`` interleaved chroma rows of ``GetWidth()`` samples (``W``
    rounded up to even), uint8 (NV12) or 16-bit with data in the high bits (P016). They are
    overwritten by the next ``Decode`` call.
    """

    def __init__(self, nvc: ModuleType, device: torch.device, stream: torch.cuda.Stream,
                 codec: str, width: int, height: int, max_width: int, max_height: int) -> None:
        self._nvc = nvc
        self.device = device
        self.codec = codec
        self.width, self.height = width, height
        self.max_width, self.max_height = max_width, max_height
        self.dirty = False
        self._dec: Any = nvc.CreateDecoder(
            gpuid=device.index or 0,
            codec=getattr(nvc.cudaVideoCodec, codec),
            cudacontext=0,  # 0: the device's primary context, the one PyTorch uses
            cudastream=stream.cuda_stream,
            usedevicememory=True,
            maxwidth=max_width,
            maxheight=max_height,
            outputColorType=nvc.OutputColorType.NATIVE,
        )

    def _packet(self, data: np.ndarray | None, pts: int) -> Any:
        pd = self._nvc.PacketData()
        pd.bsl_data = 0 if data is None else int(data.ctypes.data)
        pd.bsl = 0 if data is None else int(data.size)
        pd.pts = int(pts)
        with contextlib.suppress(AttributeError):
            pd.decode_flag = 0  # 0 with an empty packet: end of stream (flush)
        return pd

    def feed(self, packet: EncodedPacket) -> list[tuple[int, Any]]:
        data = np.ascontiguousarray(packet.data)
        frames = self._dec.Decode(self._packet(data, packet.pts))  # parses `data` before returning
        return [(int(f.getPTS()), f) for f in frames]

    def flush(self) -> list[tuple[int, Any]]:
        # One empty packet (end of stream) makes the parser display everything it holds.
        return [(int(f.getPTS()), f) for f in self._dec.Decode(self._packet(None, 0))]

    def reconfigure(self, width: int, height: int) -> None:
        """Output ``width`` x ``height`` from the next sequence on (<= the max size)."""
        self._dec.setReconfigParams(width, height)
        self.width, self.height = width, height

    def to_rgb(self, frame: Any, index: VideoIndex, size: tuple[int, int] | None) -> torch.Tensor:
        fmt = getattr(frame.format, "name", str(frame.format)).rsplit(".", 1)[-1]
        # Rows are GetWidth() samples long: the width rounded up to even for 4:2:0 output
        # (PyNvVideoCodec's NvDecoder), so an odd-width frame carries one padding column that
        # the conversion leaves out (it reads ``index.width`` columns of each row).
        w, h = int(self._dec.GetWidth()), int(self._dec.GetHeight())
        if w not in (index.width, index.width + index.width % 2) or h != index.height:
            raise DecodeError(
                f"{index.path}: NVDEC produced {w}x{h} frames, the index says "
                f"{index.width}x{index.height} (interlaced or cropped stream?); decode it on "
                f"the CPU")
        if fmt not in ("NV12", "P016"):
            raise DecodeError(f"{index.path}: NVDEC output format {fmt} is not converted "
                              f"(only NV12 and P016, i.e. 4:2:0)")
        raw = self._surface(frame, h + (h + 1) // 2, w, fmt)
        convert = nv12_to_rgb if fmt == "NV12" else p016_to_rgb
        siting = "left" if self.codec in LEFT_SITED else "center"
        return convert(raw, h, index.width, matrix=index.color_matrix, full_range=index.full_range,
                       siting=siting, size=size)

    def _surface(self, frame: Any, rows: int, cols: int, fmt: str) -> torch.Tensor:
        """The frame's output buffer as a ``[rows, cols]`` CUDA tensor, without a copy.

        uint8 for NV12; int16 holding the 16-bit P016 samples (read back as unsigned by
        :func:`~tvl_async.backends.yuv.p016_to_rgb`).
        """
        typestr = "|u1" if fmt == "NV12" else "<i2"
        ptr = int(frame.GetPtrToPlane(0))
        return torch.as_tensor(_DeviceArray(ptr, rows, cols, typestr), device=self.device)

    def close(self) -> None:
        self._dec = None


def _bit_depth(index: VideoIndex) -> int:
    return PIX_FMT_DEPTH.get(index.pix_fmt or "", 8)


class NvdecBackend:
    """Frame-exact NVDEC decoder; frames come back as ``[3, H, W]`` uint8 CUDA tensors.

    Args:
        device: the CUDA device (``"cuda"``, ``"cuda:N"`` or a ``torch.device``).
        max_decoders: NVDEC decoders kept alive (one per codec and bit depth in use).
        max_open_files: demuxers kept open.

    Raises:
        BackendUnavailableError: PyNvVideoCodec is not installed (``pip install
            tvl-async[nvdec]``) or no CUDA device is visible.
        ValueError: ``device`` is not a CUDA device, or a limit is below 1.

    Create, use and close it in one thread (the service thread); it owns a CUDA stream and the
    decoders. Methods block until the work is queued on the GPU, not until it is done.
    """

    name = "nvdec"
    _decoder_class: type[_NvDecoder] = _NvDecoder

    def __init__(self, device: str | torch.device = "cuda:0", *, max_decoders: int = 4,
                 max_open_files: int = 16) -> None:
        dev = torch.device(device)
        if dev.type != "cuda":
            raise ValueError(f"NvdecBackend decodes on a CUDA device; got device '{dev}'")
        if max_decoders < 1:
            raise ValueError(f"max_decoders must be >= 1, got {max_decoders}")
        self._nvc = _load_pynvvideocodec(dev)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.max_decoders = max_decoders
        self._stream = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        self._decoders: OrderedDict[tuple[str, int], _NvDecoder] = OrderedDict()
        self._retired: list[FrameDecoder] = []
        self._caps: dict[tuple[str, int], dict[str, int] | None] = {}
        self._owner = threading.get_ident()
        self._closed = False
        self._engine = _Engine(self._decoder_for, scope=self._scope, deliver=self._deliver,
                               retire=self._retire, max_open_files=max_open_files)

    # -------------------------------------------------------------------- public

    @property
    def frames_decoded(self) -> int:
        """Frames NVDEC produced since the backend was created."""
        return self._engine.frames_decoded

    def decode(self, index: VideoIndex, frames: Sequence[int], *,
               size: tuple[int, int] | None = None, mode: ReadMode = "auto") -> DecodeResult:
        """Decode ``frames`` of ``index.path`` on the GPU; see :class:`Backend`.

        Returned tensors are ready for the caller's current CUDA stream (it waits on the
        backend's stream, no host sync). Raises UnsupportedCodecError for files
        :meth:`supports` rejects, DecodeError when decoding fails.
        """
        self._check_open()
        self._destroy_retired()
        return self._engine.decode(index, frames, size=size, mode=mode)

    def stream(self, index: VideoIndex, start: int = 0, *,
               size: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        """Yield frames ``start…`` to the end, decoding forward once with a decoder of its own."""
        self._check_open()
        self._destroy_retired()
        return self._engine.stream(index, start, size=size)

    def supports(self, index: VideoIndex) -> bool | str:
        """``True`` if this GPU can decode ``index``, else a string saying why not.

        Note that the reason string is truthy: test with ``supports(index) is True`` (or use
        :meth:`unsupported_reason`). Asks the driver (GetDecoderCaps) once per codec and bit
        depth; blocks briefly then.
        """
        reason = self.unsupported_reason(index)
        return True if reason is None else reason

    def unsupported_reason(self, index: VideoIndex) -> str | None:
        """Why this GPU cannot decode ``index`` (codec, pixel format, bit depth, size), or None."""
        reason = static_unsupported_reason(index)
        if reason is not None:
            return reason
        codec = NVDEC_CODECS[index.codec]
        caps = self._query_caps(codec, _bit_depth(index))
        return None if caps is None else caps_unsupported_reason(index, caps)

    def close(self) -> None:
        """Wait for queued GPU work, destroy the decoders, close the files; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._engine.close()
        with contextlib.suppress(Exception):
            self._stream.synchronize()
        while self._decoders:
            _, dec = self._decoders.popitem(last=False)
            dec.close()
        self._destroy_retired(sync=False)

    @property
    def open_files(self) -> int:
        """Number of demuxers currently open."""
        return self._engine.open_files

    @property
    def decoders(self) -> int:
        """Number of NVDEC decoders alive in the cache."""
        return len(self._decoders)

    # -------------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("NvdecBackend was used after close()")

    def _scope(self) -> AbstractContextManager[Any]:
        return torch.cuda.stream(self._stream)

    def _deliver(self, frames: Sequence[torch.Tensor]) -> None:
        current = torch.cuda.current_stream(self.device)
        if current == self._stream:
            return
        current.wait_stream(self._stream)
        for t in frames:
            t.record_stream(current)

    def _retire(self, dec: FrameDecoder) -> None:
        """A stream's decoder is done: destroy it now in the owner thread (after its queued
        conversions), or later there if a generator was collected in another thread."""
        if threading.get_ident() == self._owner or self._closed:
            with contextlib.suppress(Exception):
                self._stream.synchronize()
            dec.close()
        else:
            self._retired.append(dec)

    def _destroy_retired(self, sync: bool = True) -> None:
        if not self._retired:
            return
        if sync:
            self._stream.synchronize()
        while self._retired:
            self._retired.pop().close()

    def _query_caps(self, codec: str, depth: int) -> dict[str, int] | None:
        key = (codec, depth)
        if key not in self._caps:
            try:
                caps = self._nvc.GetDecoderCaps(
                    gpuid=self.device.index or 0,
                    codec=getattr(self._nvc.cudaVideoCodec, codec), bitdepth=depth)
                self._caps[key] = {str(k): int(v) for k, v in dict(caps).items()}
            except Exception as e:  # old package or driver: fall back to the static limits
                log.debug("GetDecoderCaps(%s, %d bits) failed: %s", codec, depth, e)
                self._caps[key] = None
        return self._caps[key]

    def _create(self, index: VideoIndex, codec: str, max_w: int, max_h: int) -> _NvDecoder:
        with torch.cuda.device(self.device):
            try:
                return self._decoder_class(self._nvc, self.device, self._stream, codec,
                                           index.width, index.height, max_w, max_h)
            except Exception as e:
                raise DecodeError(f"{index.path}: creating an NVDEC {codec} decoder failed: "
                                  f"{type(e).__name__}: {e}") from e

    def _drop(self, key: tuple[str, int]) -> None:
        dec = self._decoders.pop(key, None)
        if dec is not None:
            self._stream.synchronize()  # its buffers may still be read by queued conversions
            dec.close()

    def _decoder_for(self, index: VideoIndex, dedicated: bool) -> FrameDecoder:
        reason = self.unsupported_reason(index)
        if reason is not None:
            raise UnsupportedCodecError(f"{index.path}: {reason}; decode it on the CPU "
                                        f"(backend='pyav')")
        codec = NVDEC_CODECS[index.codec]
        if dedicated:
            return self._create(index, codec, index.width, index.height)
        key = (codec, _bit_depth(index))
        dec = self._decoders.get(key)
        if dec is not None and (index.width > dec.max_width or index.height > dec.max_height):
            max_w, max_h = max(index.width, dec.max_width), max(index.height, dec.max_height)
            self._drop(key)
            dec = None
        else:
            max_w, max_h = index.width, index.height
        if dec is None:
            dec = self._create(index, codec, max_w, max_h)
            self._decoders[key] = dec
            while len(self._decoders) > self.max_decoders:
                self._drop(next(iter(self._decoders)))
            return dec
        self._decoders.move_to_end(key)
        if (dec.width, dec.height) != (index.width, index.height):
            self._engine._settle(dec)
            self._stream.synchronize()  # reconfiguring frees the output buffers
            dec.reconfigure(index.width, index.height)
        return dec

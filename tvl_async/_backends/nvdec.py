"""GPU decoding with NVDEC through PyNvVideoCodec (the ``nvdec`` extra), frame-exact.

PyNvVideoCodec is imported lazily: importing this module needs neither the package nor a GPU;
constructing :class:`NvdecBackend` without them raises
:class:`~tvl_async._errors.BackendUnavailableError` saying what is missing.

How a decode works (the same semantics as the CPU backend, ``pyav.py``):

1. The wanted frames are grouped into runs by the keyframe our index names for them.
2. For each run, PyAV demuxes the file (never PyNvVideoCodec's demuxer): it seeks to
   ``min(key_pts, key_dts)`` backward, skips packets until the keyframe packet itself (found by its
   pts in ``index.packet_pts``), and from there every packet goes to the decoder, through
   ``h264_mp4toannexb``/``hevc_mp4toannexb`` for H.264/HEVC (NVDEC parses Annex B only).
3. NVDEC returns frames in display order, each carrying the pts of the packet it came from; the
   pts is mapped to our frame index with ``index.frame_of_pts``. Only the requested frames are
   converted (NV12/P016 to RGB on the GPU with :mod:`tvl_async._backends.yuv`, using the index's
   colour matrix and range); feeding stops once the run's frames are out, then the decoder is
   flushed. PyNvVideoCodec's batch-by-index calls are never used: they silently drop duplicate
   and out-of-range indices.
4. Frames are returned in the order asked, duplicates included, as ``[3, H, W]`` uint8 CUDA
   tensors. They never leave device memory.

CUDA: decoders are created on the device's primary context (the one PyTorch uses) and bound to a
CUDA stream owned by the backend; conversions run on that stream. Before frames are returned, the
caller's current stream is made to wait on it (no host synchronisation) and the tensors are
marked with ``record_stream`` for it. Decoders are cached per (codec, bit depth, width, height),
least recently used first out, and never reconfigured (``setReconfigParams`` leaks CUDA events
per call in NVIDIA's code, needs even sizes and syncs the host). ``GetDecoderCaps`` is asked once
per process per (GPU, codec, chroma format, bit depth) (:func:`decoder_caps`).

Files NVDEC must not decode go to the CPU (``FallbackBackend``): besides codec, pixel format and
size, interlaced streams (NVDEC would deinterlace them, the CPU gives the coded frames) and colour
spaces without a YCbCr matrix; and a file NVDEC itself rejects when it meets the sequence header
(``PyNvVCExceptionUnsupported``: "Codec not supported on this GPU", "MBCount not supported",
"Resolution not supported") raises :class:`~tvl_async._errors.UnsupportedCodecError` and is
remembered as unsupported.

Threads: a backend belongs to the thread that created it (the service thread). It creates, uses and
destroys its decoders there; nothing here is thread-safe.

The GPU-only code is confined to this module (:class:`_NvDecoder`, :func:`_load_pynvvideocodec`
and :class:`NvdecBackend`); demuxing lives in ``nvdec_packets.py`` and packet feeding and frame
selection in ``nvdec_engine.py`` (:class:`~tvl_async._backends.nvdec_engine.Engine`), which the
CPU tests drive with a stand-in decoder.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any

import numpy as np
import torch

from tvl_async._backends.base import DecodeResult, ReadMode, plan_runs
from tvl_async._backends.nvdec_engine import Engine, FrameDecoder, short
from tvl_async._backends.nvdec_packets import (
    NVDEC_CODECS,
    EncodedPacket,
    PacketSource,
    av1_has_sequence_header,
    nvdec_codec,
)
from tvl_async._backends.nvdec_support import (
    LEFT_SITED,
    MAX_BIT_DEPTH,
    PIX_FMT_DEPTH,
    STATIC_LIMITS,
    Key,
    bit_depth,
    cache_key,
    caps_unsupported_reason,
    decoder_caps,
    rejection,
    static_unsupported_reason,
)
from tvl_async._backends.yuv import colorspace_matrix, nv12_to_rgb, p016_to_rgb
from tvl_async._checks import invalid_value
from tvl_async._errors import (
    BackendUnavailableError,
    DecodeError,
    UnsupportedCodecError,
)
from tvl_async._index import VideoIndex

log = logging.getLogger(__name__)

# Re-exported: the engine and the packet source are the pieces the CPU tests drive directly.
__all__ = ["MAX_BIT_DEPTH", "NVDEC_CODECS", "PIX_FMT_DEPTH", "STATIC_LIMITS", "EncodedPacket",
           "Engine", "FrameDecoder", "NvdecBackend", "PacketSource", "av1_has_sequence_header",
           "caps_unsupported_reason", "decoder_caps", "nvdec_codec", "plan_runs", "rejection",
           "short", "static_unsupported_reason"]

INSTALL_HINT = "pip install tvl-async[nvdec]"


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
        return self._decode(self._packet(data, packet.pts))  # parses `data` before returning

    def flush(self) -> list[tuple[int, Any]]:
        # One empty packet (end of stream) makes the parser display everything it holds.
        return self._decode(self._packet(None, 0))

    def _decode(self, packet: Any) -> list[tuple[int, Any]]:
        """``Decode`` one packet; NVDEC refusing the stream is UnsupportedCodecError."""
        try:
            frames = self._dec.Decode(packet)
        except Exception as e:
            reason = rejection(e)
            if reason is not None:
                raise UnsupportedCodecError(f"NVDEC rejected the stream ({reason})") from e
            raise
        return [(int(f.getPTS()), f) for f in frames]

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
        matrix = colorspace_matrix(getattr(index, "color_space", 2))
        return convert(raw, h, index.width, matrix=matrix, full_range=index.full_range,
                       siting=siting, size=size)

    def _surface(self, frame: Any, rows: int, cols: int, fmt: str) -> torch.Tensor:
        """The frame's output buffer as a ``[rows, cols]`` CUDA tensor, without a copy.

        uint8 for NV12; int16 holding the 16-bit P016 samples (read back as unsigned by
        :func:`~tvl_async._backends.yuv.p016_to_rgb`).
        """
        typestr = "|u1" if fmt == "NV12" else "<i2"
        ptr = int(frame.GetPtrToPlane(0))
        return torch.as_tensor(_DeviceArray(ptr, rows, cols, typestr), device=self.device)

    def close(self) -> None:
        self._dec = None


class NvdecBackend:
    """Frame-exact NVDEC decoder; frames come back as ``[3, H, W]`` uint8 CUDA tensors.

    Args:
        device: the CUDA device (``"cuda"``, ``"cuda:N"`` or a ``torch.device``).
        max_decoders: NVDEC decoders kept alive (one per codec, bit depth and size in use; the
            least recently used is destroyed first).
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

    def __init__(self, device: str | torch.device = "cuda:0", *, max_decoders: int = 8,
                 max_open_files: int = 16) -> None:
        dev = torch.device(device)
        if dev.type != "cuda":
            raise invalid_value("device", str(dev), "'cuda', 'cuda:N' (NvdecBackend decodes on "
                                "a CUDA device)")
        if max_decoders < 1:
            raise invalid_value("max_decoders", max_decoders, "integers >= 1")
        self._nvc = _load_pynvvideocodec(dev)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.max_decoders = max_decoders
        self._stream = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        self._decoders: OrderedDict[Key, _NvDecoder] = OrderedDict()
        self._retired: list[FrameDecoder] = []
        self._rejected: dict[str, str] = {}  # path -> NVDEC's refusal at decode time
        self._owner = threading.get_ident()
        self._closed = False
        self._engine = Engine(self._decoder_for, scope=self._scope, deliver=self._deliver,
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
        try:
            return self._engine.decode(index, frames, size=size, mode=mode)
        except UnsupportedCodecError as e:
            self._reject(index, e)
            raise

    def stream(self, index: VideoIndex, start: int = 0, *,
               size: tuple[int, int] | None = None) -> Iterator[torch.Tensor]:
        """Yield frames ``start…`` to the end, decoding forward once with a decoder of its own."""
        self._check_open()
        self._destroy_retired()
        return self._stream_frames(index, start, size)

    def _stream_frames(self, index: VideoIndex, start: int, size: tuple[int, int] | None
                       ) -> Iterator[torch.Tensor]:
        try:
            yield from self._engine.stream(index, start, size=size)
        except UnsupportedCodecError as e:
            self._reject(index, e)
            raise

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
        reason = static_unsupported_reason(index) or self._rejected.get(index.path)
        if reason is not None:
            return reason
        codec = NVDEC_CODECS[index.codec]
        caps = decoder_caps(self._nvc, self.device.index or 0, codec, bit_depth(index))
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

    def _reject(self, index: VideoIndex, error: UnsupportedCodecError) -> None:
        """NVDEC refused ``index`` while decoding: remember it, drop the decoder it broke."""
        if static_unsupported_reason(index) is not None or index.path in self._rejected:
            return  # refused before NVDEC saw it
        self._rejected[index.path] = str(error)
        log.info("%s: NVDEC rejected the file while decoding: %s", index.path, error)
        self._drop(cache_key(index))

    def _create(self, index: VideoIndex, codec: str, max_w: int, max_h: int) -> _NvDecoder:
        with torch.cuda.device(self.device):
            try:
                return self._decoder_class(self._nvc, self.device, self._stream, codec,
                                           index.width, index.height, max_w, max_h)
            except Exception as e:
                raise DecodeError(f"{index.path}: creating an NVDEC {codec} decoder failed: "
                                  f"{type(e).__name__}: {e}") from e

    def _drop(self, key: Key) -> None:
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
        # One decoder per (codec, bit depth, size), never reconfigured to another size.
        key = cache_key(index)
        dec = self._decoders.get(key)
        if dec is not None:
            self._decoders.move_to_end(key)
            return dec
        while len(self._decoders) >= self.max_decoders:
            self._drop(next(iter(self._decoders)))
        dec = self._create(index, codec, index.width, index.height)
        self._decoders[key] = dec
        return dec

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
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch

from tvl_async._backends.base import DecodeResult, ReadMode, plan_runs
from tvl_async._backends.nvdec_decoder import (
    _load_pynvvideocodec,
    _NvDecoder,
)
from tvl_async._backends.nvdec_engine import Engine, FrameDecoder, short
from tvl_async._backends.nvdec_packets import (
    NVDEC_CODECS,
    EncodedPacket,
    PacketSource,
    av1_has_sequence_header,
    nvdec_codec,
)
from tvl_async._backends.nvdec_support import (
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
from tvl_async._checks import invalid_value
from tvl_async._errors import (
    DecodeError,
    UnsupportedCodecError,
)
from tvl_async._index import VideoIndex

log = logging.getLogger(__name__)

# Re-exported: the engine and the packet source are the pieces the CPU tests drive directly.
__all__ = [
    "MAX_BIT_DEPTH",
    "NVDEC_CODECS",
    "PIX_FMT_DEPTH",
    "STATIC_LIMITS",
    "EncodedPacket",
    "Engine",
    "FrameDecoder",
    "NvdecBackend",
    "PacketSource",
    "av1_has_sequence_header",
    "caps_unsupported_reason",
    "decoder_caps",
    "nvdec_codec",
    "plan_runs",
    "rejection",
    "short",
    "static_unsupported_reason",
]


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

    def __init__(
        self,
        device: str | torch.device = "cuda:0",
        *,
        max_decoders: int = 8,
        max_open_files: int = 16,
    ) -> None:
        dev = torch.device(device)
        if dev.type != "cuda":
            raise invalid_value(
                "device", str(dev), "'cuda', 'cuda:N' (NvdecBackend decodes on a CUDA device)"
            )
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
        self._engine = Engine(
            self._decoder_for,
            scope=self._scope,
            deliver=self._deliver,
            retire=self._retire,
            max_open_files=max_open_files,
        )

    # -------------------------------------------------------------------- public

    @property
    def frames_decoded(self) -> int:
        """Frames NVDEC produced since the backend was created."""
        return self._engine.frames_decoded

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
    ) -> DecodeResult:
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

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield frames ``start…`` to the end, decoding forward once with a decoder of its own."""
        self._check_open()
        self._destroy_retired()
        return self._stream_frames(index, start, size)

    def _stream_frames(
        self, index: VideoIndex, start: int, size: tuple[int, int] | None
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
                return self._decoder_class(
                    self._nvc,
                    self.device,
                    self._stream,
                    codec,
                    index.width,
                    index.height,
                    max_w,
                    max_h,
                )
            except Exception as e:
                raise DecodeError(
                    f"{index.path}: creating an NVDEC {codec} decoder failed: "
                    f"{type(e).__name__}: {e}"
                ) from e

    def _drop(self, key: Key) -> None:
        dec = self._decoders.pop(key, None)
        if dec is not None:
            self._stream.synchronize()  # its buffers may still be read by queued conversions
            dec.close()

    def _decoder_for(self, index: VideoIndex, dedicated: bool) -> FrameDecoder:
        reason = self.unsupported_reason(index)
        if reason is not None:
            raise UnsupportedCodecError(
                f"{index.path}: {reason}; decode it on the CPU (backend='pyav')"
            )
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

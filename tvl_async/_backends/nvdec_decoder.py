"""PyNvVideoCodec's decoder behind a small class: import it, feed packets, convert surfaces.

:func:`load_pynvvideocodec` imports PyNvVideoCodec lazily and checks the CUDA device;
:class:`NvDecoder` wraps one NVDEC decoder (one codec, bit depth and size: never reconfigured) and
turns its NV12/P016 surfaces into RGB tensors on the GPU. Used only by
:class:`~tvl_async._backends.nvdec.NvdecBackend`, from the service thread that owns the CUDA
context.
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType
from typing import Any

import numpy as np
import torch

from tvl_async._backends.colorspaces import colorspace_matrix
from tvl_async._backends.nvdec_packets import EncodedPacket
from tvl_async._backends.nvdec_support import LEFT_SITED, rejection
from tvl_async._backends.yuv import ChromaSiting, nv12_to_rgb, p016_to_rgb
from tvl_async._errors import BackendUnavailableError, DecodeError, UnsupportedCodecError
from tvl_async._index import VideoIndex

INSTALL_HINT = "pip install tvl-async[nvdec]"


def _load_pynvvideocodec(device: torch.device) -> ModuleType:
    """Import PyNvVideoCodec and check the CUDA device; BackendUnavailableError says what lacks."""
    problems: list[str] = []
    module: ModuleType | None = None
    try:
        module = importlib.import_module("PyNvVideoCodec")
    except Exception as e:  # ImportError, or the package's own driver checks failing
        problems.append(
            f"PyNvVideoCodec cannot be imported ({type(e).__name__}: {e}); install "
            f"it with `{INSTALL_HINT}`"
        )
    if not torch.cuda.is_available():
        problems.append(
            f"no CUDA device is visible (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda})"
        )
    elif device.index is not None and device.index >= torch.cuda.device_count():
        problems.append(
            f"device {device} does not exist ({torch.cuda.device_count()} CUDA device(s) visible)"
        )
    if problems or module is None:
        raise BackendUnavailableError(
            "The NVDEC backend is unavailable: "
            + "; ".join(problems)
            + ". Use backend='pyav' to decode on the CPU."
        )
    return module


class _DeviceArray:
    """A raw device pointer described by ``__cuda_array_interface__`` (for ``torch.as_tensor``).

    Used instead of the frame's DLPack export because PyNvVideoCodec 2.0's DLPack shape is
    ``floor(1.5 * H)`` rows (one chroma row short for odd heights) and its P016 strides are wrong.
    """

    def __init__(self, ptr: int, rows: int, cols: int, typestr: str) -> None:
        self.__cuda_array_interface__ = {
            "shape": (rows, cols),
            "typestr": typestr,
            "data": (ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }


class _NvDecoder:
    """One PyNvVideoCodec decoder; used in the thread that created it (GPU only).

    Output frames are NATIVE surfaces copied by PyNvVideoCodec into its own contiguous buffers:
    ``H`` luma rows then ``ceil(H/2)`` interleaved chroma rows of ``GetWidth()`` samples (``W``
    rounded up to even), uint8 (NV12) or 16-bit with data in the high bits (P016). They are
    overwritten by the next ``Decode`` call.
    """

    def __init__(
        self,
        nvc: ModuleType,
        device: torch.device,
        stream: torch.cuda.Stream,
        codec: str,
        width: int,
        height: int,
        max_width: int,
        max_height: int,
    ) -> None:
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
                f"the CPU"
            )
        if fmt not in ("NV12", "P016"):
            raise DecodeError(
                f"{index.path}: NVDEC output format {fmt} is not converted "
                f"(only NV12 and P016, i.e. 4:2:0)"
            )
        raw = self._surface(frame, h + (h + 1) // 2, w, fmt)
        convert = nv12_to_rgb if fmt == "NV12" else p016_to_rgb
        siting: ChromaSiting = "left" if self.codec in LEFT_SITED else "center"
        matrix = colorspace_matrix(getattr(index, "color_space", 2))
        return convert(
            raw,
            h,
            index.width,
            matrix=matrix,
            full_range=index.full_range,
            siting=siting,
            size=size,
        )

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

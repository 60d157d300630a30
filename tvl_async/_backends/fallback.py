"""GPU decoding with a per-file CPU fallback for what the GPU's decoder cannot handle.

:class:`FallbackBackend` asks the GPU backend, once per file, whether it can decode that file
(codec, bit depth, size, interlacing, colour space); files it cannot are decoded by PyAV and
copied to the GPU through pinned memory on the current stream. A file the GPU's decoder rejects
only when it meets the stream (``UnsupportedCodecError`` from ``decode``/``stream``: NVDEC's
"Codec not supported on this GPU", "Resolution not supported"...) falls back the same way, from
the frames not yet delivered. Each fallback is logged once and reported to a callback (the
Prefetcher counts them in ``stats().fallback_files``). Owned by one thread, like any backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from tvl_async._backends.base import Backend, DecodeResult, ReadMode
from tvl_async._errors import UnsupportedCodecError
from tvl_async._index import VideoIndex

log = logging.getLogger(__name__)


class _Checks(Backend, Protocol):
    def unsupported_reason(self, index: VideoIndex) -> str | None: ...


class FallbackBackend:
    """``primary`` (GPU) where it can decode a file, ``fallback`` (CPU) elsewhere.

    Args:
        primary: a backend with ``unsupported_reason(index) -> str | None``.
        fallback: a CPU backend.
        on_fallback: called with ``(path, reason)`` the first time a file falls back.
    """

    def __init__(
        self,
        primary: _Checks,
        fallback: Backend,
        on_fallback: Callable[[str, str], None] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.device = primary.device
        self.name = f"{primary.name}+{fallback.name}"
        self._on_fallback = on_fallback
        self._reasons: dict[str, str | None] = {}

    def _pick(self, index: VideoIndex) -> Backend:
        if index.path not in self._reasons:
            reason = self.primary.unsupported_reason(index)
            self._reasons[index.path] = None
            if reason is not None:
                self._fall_back(index.path, reason)
        return self.fallback if self._reasons[index.path] is not None else self.primary

    def _fall_back(self, path: str, reason: str) -> None:
        """From now on ``path`` is decoded on the CPU; logged and reported once."""
        if self._reasons.get(path) is not None:
            return
        self._reasons[path] = reason
        log.warning("tvl_async: %s is decoded on the CPU: %s", path, reason)
        if self._on_fallback is not None:
            self._on_fallback(path, reason)

    @property
    def fallback_files(self) -> list[str]:
        """Files decoded on the CPU so far."""
        return [p for p, r in self._reasons.items() if r is not None]

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
    ) -> DecodeResult:
        """Decode with the backend chosen for this file; frames end up on ``self.device``."""
        if self._pick(index) is self.primary:
            try:
                return self.primary.decode(index, frames, size=size, mode=mode)
            except UnsupportedCodecError as e:  # the GPU's decoder refused the stream itself
                self._fall_back(index.path, str(e))
        result = self.fallback.decode(index, frames, size=size, mode=mode)
        result.frames = self._upload(result.frames)
        return result

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        """Sequential frames from the backend chosen for this file, on ``self.device``."""
        start = index.check_frame(start)
        if self._pick(index) is self.primary:
            try:
                for frame in self.primary.stream(index, start, size=size):
                    yield frame
                    start += 1
                return
            except UnsupportedCodecError as e:  # refused mid-way: the CPU goes on from `start`
                self._fall_back(index.path, str(e))
        if start < index.n_frames:
            for frame in self.fallback.stream(index, start, size=size):
                yield self._upload([frame])[0]

    def _upload(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        from tvl_async._devices import to_device_async

        return [to_device_async(f.contiguous(), self.device) for f in frames]

    def close(self) -> None:
        """Close both backends; safe to call twice."""
        try:
            self.primary.close()
        finally:
            self.fallback.close()

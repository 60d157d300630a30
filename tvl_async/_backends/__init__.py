"""Decoding backends: ``pyav`` (CPU, always available) and ``nvdec`` (NVIDIA GPU, optional)."""

from __future__ import annotations

import torch

from tvl_async._backends.base import Backend, DecodeResult, ReadMode
from tvl_async._checks import invalid_value
from tvl_async._config import BACKENDS  # from the Literal: the list is written once

__all__ = ["BACKENDS", "Backend", "DecodeResult", "ReadMode", "create_backend", "resolve_backend"]


def nvdec_available() -> bool:
    """True when PyNvVideoCodec imports and a CUDA device is visible."""
    if not torch.cuda.is_available():
        return False
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(name: str, device: str | torch.device) -> str:
    """The concrete backend for ``name`` on ``device`` (``auto``: nvdec on CUDA when available)."""
    if name not in BACKENDS:
        raise invalid_value("backend", name, BACKENDS)
    dev = torch.device(device)
    if name == "auto":
        return "nvdec" if dev.type == "cuda" and nvdec_available() else "pyav"
    if name == "nvdec" and dev.type != "cuda":
        raise invalid_value(
            "device",
            str(dev),
            "'cuda', 'cuda:N' (backend 'nvdec' decodes on a GPU)",
            context="for backend 'nvdec'",
        )
    return name


def create_backend(name: str, device: str | torch.device = "cpu", **options: object) -> Backend:
    """Create a backend; call it in the thread that will use it (it owns decoders there).

    ``nvdec`` comes wrapped in a :class:`~tvl_async._backends.fallback.FallbackBackend`: files the
    GPU cannot decode go through PyAV (``on_fallback=callable(path, reason)`` hears of each).
    """
    concrete = resolve_backend(name, device)
    if concrete == "nvdec":
        from tvl_async._backends.fallback import FallbackBackend
        from tvl_async._backends.nvdec import NvdecBackend
        from tvl_async._backends.pyav import PyAVBackend

        on_fallback = options.pop("on_fallback", None)
        gpu = NvdecBackend(device=str(device), **options)  # type: ignore[arg-type]
        # files the GPU cannot decode (codec, bit depth, size) are decoded by PyAV instead
        return FallbackBackend(gpu, PyAVBackend(), on_fallback)  # type: ignore[arg-type]
    from tvl_async._backends.pyav import PyAVBackend

    return PyAVBackend(**options)  # type: ignore[arg-type]

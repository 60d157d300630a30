"""Device plumbing between the service thread (producer) and the consumer, CPU or CUDA.

On a GPU the service thread works on a CUDA stream of its own (:class:`ServiceStream`), so its
copies and kernels overlap with the training step running on the consumer's stream. A batch is
handed over without any host synchronisation:

1. service thread: produce the batch inside ``service_stream.context()``, then
   ``event = service_stream.record_event()`` and queue ``(batch, event)``;
2. consumer thread, before the batch is returned to user code: ``hand_over(tensors, event)``
   makes the consumer's current stream wait on the event (GPU-side) and marks every CUDA tensor
   with ``record_stream`` so the caching allocator does not recycle its memory while the
   consumer's stream may still use it.

On the CPU every function here is a no-op or an identity. Nothing here blocks the host, except
:meth:`ServiceStream.synchronize`, which is meant for shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch

__all__ = ["ServiceStream", "hand_over", "resolve_device", "to_device_async"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, with ``"cuda"`` (no index) pinned to the caller's GPU.

    ``torch.cuda.current_device()`` is per thread and a new thread starts on GPU 0, so a bare
    ``"cuda"`` must be resolved in the thread that builds the Prefetcher or VideoLoader (where
    the user called ``torch.cuda.set_device(local_rank)``), not later in the service thread.
    Other devices, and ``"cuda"`` when no GPU is visible (the caller reports that), are returned
    unchanged. Call from the constructing thread; does not block.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return dev


class ServiceStream:
    """The service thread's device context: on CUDA, the current device and a dedicated stream.

    Args:
        device: the device batches are produced on (``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Create it in the service thread: on CUDA the constructor calls ``torch.cuda.set_device`` (for
    that thread) and creates a new ``torch.cuda.Stream``. Use it only from that thread.

    Attributes:
        device: the resolved device (``cuda`` gets its index filled in).
        stream: the dedicated CUDA stream, or None on the CPU.
    """

    def __init__(self, device: str | torch.device) -> None:
        dev = torch.device(device)
        self.stream: torch.cuda.Stream | None = None
        if dev.type == "cuda":
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(dev)
            self.stream = torch.cuda.Stream(device=dev)  # type: ignore[no-untyped-call]
        self.device = dev

    @property
    def is_cuda(self) -> bool:
        """True when batches are produced on a CUDA device."""
        return self.stream is not None

    def context(self) -> AbstractContextManager[Any]:
        """A context manager making the service stream current (``nullcontext`` on the CPU).

        Work queued inside it (decoding conversions, processing, collation, copies) runs on the
        service stream. Non-blocking.
        """
        if self.stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self.stream)

    def record_event(self) -> torch.cuda.Event | None:
        """Record an event on the service stream after a batch is produced; None on the CPU.

        The event completes when every piece of work queued so far on the service stream has
        run. Non-blocking.
        """
        if self.stream is None:
            return None
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(self.stream)
        return event

    def synchronize(self) -> None:
        """Block until the service stream is idle (for shutdown); no-op on the CPU."""
        if self.stream is not None:
            self.stream.synchronize()


def hand_over(tensors: Iterable[torch.Tensor], event: Any) -> None:
    """Make a batch safe to use on the consumer's current stream; call in the consumer thread.

    For each CUDA device among ``tensors``, the current stream of that device waits on ``event``
    (``wait_event``: queued on the GPU, the host does not wait), then every CUDA tensor is marked
    with ``record_stream`` for that stream. With ``event=None`` (CPU batches) nothing happens.

    Args:
        tensors: the batch's tensors (CPU tensors are ignored).
        event: the ``torch.cuda.Event`` recorded by :meth:`ServiceStream.record_event` after the
            batch was produced, or None.
    """
    if event is None:
        return
    streams: dict[torch.device, Any] = {}
    for t in tensors:
        if not t.is_cuda:
            continue
        stream = streams.get(t.device)
        if stream is None:
            stream = torch.cuda.current_stream(t.device)
            stream.wait_event(event)
            streams[t.device] = stream
        t.record_stream(stream)


def to_device_async(
    t: torch.Tensor, device: str | torch.device, stream: Any = None
) -> torch.Tensor:
    """Copy a CPU tensor to ``device`` without blocking the host; identity on the CPU.

    The tensor is staged in pinned (page-locked) memory (a host memcpy in the calling thread) and
    copied with ``non_blocking=True`` on ``stream``: the host does not wait for the transfer, and
    ``t`` may be modified or freed as soon as this returns. Pinned buffers come from PyTorch's
    caching host allocator, which keeps them for reuse and only recycles one after the copy that
    read it has finished (it records an event on the copy's stream), so nothing is freed under a
    copy in flight.

    Args:
        t: the tensor to copy (any device; one already on ``device`` is returned as is).
        device: the target device.
        stream: a :class:`ServiceStream`, a ``torch.cuda.Stream``, or None for the current stream.

    Returns:
        The tensor on ``device``. Call from the service thread; uses on other streams need
        :func:`hand_over` (or ``record_stream``) like any tensor produced on the service stream.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        return t if t.device.type == "cpu" else t.to(dev)
    if dev.type != "cuda":
        return t.to(dev)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if t.device == dev:
        return t
    cuda_stream = stream.stream if isinstance(stream, ServiceStream) else stream
    ctx = torch.cuda.stream(cuda_stream) if cuda_stream is not None else contextlib.nullcontext()
    with ctx:
        if t.is_cuda:  # another GPU: a device-to-device copy, no staging
            return t.to(dev, non_blocking=True)
        src = t if t.is_pinned() else t.pin_memory()
        return src.to(dev, non_blocking=True)

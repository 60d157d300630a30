"""Device plumbing (tvl_async._devices) on the CPU: no-op paths, and the CUDA logic with stand-ins.

The stand-ins replace ``torch.cuda`` entry points (streams, events, ``set_device``) and CUDA
tensors by recording objects, so the calls the consumer and service threads make (``wait_event``,
``record_stream``, pinned staging, the stream the copy runs on) are checked without a GPU. The same
paths run for real in ``tests/test_cuda.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tvl_async import _devices as devices
from tvl_async._devices import ServiceStream, hand_over, to_device_async

# ------------------------------------------------------------------------------ CPU paths


def test_service_stream_on_cpu_is_inert() -> None:
    s = ServiceStream("cpu")
    assert s.device == torch.device("cpu") and s.stream is None and not s.is_cuda
    with s.context():
        x = torch.ones(3) * 2
    assert s.record_event() is None
    s.synchronize()
    assert x.tolist() == [2.0, 2.0, 2.0]


def test_hand_over_on_cpu_is_a_no_op() -> None:
    t = torch.arange(4)
    hand_over([t], None)
    hand_over([], None)
    hand_over([t], object())  # an event with CPU tensors only: nothing to wait for
    assert t.tolist() == [0, 1, 2, 3]


def test_to_device_async_is_identity_on_cpu() -> None:
    t = torch.arange(6).reshape(2, 3)
    assert to_device_async(t, "cpu") is t
    assert to_device_async(t, torch.device("cpu"), ServiceStream("cpu")) is t


# ------------------------------------------------------------------------- stand-ins


class FakeStream:
    def __init__(self, name: str = "s", device: Any = None) -> None:
        self.name = name
        self.device = device
        self.waited: list[Any] = []
        self.syncs = 0

    def wait_event(self, event: Any) -> None:
        self.waited.append(event)

    def synchronize(self) -> None:
        self.syncs += 1

    def __repr__(self) -> str:
        return f"FakeStream({self.name})"


class FakeEvent:
    def __init__(self) -> None:
        self.recorded_on: list[Any] = []

    def record(self, stream: Any) -> None:
        self.recorded_on.append(stream)


class FakeCudaTensor:
    """Quacks like a CUDA tensor for hand_over: is_cuda, device, record_stream."""

    is_cuda = True

    def __init__(self, index: int = 0) -> None:
        self.device = torch.device("cuda", index)
        self.recorded: list[Any] = []

    def record_stream(self, stream: Any) -> None:
        self.recorded.append(stream)


class FakeHostTensor:
    """Quacks like a CPU tensor for to_device_async: pinning and the non-blocking copy."""

    is_cuda = False
    device = torch.device("cpu")

    def __init__(self, log: list[tuple[str, Any]], pinned: bool = False) -> None:
        self.log = log
        self.pinned = pinned

    def is_pinned(self) -> bool:
        return self.pinned

    def pin_memory(self) -> FakeHostTensor:
        self.log.append(("pin", None))
        return FakeHostTensor(self.log, pinned=True)

    def to(self, device: Any, non_blocking: bool = False) -> str:
        assert self.pinned, "copies must come from pinned memory"
        self.log.append(("copy", (device, non_blocking)))
        return "on-gpu"


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"current": {}, "set_device": [], "entered": [], "streams": []}

    def current_stream(device: Any = None) -> FakeStream:
        dev = torch.device(device) if device is not None else torch.device("cuda", 0)
        return state["current"].setdefault(dev, FakeStream(f"consumer:{dev}"))

    def make_stream(device: Any = None) -> FakeStream:
        s = FakeStream(f"service{len(state['streams'])}", device)
        state["streams"].append(s)
        return s

    @contextlib.contextmanager
    def stream_ctx(s: Any) -> Iterator[None]:
        state["entered"].append(s)
        try:
            yield
        finally:
            state["entered"].append(("exit", s))

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "Stream", make_stream)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "stream", stream_ctx)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: state["set_device"].append(d))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    yield state


# ------------------------------------------------------------------------- CUDA logic


def test_service_stream_on_cuda(fake_cuda: dict[str, Any]) -> None:
    s = ServiceStream("cuda")
    assert s.device == torch.device("cuda", 0) and s.is_cuda
    assert fake_cuda["set_device"] == [torch.device("cuda", 0)]
    assert s.stream is fake_cuda["streams"][0]
    with s.context():
        assert fake_cuda["entered"] == [s.stream]
    event = s.record_event()
    assert isinstance(event, FakeEvent) and event.recorded_on == [s.stream]
    s.synchronize()
    assert s.stream is not None and s.stream.syncs == 1  # type: ignore[attr-defined]
    ServiceStream("cuda:1")
    assert fake_cuda["set_device"][-1] == torch.device("cuda", 1)


def test_hand_over_waits_once_per_device_and_marks_every_tensor(fake_cuda: dict[str, Any]) -> None:
    event = FakeEvent()
    a, b, c = FakeCudaTensor(0), FakeCudaTensor(0), FakeCudaTensor(1)
    cpu = torch.zeros(2)
    hand_over([a, cpu, b, c], event)  # type: ignore[list-item]
    s0 = fake_cuda["current"][torch.device("cuda", 0)]
    s1 = fake_cuda["current"][torch.device("cuda", 1)]
    assert s0.waited == [event] and s1.waited == [event]
    assert a.recorded == [s0] and b.recorded == [s0] and c.recorded == [s1]


def test_hand_over_without_event_touches_nothing(fake_cuda: dict[str, Any]) -> None:
    a = FakeCudaTensor(0)
    hand_over([a], None)  # type: ignore[list-item]
    assert a.recorded == [] and fake_cuda["current"] == {}


def test_to_device_async_pins_then_copies_on_the_service_stream(fake_cuda: dict[str, Any]) -> None:
    service = ServiceStream("cuda:0")
    log: list[tuple[str, Any]] = []
    out = to_device_async(FakeHostTensor(log), "cuda:0", service)  # type: ignore[arg-type]
    assert out == "on-gpu"
    assert log == [("pin", None), ("copy", (torch.device("cuda", 0), True))]
    assert fake_cuda["entered"] == [service.stream, ("exit", service.stream)]
    # already pinned: no second staging copy; a raw torch.cuda.Stream works too
    log.clear()
    raw = FakeStream("raw")
    to_device_async(FakeHostTensor(log, pinned=True), "cuda", raw)  # type: ignore[arg-type]
    assert log == [("copy", (torch.device("cuda", 0), True))]
    assert fake_cuda["entered"][-2] is raw


def test_to_device_async_keeps_tensors_already_there(fake_cuda: dict[str, Any]) -> None:
    t = FakeCudaTensor(0)
    assert devices.to_device_async(t, "cuda:0") is t  # type: ignore[arg-type]
    assert devices.to_device_async(t, "cuda") is t  # type: ignore[arg-type]


# --------------------------------------------------------------- "cuda" -> the caller's GPU


@pytest.fixture
def caller_on_gpu_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four GPUs; the constructing (main) thread did ``set_device(2)``, other threads are on 0
    (``current_device`` is per thread, as in CUDA)."""
    import threading

    main = threading.get_ident()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(
        torch.cuda, "current_device", lambda: 2 if threading.get_ident() == main else 0
    )


def test_resolve_device_pins_bare_cuda_to_the_callers_gpu(caller_on_gpu_2: None) -> None:
    from tvl_async._devices import resolve_device

    assert resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_without_a_gpu_leaves_cuda_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from tvl_async._devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cuda") == torch.device("cuda")  # the caller reports "no GPU"


def test_prefetcher_and_loader_resolve_cuda_where_they_are_built(
    caller_on_gpu_2: None, videos: dict[str, Any]
) -> None:
    """A Prefetcher built after ``set_device(2)`` decodes on cuda:2, not on the service
    thread's default GPU 0; so does a VideoLoader."""
    import tvl_async

    path = videos["h264_mp4"].path
    p = tvl_async.Prefetcher([path], seq_len=2, device="cuda", backend="pyav")
    try:
        assert p.device == torch.device("cuda", 2)
    finally:
        p.close()
    loader = tvl_async.VideoLoader(path, device="cuda", backend="pyav")
    try:
        assert loader.device == torch.device("cuda", 2)
    finally:
        loader.close()

"""GPU tests (marker ``cuda``): NVDEC decoding, colour, device residency, memory, stream handoff.

Skipped as a whole unless ``torch.cuda.is_available()`` and PyNvVideoCodec imports; with
``TVL_ASYNC_REQUIRE_CUDA=1`` they fail instead (``tools/gpu_check.sh`` and the Docker image set
it). Codecs the GPU cannot decode (``NvdecBackend.supports``) are skipped per test with the
driver's reason, except H.264, which every NVDEC has.

Tolerances for GPU against CPU colour (both decoders are bit-exact, so only the YUV to RGB step
differs): 8-bit max <= 3, mean <= 1.25; 10-bit max <= 5, mean <= 2.0 (see tests/test_yuv.py).
"""

from __future__ import annotations

import os
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import Video, write_edit_list_mp4
from test_nvdec_cpu import COLOUR_SPECS, write_colour_video

from tvl_async._index import load_index
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

REQUIRE = os.environ.get("TVL_ASYNC_REQUIRE_CUDA") == "1"


def _gpu_problem() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as e:
        return f"PyNvVideoCodec does not import ({type(e).__name__}: {e})"
    return None


PROBLEM = _gpu_problem()
if PROBLEM is not None and not REQUIRE:
    pytest.skip(f"GPU tests need a CUDA GPU and PyNvVideoCodec: {PROBLEM}", allow_module_level=True)

pytestmark = pytest.mark.cuda

W, H = 256, 192  # above every codec's NVDEC minimum (HEVC: 144x144)


@pytest.fixture(scope="module", autouse=True)
def gpu() -> None:
    """Fail (never skip) when TVL_ASYNC_REQUIRE_CUDA=1 and the GPU stack is missing."""
    if PROBLEM is not None:
        pytest.fail(f"TVL_ASYNC_REQUIRE_CUDA=1 but {PROBLEM}")


@pytest.fixture(scope="module")
def gpu_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Video]:
    root = tmp_path_factory.mktemp("gpu_videos")

    def spec(codec: str, **kw: Any) -> VideoSpec:
        return VideoSpec(codec=codec, width=W, height=H, n_frames=48, gop=12, texture=0.5, **kw)

    specs = {
        "h264_mp4": ("h264.mp4", spec("libx264", bframes=3)),
        "h264_mkv": ("h264.mkv", spec("libx264", bframes=2)),
        "h264_ts": ("h264.ts", spec("libx264", bframes=2)),
        "hevc_mp4": ("hevc.mp4", spec("libx265", bframes=3)),
        "hevc10_mkv": ("hevc10.mkv", spec("libx265", pix_fmt="yuv420p10le")),
        "vp9_webm": ("vp9.webm", spec("libvpx-vp9")),
        "av1_mkv": ("av1.mkv", spec("libsvtav1")),
        "av1_10_mkv": ("av1_10.mkv", spec("libsvtav1", pix_fmt="yuv420p10le")),
        "h264_big_mkv": (
            "h264_big.mkv",
            VideoSpec(codec="libx264", width=320, height=240, n_frames=24, gop=8),
        ),
        # odd width: NVDEC's 4:2:0 output rows are one sample longer (GetWidth() is even)
        "vp9_odd_webm": (
            "vp9_odd.webm",
            VideoSpec(codec="libvpx-vp9", width=W + 1, height=H + 1, n_frames=48, gop=12),
        ),
    }
    out = {k: Video(write_video(root / f, s), s.n_frames) for k, (f, s) in specs.items()}
    edit = root / "edit.mp4"
    write_edit_list_mp4(out["h264_mp4"].path, edit, 5)
    out["edit_mp4"] = Video(edit, 43, 5)
    return out


@pytest.fixture
def backend(gpu: None) -> Iterator[Any]:
    from tvl_async._backends.nvdec import NvdecBackend

    b = NvdecBackend("cuda:0")
    yield b
    b.close()


def _require_support(backend: Any, name: str, index: Any) -> None:
    ok = backend.supports(index)
    if ok is True:
        return
    if name.startswith("h264"):
        pytest.fail(f"NVDEC should decode {name}: {ok}")
    pytest.skip(f"this GPU does not decode {name}: {ok}")


ALL = [
    "h264_mp4",
    "h264_mkv",
    "h264_ts",
    "hevc_mp4",
    "hevc10_mkv",
    "vp9_webm",
    "av1_mkv",
    "av1_10_mkv",
    "edit_mp4",
    "vp9_odd_webm",
]


@pytest.mark.parametrize("name", ALL)
def test_exact_frames(backend: Any, gpu_videos: dict[str, Video], name: str) -> None:
    v = gpu_videos[name]
    index = load_index(v.path)
    _require_support(backend, name, index)
    n = index.n_frames
    rng = random.Random(0)
    requests = [
        list(range(n)),
        list(reversed(range(n))),
        rng.sample(range(n), 20),
        [7, 7, 0, n - 1, 7, 30, 30],
        [n - 1],
    ]
    for wanted in requests:
        for mode in ("auto", "seek", "stream"):
            result = backend.decode(index, wanted, mode=mode)
            assert all(
                t.is_cuda and t.shape == (3, index.height, index.width) and t.dtype == torch.uint8
                for t in result.frames
            )
            got = [frame_index_of(t) - v.offset for t in result.frames]
            assert got == wanted, (name, mode, wanted)
    assert [frame_index_of(t) - v.offset for t in backend.stream(index, n - 6)] == list(
        range(n - 6, n)
    )


@pytest.mark.parametrize("spec", COLOUR_SPECS, ids=lambda s: "-".join(map(str, s)))
def test_colour_matches_cpu(backend: Any, tmp_path: Path, spec: tuple[str, str, str, bool]) -> None:
    from tvl_async._backends.pyav import PyAVBackend

    index = load_index(write_colour_video(tmp_path / "colour.mkv", *spec, n_frames=8))
    _require_support(backend, spec[0], index)
    frames = [6, 1, 3]
    gpu = torch.stack(backend.decode(index, frames).frames).cpu().to(torch.int32)
    cpu_backend = PyAVBackend()
    try:
        cpu = torch.stack(cpu_backend.decode(index, frames).frames).to(torch.int32)
    finally:
        cpu_backend.close()
    d = (gpu - cpu).abs().to(torch.float32)
    ten_bit = "10" in spec[1]
    assert int(d.max()) <= (5 if ten_bit else 3), (spec, int(d.max()))
    assert float(d.mean()) <= (2.0 if ten_bit else 1.25), (spec, float(d.mean()))


def test_no_device_to_host_copies(backend: Any, gpu_videos: dict[str, Video]) -> None:
    from torch.profiler import ProfilerActivity, profile

    index = load_index(gpu_videos["h264_mp4"].path)
    backend.decode(index, [0])  # warm up: decoder creation, caps query
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        result = backend.decode(index, [3, 40, 17, 3], size=(128, 96))
        x = torch.stack(result.frames).float().mean()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert not [n for n in names if "DtoH" in n or "Device -> Pageable" in n]
    assert not [n for n in names if n in ("aten::_local_scalar_dense", "aten::item")]
    assert x.is_cuda and all(t.is_cuda for t in result.frames)


def test_gpu_memory_is_flat(backend: Any, gpu_videos: dict[str, Video]) -> None:
    indexes = [load_index(gpu_videos[n].path) for n in ("h264_mp4", "h264_mkv", "h264_big_mkv")]
    rng = random.Random(1)

    def round_() -> None:
        for index in indexes:
            r = backend.decode(index, rng.sample(range(index.n_frames), 6))
            del r

    for _ in range(3):
        round_()
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    free = torch.cuda.mem_get_info()[0]
    for _ in range(40):
        round_()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == allocated
    assert torch.cuda.memory_reserved() <= reserved + (16 << 20)
    assert free - torch.cuda.mem_get_info()[0] <= (32 << 20)  # NVDEC's own buffers too
    # one H.264 decoder per frame size (cached by codec, depth and size; never reconfigured)
    sizes = {(ix.width, ix.height) for ix in indexes}
    assert backend.decoders == len(sizes)


def test_unsupported_file_is_reported(backend: Any, videos: dict[str, Video]) -> None:
    from tvl_async._errors import UnsupportedCodecError

    small_hevc = load_index(videos["hevc_mp4"].path)  # 128x96: below HEVC's 144x144
    assert isinstance(backend.supports(small_hevc), str)
    with pytest.raises(UnsupportedCodecError, match="decode it on the CPU"):
        backend.decode(small_hevc, [0])
    assert isinstance(backend.supports(load_index(videos["mpeg4_avi"].path)), str)


def test_frames_are_ready_on_another_stream(backend: Any, gpu_videos: dict[str, Video]) -> None:
    index = load_index(gpu_videos["hevc_mp4"].path)
    _require_support(backend, "hevc_mp4", index)
    consumer = torch.cuda.Stream()
    with torch.cuda.stream(consumer):
        frames = backend.decode(index, [45, 2, 30]).frames
        sums = torch.stack([f.float().sum() for f in frames])  # queued on `consumer`
    del frames
    torch.cuda.synchronize()
    again = backend.decode(index, [45, 2, 30]).frames
    assert torch.equal(sums, torch.stack([f.float().sum() for f in again]))


# ------------------------------------------------------------------------- devices.py


def test_hand_over_waits_for_the_service_stream() -> None:
    from tvl_async._devices import ServiceStream, hand_over

    service = ServiceStream("cuda:0")
    with service.context():
        x = torch.zeros(1 << 22, device="cuda")
        torch.cuda._sleep(100_000_000)  # the producer is slow...
        x.fill_(3.0)
    event = service.record_event()
    hand_over([x], event)  # ...and the consumer's stream waits for it on the GPU
    assert float(x.sum()) == 3.0 * (1 << 22)


def test_to_device_async_copies_through_pinned_memory() -> None:
    from tvl_async._devices import ServiceStream, hand_over, to_device_async

    service = ServiceStream("cuda")
    src = torch.arange(1 << 20, dtype=torch.float32)
    with service.context():
        out = to_device_async(src, "cuda", service)
    src.zero_()  # the staging copy is done: changing the source is safe
    event = service.record_event()
    hand_over([out], event)
    assert out.is_cuda and float(out[-1]) == float((1 << 20) - 1)
    assert to_device_async(out, "cuda:0") is out


def test_service_thread_handoff_under_a_slow_consumer() -> None:
    """A producer thread on its own stream, a slow consumer: batches are never half-written."""
    from tvl_async._devices import ServiceStream, hand_over

    q: queue.Queue[Any] = queue.Queue(maxsize=2)

    def produce() -> None:
        service = ServiceStream("cuda:0")
        for k in range(12):
            with service.context():
                t = torch.empty(1 << 20, device="cuda")
                torch.cuda._sleep(2_000_000)
                t.fill_(float(k))
            q.put((k, t, service.record_event()))
        q.put(None)

    thread = threading.Thread(target=produce, name="test-producer")
    thread.start()
    kept = []
    while (item := q.get(timeout=30)) is not None:
        k, t, event = item
        hand_over([t], event)
        torch.cuda._sleep(5_000_000)  # the training step
        kept.append((k, t, t.sum()))
    thread.join(timeout=30)
    for k, t, s in kept:
        assert float(s) == float(k) * (1 << 20)
        assert float(t.min()) == float(t.max()) == float(k)


# ----------------------------------------------------------------------- the Prefetcher


def _files(gpu_videos: dict[str, Video], backend: Any) -> list[Path]:
    names = ["h264_mp4", "h264_mkv", "hevc_mp4", "vp9_webm"]
    return [
        gpu_videos[n].path
        for n in names
        if backend.supports(load_index(gpu_videos[n].path)) is True
    ]


def _check_batch(batch: Any, x: torch.Tensor) -> None:
    idx = batch.frame_indices
    for b in range(x.shape[0]):
        for f in range(x.shape[1]):
            assert frame_index_of(x[b, f]) == int(idx[b, f]), (batch.files[b], b, f)


@pytest.mark.parametrize("decoder", ["nvdec", "pyav"])
def test_prefetcher_cuda_batches(backend: Any, gpu_videos: dict[str, Video], decoder: str) -> None:
    import tvl_async

    files = _files(gpu_videos, backend)
    n = 0
    with tvl_async.Prefetcher(
        files, seq_len=4, batch_size=3, device="cuda:0", backend=decoder, seed=3
    ) as it:
        for batch in it:
            x = batch["default"]
            assert x.is_cuda and x.dtype == torch.uint8 and x.shape[1:] == (4, 3, H, W)
            _check_batch(batch, x)
            n += 1
    assert n > 0


def test_prefetcher_cuda_handoff_slow_consumer(backend: Any, gpu_videos: dict[str, Video]) -> None:
    """Slow consumer on the default stream, fast producer: every batch intact, even after the
    producer has made many more (record_stream keeps the memory from being recycled)."""
    import tvl_async

    files = _files(gpu_videos, backend)
    kept = []
    with tvl_async.Prefetcher(
        files,
        seq_len=6,
        batch_size=4,
        device="cuda:0",
        backend="nvdec",
        queue_depth=4,
        seed=5,
        epochs=2,
    ) as it:
        for batch in it:
            torch.cuda._sleep(20_000_000)  # the training step, on the default stream
            x = batch["default"]
            kept.append((batch, x, x.float().mean(dim=(2, 3, 4))))
    assert len(kept) > 4
    for batch, x, means in kept:
        _check_batch(batch, x)
        assert torch.equal(means, x.float().mean(dim=(2, 3, 4)))
    np.testing.assert_equal(len({b.epoch for b, _, _ in kept}), 2)

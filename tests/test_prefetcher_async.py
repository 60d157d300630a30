"""The Prefetcher under asyncio: ``async with`` + ``async for`` next to other coroutines, errors,
timeouts and shutdown, checked by the frame indices in the pixels."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tvl_async._backends.pyav import PyAVBackend
from tvl_async._errors import PrefetcherClosedError
from tvl_async._prefetcher import Batch, Prefetcher
from tvl_async.cli.synthetic import frame_index_of, write_video

SEQ = 3
N_SAMPLES = (20 - SEQ + 1) + (13 - SEQ + 1)


class Boom(RuntimeError):
    """Raised by a patched decoder."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("prefetch_async")
    return [
        str(write_video(d / "a.mp4", n_frames=20, width=64, height=48, gop=8)),
        str(write_video(d / "b.mkv", n_frames=13, width=64, height=48, gop=8)),
    ]


def make(files: list[str], **kw: Any) -> Prefetcher:
    opts: dict[str, Any] = {"seq_len": SEQ, "batch_size": 4, "decode_threads": 2}
    opts.update(kw)
    return Prefetcher(files, **opts)


def patch_decode(monkeypatch: pytest.MonkeyPatch, hook: Any) -> None:
    original = PyAVBackend.decode

    def decode(self: PyAVBackend, index: Any, frames: Any, **kw: Any) -> Any:
        hook(index, list(frames))
        return original(self, index, frames, **kw)

    monkeypatch.setattr(PyAVBackend, "decode", decode)


def clip_indices(t: torch.Tensor) -> list[list[int]]:
    return [[frame_index_of(f) for f in clip] for clip in t]


def ids(batches: list[Batch]) -> list[int]:
    return [int(i) for b in batches for i in b.sample_ids]


def service_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tvl-async")]


@pytest.mark.timeout(30)
def test_async_for_while_another_coroutine_runs(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    with make(files, seed=7) as it:
        reference = list(it)
    # slow decoding: the consumer really waits, and the event loop must keep running meanwhile
    patch_decode(monkeypatch, lambda index, frames: time.sleep(0.02))
    ticks_during: list[int] = []

    async def main() -> list[Batch]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.002)

        task = asyncio.create_task(ticker())
        got: list[Batch] = []
        async with make(files, seed=7, lookahead=2, decode_threads=1) as it:
            async for batch in it:
                ticks_during.append(ticks)
                got.append(batch)
        stop.set()
        await task
        return got

    got = asyncio.run(main())
    assert ids(got) == ids(reference)
    for b, ref in zip(got, reference, strict=True):
        assert torch.equal(b["default"], ref["default"])
        assert clip_indices(b["default"]) == b.frame_indices.tolist()
    # the ticker advanced between batches: awaiting a batch does not block the loop
    assert ticks_during[-1] - ticks_during[0] >= len(got)
    assert service_threads() == []


@pytest.mark.timeout(30)
def test_async_error_reaches_the_consumer(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    def hook(index: Any, frames: list[int]) -> None:
        if index.path == files[0] and 9 in frames:
            raise Boom("frame 9 is broken")

    patch_decode(monkeypatch, hook)

    async def main() -> tuple[list[Batch], BaseException | None]:
        got: list[Batch] = []
        try:
            async with make(files, shuffle=False) as it:
                async for batch in it:
                    got.append(batch)
        except Boom as e:
            return got, e
        return got, None

    got, error = asyncio.run(main())
    assert type(error) is Boom and "frame 9 is broken" in str(error)
    notes = "\n".join(getattr(error, "__notes__", []))
    assert files[0] in notes and "[7, 8, 9]" in notes
    assert ids(got) == [0, 1, 2, 3]
    assert clip_indices(got[0]["default"]) == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert service_threads() == []


@pytest.mark.timeout(30)
def test_async_skip_and_stats(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    def hook(index: Any, frames: list[int]) -> None:
        if index.path == files[1] and 12 in frames:
            raise Boom("last frame")  # only the last clip of b.mkv

    patch_decode(monkeypatch, hook)

    async def main() -> tuple[list[Batch], Any]:
        async with make(files, on_error="skip", shuffle=False) as it:
            got = [b async for b in it]
            return got, it.stats()

    got, stats = asyncio.run(main())
    assert ids(got) == list(range(N_SAMPLES - 1))
    assert stats.samples_skipped == 1 and stats.skipped[0].sample_id == N_SAMPLES - 1
    assert stats.samples_delivered == N_SAMPLES - 1


@pytest.mark.timeout(30)
def test_async_timeout(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    release = threading.Event()
    patch_decode(monkeypatch, lambda index, frames: release.wait(20))

    async def main() -> tuple[BaseException | None, float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            async with make(files, decode_threads=1, timeout=0.4) as it:
                async for _ in it:
                    pass
        except TimeoutError as e:
            error = e
        elapsed = time.perf_counter() - t0
        task.cancel()
        return error, elapsed, ticks

    try:
        error, elapsed, ticks = asyncio.run(main())
    finally:
        release.set()
    assert isinstance(error, TimeoutError)
    assert files[0] in str(error) or files[1] in str(error)
    assert 0.4 <= elapsed < 2.5
    assert ticks >= 10  # the loop kept running while the consumer waited


@pytest.mark.timeout(30)
def test_async_break_and_closed(files: list[str], no_new_threads: None) -> None:
    async def main() -> Prefetcher:
        async with make(files, queue_depth=1) as it:
            async for _ in it:
                break
        return it

    it = asyncio.run(main())
    assert it.closed and service_threads() == []

    async def again() -> None:
        await it.__anext__()

    with pytest.raises(PrefetcherClosedError):
        asyncio.run(again())


@pytest.mark.timeout(30)
def test_async_exception_in_the_loop_body(files: list[str], no_new_threads: None) -> None:
    async def main() -> None:
        async with make(files, queue_depth=1) as it:
            async for _ in it:
                await asyncio.sleep(0)
                raise KeyError("user bug")

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert service_threads() == []


@pytest.mark.timeout(30)
def test_async_and_sync_give_the_same_batches(
    files: list[str], tmp_path: Path, no_new_threads: None
) -> None:
    with make(files, seed=1, epochs=2) as it:
        sync = list(it)

    async def main() -> list[Batch]:
        async with make(files, seed=1, epochs=2) as it:
            return [b async for b in it]

    got = asyncio.run(main())
    assert ids(got) == ids(sync) and [b.epoch for b in got] == [b.epoch for b in sync]
    for x, y in zip(got, sync, strict=True):
        assert torch.equal(x["default"], y["default"])

"""The DataLoader idiom: iterating a Prefetcher again runs the next epoch, nothing rebuilt.

Also the lifecycle's edges: start twice, the exit hook, ``async with`` that does not block the
event loop while the service thread joins.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import janus
import pytest
import torch

from tvl_async._backends.pyav import PyAVBackend
from tvl_async._config import ProcessDesc
from tvl_async._errors import PrefetcherClosedError
from tvl_async._prefetcher import Batch, Prefetcher, State, _close_at_exit
from tvl_async.cli.synthetic import frame_index_of, write_video

SEQ = 2
AUGMENT = {"crop": ProcessDesc(width=32, height=24, random_crop=True, random_flip=True)}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    d = tmp_path_factory.mktemp("epochs")
    return [
        str(write_video(d / "a.mp4", n_frames=17, width=64, height=48, gop=6)),
        str(write_video(d / "b.mkv", n_frames=11, width=64, height=48, gop=5)),
    ]


def make(files: list[str], **kw: Any) -> Prefetcher:
    opts: dict[str, Any] = {
        "seq_len": SEQ,
        "batch_size": 4,
        "decode_threads": 2,
        "seed": 5,
        "processing": AUGMENT,
    }
    opts.update(kw)
    return Prefetcher(files, **opts)


def key(b: Batch) -> tuple[Any, ...]:
    """Everything that must be identical: epoch, samples, frames, crops, pixels."""
    return (
        b.epoch,
        b.sample_ids.tolist(),
        b.frame_indices.tolist(),
        b.augment,
        b["crop"].sum(dim=(2, 3, 4)).tolist(),
    )


def reference(files: list[str], epochs: int, **kw: Any) -> list[tuple[Any, ...]]:
    with make(files, epochs=epochs, **kw) as it:
        return [key(b) for b in it]


def tvl_threads() -> set[int]:
    return {t.ident or 0 for t in threading.enumerate() if t.name.startswith("tvl-async")}


@pytest.mark.timeout(60)
def test_two_loops_are_epochs_0_and_1_without_new_threads(
    files: list[str], no_new_threads: None
) -> None:
    full = reference(files, epochs=2)
    with make(files) as it:
        assert len(it) == 7  # 26 samples per epoch, batches of 4
        first = [key(b) for b in it]
        threads = tvl_threads()
        assert len(threads) == 3  # the service and two decode threads
        second = [key(b) for b in it]
        assert tvl_threads() == threads  # nothing was rebuilt between the epochs
        s = it.stats()
    assert first + second == full
    assert [k[0] for k in first] == [0] * 7 and [k[0] for k in second] == [1] * 7
    assert len(s.epoch_start_waits) == 2 and s.batches_delivered == 14


@pytest.mark.timeout(60)
def test_the_next_epoch_is_prepared_while_this_one_is_consumed(
    files: list[str], no_new_threads: None
) -> None:
    with make(files, queue_depth=3) as it:
        for _ in it:
            time.sleep(0.02)  # a consumer slower than decoding
        deadline = time.monotonic() + 10
        while it.stats().queue_fill < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert it.stats().queue_fill == 3  # epoch 1's first batches wait in the queue
        second = list(it)
        waits = it.stats().epoch_start_waits
    assert [b.epoch for b in second] == [1] * 7
    assert len(waits) == 2 and waits[1] < 0.05  # no cold start at the epoch boundary


@pytest.mark.timeout(60)
def test_break_then_iterate_starts_the_next_epoch(files: list[str], no_new_threads: None) -> None:
    full = reference(files, epochs=3)
    with make(files) as it:
        got = []
        for b in it:
            got.append(key(b))
            if len(got) == 2:
                break  # the rest of epoch 0 is skipped
        after = [key(b) for b in it]
        third = [key(b) for b in it]
    assert got == full[:2]
    assert after == full[7:14] and third == full[14:]


@pytest.mark.timeout(60)
def test_next_then_for_goes_on_in_the_same_epoch(files: list[str], no_new_threads: None) -> None:
    full = reference(files, epochs=1)
    with make(files) as it:
        head = [key(next(it)), key(next(it))]
        rest = [key(b) for b in it]
    assert head + rest == full


@pytest.mark.timeout(60)
def test_set_epoch_between_loops(files: list[str], no_new_threads: None) -> None:
    full = reference(files, epochs=4)
    with make(files) as it:
        it.set_epoch(1)
        one = [key(b) for b in it]
        it.set_epoch(3)  # the service had prepared epoch 2: dropped, restarted at 3
        three = [key(b) for b in it]
        it.set_epoch(4)  # already where the stream stands: nothing is dropped
        for b in it:
            assert b.epoch == 4
            it.set_epoch(2)  # after a `for` left early: allowed
            break
        two = [key(b) for b in it]
        it.set_epoch(2)
        for _ in it:
            break
    assert one == full[7:14] and three == full[21:28] and two == full[14:21]
    with make(files) as it:
        next(it)
        with pytest.raises(RuntimeError, match="between loops"):
            it.set_epoch(1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [3, 7])
def test_state_saved_in_the_second_loop_resumes_exactly(
    files: list[str], k: int, no_new_threads: None
) -> None:
    full = reference(files, epochs=4)
    with make(files) as it:
        list(it)
        for n, _ in enumerate(it, 1):
            if n == k:
                break
        time.sleep(0.1)  # let the service read ahead: the state must not follow it
        state = it.state_dict()
    assert state["batches_delivered"] == 7 + k
    resumed = make(files)
    resumed.load_state_dict(state)
    with resumed:
        rest = [key(b) for b in resumed]
        after = [key(b) for b in resumed]
    if k < 7:  # the rest of epoch 1, then epoch 2
        assert rest == full[7 + k : 14] and after == full[14:21]
    else:  # epoch 1 was all delivered: its loop is over, the next one is epoch 2
        assert rest == full[14:21] and after == full[21:28]


@pytest.mark.timeout(60)
def test_epochs_n_per_loop(files: list[str], no_new_threads: None) -> None:
    full = reference(files, epochs=4)
    with make(files, epochs=2) as it:
        assert len(it) == 7  # batches per epoch, not per loop
        loops = [[key(b) for b in it], [key(b) for b in it]]
    assert loops == [full[:14], full[14:]]


@pytest.mark.timeout(60)
def test_two_async_loops(files: list[str], no_new_threads: None) -> None:
    full = reference(files, epochs=2)

    async def main() -> list[list[tuple[Any, ...]]]:
        async with make(files) as it:
            return [[key(b) async for b in it], [key(b) async for b in it]]

    first, second = asyncio.run(main())
    assert first + second == full


# ------------------------------------------------------------------------------ lifecycle


@pytest.mark.timeout(30)
def test_start_twice_is_refused(files: list[str], no_new_threads: None) -> None:
    it = make(files)
    assert it.state is State.NOT_STARTED
    it.start()
    assert it.state is State.RUNNING
    with pytest.raises(RuntimeError, match="already running"):
        it.start()
    with it:  # entering a running Prefetcher is fine
        next(it)
    assert it.state is State.CLOSED
    with pytest.raises(PrefetcherClosedError):
        it.start()


@pytest.mark.timeout(30)
def test_exit_hook_closes_running_prefetchers_and_keeps_none_alive(
    files: list[str], no_new_threads: None
) -> None:
    it = make(files, queue_depth=1)
    next(it)
    _close_at_exit()  # what the interpreter runs at exit
    assert it.closed and not tvl_threads()
    other = make(files, queue_depth=1)
    next(other)
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None and not tvl_threads()  # the hook held no strong reference


@pytest.mark.timeout(30)
def test_close_shuts_the_queue_down_and_drops_what_it_holds(
    files: list[str], no_new_threads: None
) -> None:
    """stop -> drain -> join: close() shuts the janus queue down (a full queue, the service
    blocked on its next put), drops the batches it held and joins at once."""
    it = make(files, queue_depth=1, epochs=3)
    next(it)
    q = it._queue
    assert q is not None
    deadline = time.monotonic() + 10
    while q.sync_q.qsize() < 1 and time.monotonic() < deadline:  # the service fills it
        time.sleep(0.01)
    assert q.sync_q.qsize() == 1
    t0 = time.perf_counter()
    it.close()
    assert time.perf_counter() - t0 < 2.0  # far below the join timeout (10 s)
    assert q.closed and q.sync_q.qsize() == 0 and not tvl_threads()
    with pytest.raises(janus.SyncQueueShutDown):
        q.sync_q.put_nowait(None)  # type: ignore[arg-type]
    assert it.state is State.CLOSED


@pytest.mark.timeout(30)
def test_async_exit_does_not_block_the_event_loop(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    """Closing joins the service thread; with a decode call that takes 0.6 s to return, that
    join takes about that long, and another coroutine keeps running meanwhile."""
    original = PyAVBackend.decode
    slow = threading.Event()

    def decode(self: PyAVBackend, index: Any, frames: Any, **kw: Any) -> Any:
        if slow.is_set():
            time.sleep(0.6)
        return original(self, index, frames, **kw)

    monkeypatch.setattr(PyAVBackend, "decode", decode)

    async def main() -> tuple[int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        async with make(files, decode_threads=1) as it:
            await it.__anext__()
            slow.set()
            await asyncio.sleep(0.05)  # the decode thread is now inside a slow call
            ticks = 0
            t0 = time.perf_counter()
        elapsed = time.perf_counter() - t0
        task.cancel()
        return ticks, elapsed

    ticks, elapsed = asyncio.run(main())
    assert elapsed > 0.2  # the join really waited for the decode call
    assert ticks >= 0.5 * elapsed / 0.01 * 0.5  # the loop ticked on meanwhile


def test_frames_of_the_fixture_are_exact(files: list[str]) -> None:
    with make(files, shuffle=False, processing=None) as it:
        b = next(it)
    assert [[frame_index_of(f) for f in clip] for clip in b["default"]] == b.frame_indices.tolist()
    assert isinstance(b["default"], torch.Tensor) and not hasattr(b, "event")
    assert not hasattr(b, "resume_at")

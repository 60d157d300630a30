"""Faults in the pipeline: every one ends with a clear message, no thread and no open file left.

Test backends are injected by monkeypatching ``PyAVBackend.decode`` (each decode thread makes its
own ``PyAVBackend``) or pieces of the service in ``tvl_async._service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tvl_async._service as service_module
from tvl_async import DecodeError, PrefetcherClosedError, ServiceError
from tvl_async._backends.pyav import PyAVBackend
from tvl_async._prefetcher import Prefetcher
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

N = 24  # frames per file
SEQ = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("faults")
    spec = VideoSpec(n_frames=N, width=64, height=48, gop=8, bframes=2)
    return [write_video(d / f"f{k}.mp4", spec).resolve() for k in range(3)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            out.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return out


@pytest.fixture
def clean(files: list[Path], no_new_threads: None) -> Iterator[None]:
    """No thread and no file descriptor left behind.

    At teardown it first waits (up to 20 s) for the threads the test started: a decode call
    released at the end of a test may still be finishing, and on a loaded machine that can take
    seconds; then ``no_new_threads`` checks that none is left, and the open file descriptors
    must be back at the count before the test.
    """
    from tvl_async._index import load_index

    for f in files:  # index (and cache) outside the measured window
        load_index(f)
    threads = set(threading.enumerate())
    before = open_fds()
    targets = fd_targets()
    yield
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
        t.is_alive() for t in threading.enumerate() if t not in threads
    ):
        time.sleep(0.02)
    deadline = time.monotonic() + 2
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds() <= before, f"file descriptor(s) left open: {fd_targets() - targets}"


def check_exact(batch: Any) -> None:
    for clip, idx in zip(batch["default"], batch.frame_indices, strict=True):
        assert [frame_index_of(f) for f in clip] == idx.tolist()


def patch_decode(
    monkeypatch: pytest.MonkeyPatch, before: Callable[[Any, list[int]], None]
) -> list[tuple[str, list[int]]]:
    """Wrap ``PyAVBackend.decode``: ``before(index, frames)`` runs first (and may raise)."""
    real = PyAVBackend.decode
    calls: list[tuple[str, list[int]]] = []

    def decode(self: PyAVBackend, index: Any, frames: Any, **kw: Any) -> Any:
        calls.append((index.path, list(frames)))
        before(index, list(frames))
        return real(self, index, frames, **kw)

    monkeypatch.setattr(PyAVBackend, "decode", decode)
    return calls


def make(files: list[Path], **kw: Any) -> Prefetcher:
    args: dict[str, Any] = {"seq_len": SEQ, "batch_size": 2, "decode_threads": 1, "seed": 0}
    args.update(kw)
    return Prefetcher(files, **args)


# ----------------------------------------------------------------------------- the consumer


def test_consumer_raises_inside_loop(files: list[Path], clean: None) -> None:
    with pytest.raises(ZeroDivisionError), make(files) as it:
        for k, batch in enumerate(it):
            check_exact(batch)
            if k == 2:
                _ = 1 / 0
    assert it.closed


def test_consumer_raises_without_with_block(files: list[Path], clean: None) -> None:
    """No ``with``: the Prefetcher is closed when it is garbage collected."""

    def consume() -> None:
        for k, _batch in enumerate(make(files)):
            if k == 1:
                raise ValueError("model blew up")

    with pytest.raises(ValueError, match="model blew up"):
        consume()
    gc.collect()


def test_keyboard_interrupt_in_loop_body(files: list[Path], clean: None) -> None:
    with pytest.raises(KeyboardInterrupt), make(files, epochs=None) as it:
        for k, _batch in enumerate(it):
            if k == 3:
                raise KeyboardInterrupt
    assert it.closed


def test_keyboard_interrupt_from_backend(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C landing in a decode thread reaches the consumer as KeyboardInterrupt, with a
    note of where it happened; every batch before it was delivered."""
    count = 0

    def before(index: Any, frames: list[int]) -> None:
        nonlocal count
        count += 1
        if count == 4:
            raise KeyboardInterrupt

    patch_decode(monkeypatch, before)
    delivered = 0
    with pytest.raises(KeyboardInterrupt) as e, make(files, lookahead=1, batch_size=1) as it:
        for batch in it:
            check_exact(batch)
            delivered += 1
    assert delivered == 3
    notes = getattr(e.value, "__notes__", [])
    assert len(notes) == 1
    assert notes[0].startswith("tvl_async: raised in decode thread tvl-async-decode-0 while ")
    assert "decoding " in notes[0] and ".mp4 frames [" in notes[0]


# ----------------------------------------------------------------------------- closing


def test_close_from_another_thread_while_consumer_waits(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()

    def before(index: Any, frames: list[int]) -> None:
        entered.set()
        release.wait(30)

    patch_decode(monkeypatch, before)
    it = make(files)
    waiting = threading.Event()  # set once the consumer waits inside next()
    check_stall = it._consumer._check_stall  # the consumer side of the queue

    def spy(waited: float) -> None:
        waiting.set()
        check_stall(waited)

    monkeypatch.setattr(it._consumer, "_check_stall", spy)
    closer = threading.Thread(
        target=lambda: (entered.wait(30), waiting.wait(30), it.close()), name="closer"
    )
    try:
        with it:
            closer.start()
            t0 = time.perf_counter()
            with pytest.raises(
                PrefetcherClosedError, match="the Prefetcher was closed while waiting for a batch"
            ):
                next(iter(it))
            assert time.perf_counter() - t0 < 5
    finally:
        release.set()
        closer.join(30)
    assert it.closed
    with pytest.raises(PrefetcherClosedError, match="closed"):
        next(iter(it))


def test_close_twice_and_after_error(files: list[Path], clean: None) -> None:
    it = make(files)
    it.start()
    it.close()
    it.close()
    with pytest.raises(PrefetcherClosedError):
        list(it)


# ----------------------------------------------------------------------------- slow and stuck


def test_slow_decoder_times_out_naming_the_file(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    patch_decode(monkeypatch, lambda index, frames: release.wait(30))
    t0 = time.perf_counter()
    try:
        with pytest.raises(TimeoutError) as e, make(files, timeout=0.5) as it:
            next(iter(it))
    finally:
        release.set()
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert msg.startswith("no batch arrived within 0.5 s; the service was busy with: ")
    assert any(f"{f} frames [" in msg for f in files), msg


def test_stuck_decoder_is_abandoned_with_a_warning(
    files: list[Path],
    clean: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A decode call that does not return (a stuck FFmpeg call cannot be interrupted): close()
    gives up joining after JOIN_SECONDS and warns, naming what it was busy with; the daemon
    thread ends by itself once the call returns."""
    monkeypatch.setattr(service_module, "JOIN_SECONDS", 0.3)
    entered, release = threading.Event(), threading.Event()

    def before(index: Any, frames: list[int]) -> None:
        entered.set()
        release.wait(30)

    patch_decode(monkeypatch, before)
    try:
        with caplog.at_level(logging.WARNING, logger="tvl_async"):
            it = make(files)
            it.start()
            assert entered.wait(30)
            t0 = time.perf_counter()
            it.close()
            assert time.perf_counter() - t0 < 3
    finally:
        release.set()
    warned = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith("tvl_async: the service thread did not stop within ")
    assert "busy with: " in warned[0] and ".mp4 frames [" in warned[0]
    assert "daemon thread" in warned[0]


# ----------------------------------------------------------------------------- failing decoder


def bad_frame(f: int) -> bool:
    return f % 7 == 6  # every 7th frame of every file fails


def failing_every_7th(index: Any, frames: list[int]) -> None:
    bad = [f for f in frames if bad_frame(f)]
    if bad:
        raise DecodeError(f"{index.path}: injected failure at frames {bad}")


def test_decoder_failing_every_nth_frame_skip(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_decode(monkeypatch, failing_every_7th)
    with make(files, on_error="skip", batch_size=4, decode_threads=2, max_file_failures=1000) as it:
        got = []
        for batch in it:
            check_exact(batch)
            got.extend(zip(batch.files, batch.frame_indices.tolist(), strict=True))
        stats = it.stats()
    clips = [(str(f), list(range(s, s + SEQ))) for f in files for s in range(N - SEQ + 1)]
    good = [c for c in clips if not any(map(bad_frame, c[1]))]
    bad = [c for c in clips if any(map(bad_frame, c[1]))]
    assert sorted(got) == sorted(good)
    assert sorted((s.file, s.frames) for s in stats.skipped) == sorted(bad)
    assert all("injected failure" in s.error for s in stats.skipped)


def test_decoder_failing_every_nth_frame_raise(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch_decode(monkeypatch, failing_every_7th)
    seen = []
    with pytest.raises(DecodeError) as e, make(files, shuffle=False, batch_size=1) as it:
        for batch in it:
            check_exact(batch)
            seen.append(batch.frame_indices[0].tolist())
    assert seen == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert str(e.value) == f"{files[0]}: injected failure at frames [6]"
    assert e.value.__notes__ == [
        f"tvl_async: raised in the service thread for sample 4 (epoch 0): {files[0]} frames "
        "[4, 5, 6]"
    ]


def test_decoder_failing_every_nth_frame_async_consumer(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same failure reaches an ``async for`` consumer at the same place."""
    patch_decode(monkeypatch, failing_every_7th)

    async def consume() -> list[list[int]]:
        seen = []
        async with make(files, shuffle=False, batch_size=1) as it:
            async for batch in it:
                check_exact(batch)
                seen.append(batch.frame_indices[0].tolist())
        return seen

    with pytest.raises(DecodeError, match=r"f0\.mp4: injected failure at frames \[6\]") as e:
        asyncio.run(consume())
    assert e.value.__notes__[0].endswith(f"{files[0]} frames [4, 5, 6]")


# ----------------------------------------------------------------------------- service death


def test_service_thread_ends_silently(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service thread vanishes without a word: the waiting consumer notices."""
    monkeypatch.setattr(service_module, "service_main", lambda plan: None)
    with (
        pytest.raises(
            ServiceError,
            match="the tvl_async service thread died without delivering its last batches",
        ),
        make(files) as it,
    ):
        next(iter(it))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_service_thread_killed_mid_run(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SystemExit inside the service's queue hand-off (also when it reports its own failure):
    the thread dies after two batches; the consumer gets those two, then ServiceError."""
    real_put = service_module._put
    puts = 0

    def put(plan: Any, item: Any, *args: Any, **kwargs: Any) -> bool:
        nonlocal puts
        puts += 1
        if puts > 2:
            raise SystemExit("killed")
        return real_put(plan, item, *args, **kwargs)

    monkeypatch.setattr(service_module, "_put", put)
    got = 0
    with pytest.raises(ServiceError, match="died without delivering"), make(files) as it:
        for batch in it:
            check_exact(batch)
            got += 1
    assert got == 2


def test_service_raises_base_exception(
    files: list[Path], clean: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BaseException inside the service (here SystemExit from collating a batch) reaches the
    consumer as that same exception, with a note naming the service thread."""
    real = service_module._collate
    calls = 0

    def collate(results: Any, plan: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise SystemExit("collate died")
        return real(results, plan)

    monkeypatch.setattr(service_module, "_collate", collate)
    got = 0
    with pytest.raises(SystemExit, match="collate died") as e, make(files) as it:
        for _ in it:
            got += 1
    assert got == 1
    assert e.value.__notes__ == ["tvl_async: raised in the service thread (tvl-async-service)"]

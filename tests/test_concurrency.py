"""Concurrency: several Prefetchers at once, asyncio event loops, a VideoLoader shared by
threads."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from tvl_async import VideoLoader
from tvl_async._prefetcher import Batch, Prefetcher
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

N = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("concurrency")
    spec = VideoSpec(n_frames=N, width=64, height=48, gop=8, bframes=2)
    return [write_video(d / f"c{k}.mp4", spec).resolve() for k in range(4)]


def shown(frames: Any) -> list[int]:
    return [frame_index_of(f) for f in frames]


def check_exact(batch: Batch) -> list[tuple[str, int]]:
    """Assert every clip shows its frames; returns (file, start frame) per clip."""
    out = []
    for clip, idx, f in zip(batch["default"], batch.frame_indices, batch.files, strict=True):
        assert shown(clip) == idx.tolist()
        out.append((f, int(idx[0])))
    return out


def all_clips(files: list[Path], seq_len: int) -> list[tuple[str, int]]:
    return sorted((str(f), s) for f in files for s in range(N - seq_len + 1))


def test_two_prefetchers_interleaved(files: list[Path], no_new_threads: None) -> None:
    a = Prefetcher(files[:2], seq_len=3, batch_size=4, seed=1, decode_threads=1)
    b = Prefetcher(files[2:], seq_len=5, batch_size=3, seed=2, decode_threads=1, epochs=2)
    got_a: list[tuple[str, int]] = []
    got_b: list[tuple[str, int]] = []
    with a, b:
        ia, ib = iter(a), iter(b)
        done_a = done_b = False
        while not (done_a and done_b):
            if not done_a:
                try:
                    got_a += check_exact(next(ia))
                except StopIteration:
                    done_a = True
            if not done_b:
                try:
                    got_b += check_exact(next(ib))
                except StopIteration:
                    done_b = True
    assert sorted(got_a) == all_clips(files[:2], 3)
    assert sorted(got_b) == sorted(all_clips(files[2:], 5) * 2)


def test_two_prefetchers_in_two_consumer_threads(files: list[Path], no_new_threads: None) -> None:
    results: dict[str, list[tuple[str, int]]] = {}
    errors: list[BaseException] = []

    def consume(name: str, subset: list[Path], seq_len: int) -> None:
        try:
            got: list[tuple[str, int]] = []
            with Prefetcher(subset, seq_len=seq_len, batch_size=2, decode_threads=1) as it:
                for batch in it:
                    got += check_exact(batch)
            results[name] = got
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=consume, args=("a", files[:2], 2), name="consumer-a"),
        threading.Thread(target=consume, args=("b", files[1:], 4), name="consumer-b"),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results["a"]) == all_clips(files[:2], 2)
    assert sorted(results["b"]) == all_clips(files[1:], 4)


def test_async_iteration_is_exact(files: list[Path], no_new_threads: None) -> None:
    async def main() -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        async with Prefetcher(files[:2], seq_len=2, batch_size=4, decode_threads=1) as it:
            async for batch in it:
                got += check_exact(batch)
        return got

    assert sorted(asyncio.run(main())) == all_clips(files[:2], 2)


def test_prefetcher_used_from_a_second_event_loop(files: list[Path], no_new_threads: None) -> None:
    """A Prefetcher binds to the event loop that first iterates it; another loop gets a clear
    RuntimeError, and the Prefetcher is closed (no thread left)."""
    it = Prefetcher(files[:2], seq_len=2, batch_size=2, decode_threads=1, queue_depth=1)

    async def take(n: int) -> list[tuple[str, int]]:
        got: list[tuple[str, int]] = []
        async for batch in it:
            got += check_exact(batch)
            if len(got) >= n:
                break
        return got

    assert len(asyncio.run(take(4))) == 4
    with pytest.raises(RuntimeError) as e:
        asyncio.run(take(2))
    assert str(e.value) == (
        "this Prefetcher was already iterated from another asyncio event loop; iterate one "
        "Prefetcher from one event loop (create one per loop)"
    )
    assert "different event loop" in str(e.value.__cause__)
    assert it.closed


def test_video_loader_shared_by_four_threads(files: list[Path]) -> None:
    """Calls from several threads are serialised by the loader's lock: every answer is exact,
    and a sequential read in one thread is not disturbed by random access in the others."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)
    with VideoLoader(files[0]) as loader:

        def work(seed: int) -> None:
            rng = random.Random(seed)
            try:
                start.wait(10)
                for _ in range(12):
                    req = [rng.randrange(N) for _ in range(rng.randint(1, 6))]
                    kind = rng.choice(["select", "stack", "one", "seek"])
                    if kind == "select":
                        assert shown(list(loader.select_frames(req))) == req
                    elif kind == "stack":
                        assert shown(loader.read_frames_at(req)) == req
                    elif kind == "one":
                        assert frame_index_of(loader.select_frame(req[0])) == req[0]
                    else:
                        assert shown(loader.read_frames_at(req, mode="seek")) == req
            except BaseException as e:
                errors.append(e)

        def sequential() -> None:
            try:
                start.wait(10)
                assert shown(list(loader.read_all_frames())) == list(range(N))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,), name=f"user-{k}") for k in range(3)]
        threads.append(threading.Thread(target=sequential, name="user-sequential"))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]

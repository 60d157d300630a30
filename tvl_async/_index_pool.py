"""Indexing many files at once: a pool of threads, or of processes for large local builds.

Building an index is a Python loop per packet (GIL-bound), so threads overlap only the waiting
(network reads, the disk); :func:`build_many` spreads a large build of local files over
processes instead (``forkserver``, else ``spawn``: never ``fork``, the caller may hold a CUDA
context). Per-file failures come back as :class:`IndexFailure`, whatever pool ran them; a file
over the time limit fails with ``TimeoutError`` and its thread is abandoned (a daemon thread, in
this process or in a worker). Functions here block until every file is done and may be called
from any thread; in a script, processes need the usual ``if __name__ == "__main__":`` guard
(without it the pool breaks and the build falls back to threads, with a warning).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from tvl_async._checks import env_number
from tvl_async._errors import VideoOpenError
from tvl_async._index_build import build_index
from tvl_async._index_model import VideoIndex

log = logging.getLogger(__name__)

#: Fewest files to build for which processes may be started; the first :data:`PROBE_FILES` are
#: built in this process, timed, and processes build the rest when they are estimated to save
#: :data:`PROCESS_MIN_SECONDS` seconds or more (a pool costs a few seconds to start): with 2
#: workers, from 10 s of work on; with 16, from 5.3 s. ``TVL_ASYNC_INDEX_POOL_MIN_SECONDS``
#: overrides it (0: processes whenever there are enough files, as tools/index_timing.py does).
PROCESS_MIN_FILES = 64
PROBE_FILES = 16
PROCESS_MIN_SECONDS = 5.0


@dataclass(frozen=True)
class IndexFailure:
    """A file that could not be indexed.

    Attributes:
        path: the file as given.
        error: the exception (its message names the file).
    """

    path: str
    error: BaseException

    @property
    def cause(self) -> str:
        """One line: the exception's type and message."""
        return f"{type(self.error).__name__}: {self.error}"


Result = VideoIndex | IndexFailure


def progress_bar(total: int) -> Any:
    """A tqdm bar on stderr counting files; raises ImportError without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError as e:
        raise ImportError("progress=True needs tqdm (pip install tqdm)") from e
    return tqdm(total=total, desc="indexing", unit="file")


def default_workers() -> int:
    """``TVL_ASYNC_INDEX_WORKERS`` if set, else the cores this process may run on.

    Raises:
        ValueError: ``TVL_ASYNC_INDEX_WORKERS`` is not an int >= 1.
    """
    n = env_number("TVL_ASYNC_INDEX_WORKERS", 0, 1)
    if n:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _timeout_error(path: str, timeout: float) -> TimeoutError:
    return TimeoutError(
        f"{path}: indexing took longer than {timeout:g} s (a read that does not return?); "
        f"the file is left out"
    )


def build_many(
    paths: Sequence[str],
    stream_index: int | None,
    *,
    workers: int | None,
    timeout: float | None,
    bar: Any = None,
) -> list[Result]:
    """:func:`build_index` for each local file (no cache), results in the order given; blocks.

    Args:
        paths: local video files.
        stream_index: as for :func:`build_index`.
        workers: processes (None: ``TVL_ASYNC_INDEX_WORKERS``, else one per core); 1 builds in
            one thread of this process. Small builds (:data:`PROCESS_MIN_SECONDS`) run in
            threads.
        timeout: seconds one file may take (None: no limit).
        bar: a progress bar to ``update(1)`` per file, or None.
    """
    n_workers = workers or default_workers()
    threads = workers or min(16, 2 * n_workers)

    def work(path: str) -> VideoIndex:
        return build_index(path, stream_index)

    todo = list(paths)
    done: list[Result] = []
    if n_workers > 1 and len(todo) >= PROCESS_MIN_FILES:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # a worker re-running an unguarded script: fail fast, the parent falls back
            raise RuntimeError("indexing started while a worker process imports the main module")
        # time a few files here: processes pay off only past a few seconds of work, since
        # each pool starts an interpreter that imports tvl_async (and torch)
        t0 = time.monotonic()
        done = run_threads(work, todo[:PROBE_FILES], 1, timeout, bar)
        per_file = (time.monotonic() - t0) / PROBE_FILES
        todo = todo[PROBE_FILES:]
        least = env_number("TVL_ASYNC_INDEX_POOL_MIN_SECONDS", PROCESS_MIN_SECONDS, 0.0)
        if per_file * len(todo) * (1 - 1 / n_workers) >= least:
            try:
                return done + _run_processes(todo, stream_index, n_workers, timeout, bar)
            except (BrokenProcessPool, OSError, RuntimeError) as e:
                warnings.warn(
                    f"indexing in {n_workers} processes failed ({type(e).__name__}: {e}); "
                    f"indexing in threads instead (a script starting tvl_async needs an "
                    f'`if __name__ == "__main__":` guard for processes)',
                    RuntimeWarning,
                    stacklevel=2,
                )
    return done + run_threads(work, todo, max(1, min(threads, len(todo))), timeout, bar)


def _build_chunk(
    paths: list[str], stream_index: int | None, timeout: float | None
) -> list[VideoIndex | BaseException]:
    """The worker process's task: each file built in a daemon thread, waited on up to
    ``timeout`` seconds (a stuck read is abandoned, as in :func:`run_threads`)."""
    out: list[VideoIndex | BaseException] = []
    for path in paths:
        box: list[VideoIndex | BaseException] = []

        def one(p: str = path, into: list[Any] = box) -> None:
            try:
                into.append(build_index(p, stream_index))
            except Exception as e:
                into.append(e)

        if timeout is None:
            one()
        else:
            t = threading.Thread(target=one, name="tvl-async-index", daemon=True)
            t.start()
            t.join(timeout)
        r = box[0] if box else _timeout_error(path, timeout or 0.0)
        out.append(r if isinstance(r, VideoIndex) else _picklable(r, path))
    return out


def _picklable(error: BaseException, path: str) -> BaseException:
    """``error``, or a VideoOpenError with its text if it cannot go back to the parent."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        text = str(error) if path in str(error) else f"{path}: {error}"
        return VideoOpenError(f"{text} ({type(error).__name__})")
    return error


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # the server imports the builder once; its children start without importing torch again
        ctx.set_forkserver_preload(["tvl_async._index_build"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_processes(
    paths: list[str], stream_index: int | None, n_workers: int, timeout: float | None, bar: Any
) -> list[Result]:
    chunk = max(1, min(16, len(paths) // (n_workers * 8)))
    results: list[Result | None] = [None] * len(paths)
    with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=_context()) as pool:
        futures = {
            pool.submit(_build_chunk, paths[k : k + chunk], stream_index, timeout): k
            for k in range(0, len(paths), chunk)
        }
        try:
            for fut in concurrent.futures.as_completed(futures):
                k = futures[fut]
                for j, r in enumerate(fut.result()):
                    results[k + j] = (
                        r if isinstance(r, VideoIndex) else IndexFailure(paths[k + j], r)
                    )
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [r for r in results if r is not None]


def run_threads(
    work: Callable[[str], VideoIndex],
    items: list[str],
    n_workers: int,
    timeout: float | None,
    bar: Any,
) -> list[Result]:
    """Run ``work(item)`` on daemon threads; wait in short slices, failing items over
    ``timeout`` seconds (their thread is abandoned and replaced)."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for k in range(len(items)):
        todo.put(k)
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    results: dict[int, Result] = {}
    started: dict[int, float] = {}
    lock = threading.Lock()

    def worker() -> None:
        while True:
            try:
                k = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                started[k] = time.monotonic()
            try:
                r: Result = work(items[k])
            except Exception as e:
                r = IndexFailure(items[k], e)
            with lock:
                started.pop(k, None)
                if k in results:  # timed out meanwhile: this thread was replaced
                    return
                results[k] = r
            done.put(k)

    def spawn() -> None:
        threading.Thread(target=worker, name="tvl-async-index", daemon=True).start()

    for _ in range(n_workers):
        spawn()
    resolved = 0
    while resolved < len(items):
        try:
            done.get(timeout=0.05)
            resolved += 1
            if bar is not None:
                bar.update(1)
        except queue.Empty:
            pass
        if timeout is None:
            continue
        now = time.monotonic()
        with lock:
            late = [k for k, t0 in started.items() if now - t0 > timeout]
            for k in late:
                started.pop(k)
                results[k] = IndexFailure(items[k], _timeout_error(items[k], timeout))
        for _ in late:
            done.put(-1)
            spawn()
    return [results[k] for k in range(len(items))]

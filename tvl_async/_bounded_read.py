"""Bounded remote reads: each attempt in a thread of its own, a read timeout, bounded retries,
errors that name the URL (``tvl_async._source`` reads every remote byte through :func:`bounded`).

``TVL_ASYNC_READ_TIMEOUT`` (seconds, default 30) and ``TVL_ASYNC_READ_RETRIES`` (default 2) are
read at every call. :func:`bounded` blocks the calling thread for at most about
``(retries + 1) x timeout`` seconds; any thread may call it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from tvl_async._checks import env_number
from tvl_async._errors import RemoteReadError

__all__ = ["bounded", "read_retries", "read_timeout"]

_T = TypeVar("_T")


def read_timeout() -> float:
    """Seconds one remote read may take (``TVL_ASYNC_READ_TIMEOUT``, default 30)."""
    return env_number("TVL_ASYNC_READ_TIMEOUT", 30.0, 0.0)


def read_retries() -> int:
    """Retries of a failed remote read (``TVL_ASYNC_READ_RETRIES``, default 2)."""
    return env_number("TVL_ASYNC_READ_RETRIES", 2, 0)


class _Stalled(Exception):
    """A read did not finish within its timeout."""


def _in_thread(call: Callable[[], _T], timeout: float) -> _T:
    """``call()`` in a new daemon thread, waited for at most ``timeout`` seconds; its result
    or its exception. Raises :class:`_Stalled` past the timeout (the thread is abandoned)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append((True, call()))
        except BaseException as e:
            box.append((False, e))

    thread = threading.Thread(target=run, name="tvl-async-read", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise _Stalled
    ok, value = box[0]
    if not ok:
        raise value
    return cast(_T, value)


def bounded(url: str, what: str, call: Callable[[], _T]) -> _T:
    """``call()`` with the read timeout and bounded retries; errors name ``url``. Each attempt
    runs in a daemon thread of its own (``tvl-async-read``), abandoned if it stalls: no
    thread outlives the read it was started for."""
    timeout, attempts = read_timeout(), read_retries() + 1
    for attempt in range(attempts):
        try:
            return _in_thread(call, timeout)
        except FileNotFoundError:
            raise FileNotFoundError(2, "No such video object", url) from None
        except _Stalled:
            raise RemoteReadError(
                f"{url}: {what} took longer than {timeout:g} s (TVL_ASYNC_READ_TIMEOUT); "
                f"the server stalled"
            ) from None
        except (OSError, TimeoutError) as e:
            if attempt + 1 == attempts:
                raise RemoteReadError(
                    f"{url}: {what} failed after {attempts} attempt(s) ({type(e).__name__}: {e})"
                ) from e
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")

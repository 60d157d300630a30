"""Helpers shared by the applications: one-line errors, argparse types, sizes, progress bars.

Nothing here touches the library beyond its public API. Any thread may call these functions;
none blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, TypeVar

from tqdm import tqdm

T = TypeVar("T")

POSITIVE_INT = "integers >= 1"


def invalid(name: str, value: object, allowed: str, *, context: str = "") -> str:
    """The library's one form of a bad-value message, for the applications' own checks:
    ``Invalid <name> (<value>)[ <context>]. Supported values are <allowed>.`` (``value`` shown
    with ``repr``; the library builds the same text in ``tvl_async._checks``).
    """
    tail = f" {context}" if context else ""
    return f"Invalid {name} ({value!r}){tail}. Supported values are {allowed}."


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(invalid("value", text, POSITIVE_INT)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(invalid("value", text, POSITIVE_INT))
    return value


def json_object(text: str) -> dict[str, Any]:
    """argparse type for ``--storage-options``: a JSON object (fsspec's keyword arguments)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed: a JSON object, e.g. '{{\"anon\": true}}'"
        )
    return value


def parse_size(text: str) -> tuple[int, int]:
    """``"640x360"`` -> ``(640, 360)`` pixels; raises ValueError with the accepted form."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(invalid("size", text, "WIDTHxHEIGHT, e.g. 640x360")) from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ValueError(invalid("size", text, "WIDTHxHEIGHT with both even and >= 16"))
    return w, h


def human_bytes(n: float) -> str:
    """``n`` bytes as B, kB, MB or GB (powers of 1000)."""
    for unit in ("B", "kB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def progress(
    iterable: Iterable[T], *, total: int | None, desc: str, unit: str = "it", enabled: bool = True
) -> Iterator[T]:
    """``iterable`` wrapped in a tqdm progress bar on stderr (tqdm's defaults otherwise);
    ``enabled=False`` (``--quiet``) gives the plain iterable."""
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr))


def progress_bar(
    *, total: int | None, desc: str, unit: str = "it", enabled: bool = True
) -> tqdm[None]:
    """A tqdm bar on stderr that the caller updates (``bar.update(n)``, ``bar.close()``);
    disabled (it prints nothing) when ``enabled`` is False."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled)


def error_line(e: BaseException) -> str:
    """An exception as one line of text (pydantic's multi-line messages folded)."""
    from pydantic import ValidationError

    from tvl_async import TvlAsyncError

    if isinstance(e, ValidationError):
        text = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
    elif isinstance(e, OSError) and e.strerror and e.filename:
        name = os.fspath(e.filename)
        text = e.strerror if str(name) in e.strerror else f"{e.strerror}: '{name}'"
    else:
        text = str(e)
        if not isinstance(e, ValueError | RuntimeError | OSError | TvlAsyncError) or not text:
            text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return " ".join(text.split())


def exit_on_error(main: Callable[[], int], prog: str) -> int:
    """Run an example's or a tool's ``main()``: a failure becomes one line on stderr and exit
    code 2 (``TVL_ASYNC_DEBUG=1`` shows the traceback). Blocks while ``main`` runs."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("TVL_ASYNC_DEBUG"):
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2

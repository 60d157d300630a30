"""The one form of every "bad value" message, and the small checks the option models share.

Every message reads as torchcodec's do: the bad value, then what is allowed, prefixed by the file
when there is one::

    Invalid sampling ('foo'). Supported values are sequential, uniform, chunked, gop_shuffle.
    clip.mp4: Invalid frame index (48). Supported values are 0..47.

:func:`invalid_value` builds the ``ValueError`` (:func:`invalid_type` the ``TypeError``); callers
raise it. Pure functions of their arguments: any thread may call them.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "check_choice",
    "check_int",
    "check_option_names",
    "env_number",
    "invalid_message",
    "invalid_type",
    "invalid_value",
    "out_of_range",
    "reject_bool",
]


def invalid_message(
    name: str,
    value: Any,
    allowed: str | Iterable[str],
    *,
    file: str | os.PathLike[str] | None = None,
    context: str = "",
    shown: str | None = None,
) -> str:
    """The house message for a bad ``value`` of ``name``.

    Form: ``[file: ]Invalid <name> (<value>)[ <context>]. Supported values are <allowed>.``

    Args:
        name: what was given (an option name, ``"frame index"``, ...).
        value: the bad value; shown with ``repr`` unless ``shown`` is given.
        allowed: what is allowed, as a phrase (``"integers >= 1"``) or the choices (joined).
        file: the file the value was given for, if any.
        context: words after the value (``"with dtype uint8"``).
        shown: the value already written out (``"rank=0, world_size=None"``).
    """
    text = ", ".join(str(a) for a in allowed) if not isinstance(allowed, str) else allowed
    where = f"{os.fspath(file)}: " if file is not None else ""
    tail = f" {context}" if context else ""
    return (
        f"{where}Invalid {name} ({repr(value) if shown is None else shown}){tail}. "
        f"Supported values are {text}."
    )


def invalid_value(
    name: str,
    value: Any,
    allowed: str | Iterable[str],
    *,
    file: str | os.PathLike[str] | None = None,
    context: str = "",
    shown: str | None = None,
) -> ValueError:
    """A ``ValueError`` with :func:`invalid_message`'s text (same arguments); raise it."""
    return ValueError(
        invalid_message(name, value, allowed, file=file, context=context, shown=shown)
    )


def invalid_type(
    name: str,
    value: Any,
    allowed: str | Iterable[str],
    *,
    file: str | os.PathLike[str] | None = None,
    context: str = "",
    shown: str | None = None,
) -> TypeError:
    """A ``TypeError`` with :func:`invalid_message`'s text, for a value of the wrong kind."""
    return TypeError(invalid_message(name, value, allowed, file=file, context=context, shown=shown))


def out_of_range(
    name: str, value: int, n: int, *, file: str | os.PathLike[str] | None = None
) -> IndexError:
    """An ``IndexError`` with :func:`invalid_message`'s text for an index outside ``-n..n-1``
    (``clip.mp4: Invalid frame index (48). Supported values are 0..47 (or -48..-1).``)."""
    return IndexError(
        invalid_message(name, value, f"0..{n - 1} (or -{n}..-1)", file=file, shown=str(value))
    )


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, fold: bool = False) -> str:
    """Return ``value`` if it is one of ``choices`` (matched case-insensitively when ``fold``,
    then returned as spelt in ``choices``); else raise :func:`invalid_value`."""
    if isinstance(value, str):
        if value in choices:
            return value
        if fold:
            for choice in choices:
                if value.lower() == choice.lower():
                    return choice
    raise invalid_value(name, value, choices)


def reject_bool(name: str, value: Any, allowed: str) -> Any:
    """Refuse ``True``/``False`` where an integer is meant (pydantic would take them as 1/0)."""
    if isinstance(value, bool):
        raise invalid_value(name, value, allowed)
    return value


def check_option_names(
    owner: str,
    given: Iterable[Any],
    known: Mapping[str, Any] | Iterable[str],
    *,
    error: type[Exception] = ValueError,
) -> None:
    """Refuse names not in ``known``: the message lists the known ones and a close match.

    Raises:
        ``error`` (``ValueError`` by default; ``TypeError`` for keyword arguments, as Python).
    """
    names = list(known)
    for key in given:
        if key in names:
            continue
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"(did you mean {close[0]!r}?)" if close else ""
        raise error(
            invalid_message("option", key, ", ".join(names), context=f"for {owner} {hint}".rstrip())
        )


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers too, bools refused); raises naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid_type(name, value, "integers")
    if value < minimum:
        raise invalid_value(name, value, f"integers >= {minimum}")
    return int(value)


_Number = TypeVar("_Number", int, float)


def env_number(name: str, default: _Number, minimum: _Number) -> _Number:
    """The environment variable ``name`` as a number of ``default``'s type (int or float),
    ``default`` when it is unset or empty; read at each call.

    Raises:
        ValueError: not such a number, or below ``minimum``; the message names the variable
            and its text (``Invalid TVL_ASYNC_X ('zero'). Supported values are integers >= 1.``).
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    kind = type(default)
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        allowed = f"{'integers' if kind is int else 'numbers'} >= {minimum}"
        raise invalid_value(name, text, allowed)
    return value

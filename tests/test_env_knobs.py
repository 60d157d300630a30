"""The TVL_ASYNC_* environment knobs: one reader (``_checks.env_number``), one error form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tvl_async._bounded_read import read_retries, read_timeout
from tvl_async._checks import env_number
from tvl_async._index_pool import default_workers


def test_unset_or_empty_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TVL_ASYNC_TEST_KNOB", raising=False)
    assert env_number("TVL_ASYNC_TEST_KNOB", 8, 1) == 8
    monkeypatch.setenv("TVL_ASYNC_TEST_KNOB", " ")
    assert env_number("TVL_ASYNC_TEST_KNOB", 2.5, 0.0) == 2.5


def test_the_value_keeps_the_default_s_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVL_ASYNC_TEST_KNOB", "3")
    n = env_number("TVL_ASYNC_TEST_KNOB", 8, 1)
    x = env_number("TVL_ASYNC_TEST_KNOB", 8.0, 0.0)
    assert (n, type(n)) == (3, int) and (x, type(x)) == (3.0, float)


@pytest.mark.parametrize(
    ("reader", "name", "text", "allowed"),
    [
        (read_timeout, "TVL_ASYNC_READ_TIMEOUT", "soon", "numbers >= 0.0"),
        (read_timeout, "TVL_ASYNC_READ_TIMEOUT", "-1", "numbers >= 0.0"),
        (read_timeout, "TVL_ASYNC_READ_TIMEOUT", "nan", "numbers >= 0.0"),
        (read_retries, "TVL_ASYNC_READ_RETRIES", "1.5", "integers >= 0"),
        (default_workers, "TVL_ASYNC_INDEX_WORKERS", "0", "integers >= 1"),
    ],
)
def test_a_bad_value_names_the_variable_and_its_text(
    monkeypatch: pytest.MonkeyPatch,
    reader: Callable[[], Any],
    name: str,
    text: str,
    allowed: str,
) -> None:
    monkeypatch.setenv(name, text)
    with pytest.raises(ValueError) as e:
        reader()
    assert str(e.value) == f"Invalid {name} ({text!r}). Supported values are {allowed}."

"""README's "### Options" table lists exactly PrefetchConfig's fields, with their defaults."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tvl_async import PrefetchConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import options_table  # noqa: E402  (tools/options_table.py)


def _readme_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = options_table.table_span(text)
    lines = text[start:end].splitlines()
    assert lines[:2] == ["| option | default | meaning |", "| --- | --- | --- |"]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, line
        rows.append(cells)
    return rows


def _parse_default(text: str) -> object:
    """``"cpu"`` in backticks -> 'cpu'; True, 8, None -> the value (ast.literal_eval)."""
    return ast.literal_eval(text.strip("`"))


def test_readme_lists_exactly_the_fields_in_order() -> None:
    names = [row[0] for row in _readme_rows()]
    assert all(n.startswith("`") and n.endswith("`") for n in names)
    assert [n.strip("`") for n in names] == list(PrefetchConfig.model_fields)


def test_readme_defaults_are_the_fields_defaults() -> None:
    for name, default, meaning in _readme_rows():
        info = PrefetchConfig.model_fields[name.strip("`")]
        assert meaning == info.description, name
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "shown_default" in extra:
            assert default == extra["shown_default"], name
        else:
            assert _parse_default(default) == info.default, (name, default, info.default)


def test_shown_defaults_describe_the_real_default() -> None:
    fields = PrefetchConfig.model_fields
    for name in (
        "lookahead",
        "memory_budget",
        "decode_threads",
        "ffmpeg_threads",
        "rank",
        "world_size",
    ):
        assert fields[name].default is None, name  # shown as what None means


def test_check_mode_catches_a_stale_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert options_table.main(["--check"]) == 0
    stale = (
        (ROOT / "README.md")
        .read_text(encoding="utf-8")
        .replace("| `batch_size` | 1 |", "| `batch_size` | 2 |")
    )
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    monkeypatch.setattr(options_table, "README", tmp_path / "README.md")
    assert options_table.main(["--check"]) == 1
    assert options_table.main(["--write"]) == 0
    assert options_table.main(["--check"]) == 0


def test_script_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "options_table.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out == options_table.options_table()
    assert out.count("\n") == len(PrefetchConfig.model_fields) + 2

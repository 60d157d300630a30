"""The README's option table, generated from :class:`tvl_async.PrefetchConfig` (the one place
where every ``Prefetcher`` option, its default and its one-line doc are defined).

    python tools/options_table.py            # print the table (markdown)
    python tools/options_table.py --write    # replace the table in README.md ("### Options")
    python tools/options_table.py --check    # exit 1 if README.md's table differs

``tests/test_options_table.py`` runs the check, so a new option without its README row fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tvl_async import PrefetchConfig

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Options"


def default_text(name: str) -> str:
    """How the table shows the default of option ``name``: the field's ``shown_default`` (its
    ``json_schema_extra``) when it has one, else the value (strings quoted)."""
    info = PrefetchConfig.model_fields[name]
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    default = info.default
    return f'`"{default}"`' if isinstance(default, str) else str(default)


def options_table() -> str:
    """The option table (markdown), one row per :class:`PrefetchConfig` field, in field order."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for name, info in PrefetchConfig.model_fields.items():
        rows.append(f"| `{name}` | {default_text(name)} | {info.description} |")
    return "\n".join(rows) + "\n"


def table_span(text: str) -> tuple[int, int]:
    """``(start, end)`` character offsets of the first table after the ``### Options`` heading.

    Raises:
        ValueError: no such heading, or no table under it.
    """
    head = text.find(f"\n{SECTION}\n")
    if head < 0:
        raise ValueError(f"{README.name}: no '{SECTION}' heading")
    start = text.find("\n|", head)
    if start < 0:
        raise ValueError(f"{README.name}: no table under '{SECTION}'")
    start += 1
    end = start
    while end < len(text) and text.startswith("|", end):
        end = text.index("\n", end) + 1
    return start, end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    mode.add_argument("--check", action="store_true", help="fail if README.md's table differs")
    args = parser.parse_args(argv)
    table = options_table()
    if not (args.write or args.check):
        print(table, end="")
        return 0
    text = README.read_text(encoding="utf-8")
    start, end = table_span(text)
    if args.check:
        if text[start:end] != table:
            print(
                f"{README}: the '{SECTION}' table differs from PrefetchConfig; run "
                "python tools/options_table.py --write",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(text[:start] + table + text[end:], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The import contracts of pyproject.toml hold, and they do catch a wrong-way import.

Each check runs ``lint-imports`` on a copy of the package in a temporary folder, so the
deliberate violations never touch the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "tvl_async",
        tmp_path / "tvl_async",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _add_import(root: Path, module: str, imported: str) -> None:
    path = root / module
    path.write_text(
        path.read_text(encoding="utf-8") + f"\nimport {imported}  # noqa\n", encoding="utf-8"
    )


def test_contracts_are_kept(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_backend_importing_the_service_breaks_the_layers(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_import(root, "tvl_async/_backends/pyav.py", "tvl_async._service")
    done = _lint(root)
    assert done.returncode == 1, done.stdout
    assert "tvl_async._backends is not allowed to import tvl_async._service" in done.stdout
    assert "tvl_async._backends.pyav -> tvl_async._service" in done.stdout


def test_the_library_importing_the_apps_breaks_both_contracts(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_import(root, "tvl_async/_config.py", "tvl_async.cli.main")
    done = _lint(root)
    assert done.returncode == 1, done.stdout
    assert "The library never imports its applications (tvl_async.cli) BROKEN" in done.stdout
    assert "tvl_async._config -> tvl_async.cli.main" in done.stdout


MAX_MODULE_LINES = 400


def test_no_module_over_400_lines() -> None:
    """The house rule: modules stay small (mostly 100-300 lines, none over 400)."""
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in sorted((ROOT / "tvl_async").rglob("*.py"))
    }
    assert len(sizes) > 40  # the walk found the package
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"

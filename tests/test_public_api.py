"""The public surface: ``tvl_async.__all__`` (sorted, complete) plus the subpackage ``cli``."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import tvl_async

INIT = Path(tvl_async.__file__)
# names DESIGN.md promises users and tests
DESIGN_NAMES = {
    "Batch",
    "PrefetchConfig",
    "PrefetchStats",
    "Prefetcher",
    "ProcessDesc",
    "VideoDataset",
    "VideoLoader",
    "TvlAsyncError",
}


def _init_bindings() -> set[str]:
    """Names bound at the top level of tvl_async/__init__.py (imports and assignments)."""
    names: set[str] = set()
    for node in ast.parse(INIT.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.FunctionDef | ast.ClassDef):
            target = node.target if isinstance(node, ast.AnnAssign) else node
            names.add(target.id if isinstance(target, ast.Name) else target.name)  # type: ignore[union-attr]
    return names


def test_all_is_sorted_unique_and_importable() -> None:
    names = tvl_async.__all__
    assert names == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(tvl_async, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from tvl_async import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(names)


def test_all_lists_every_public_name_of_the_package_init() -> None:
    bound = {n for n in _init_bindings() if not n.startswith("_")}
    assert bound == {n for n in tvl_async.__all__ if not n.startswith("_")}
    # at run time too: no public attribute that is not a submodule is left out
    public = {
        n
        for n, v in vars(tvl_async).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public <= set(tvl_async.__all__), public - set(tvl_async.__all__)
    assert set(tvl_async.__all__) >= DESIGN_NAMES


def test_implementation_modules_are_private() -> None:
    package = INIT.parent
    for path in package.iterdir():
        if path.name in ("__init__.py", "py.typed", "__pycache__", "cli") or path.suffix == ".pyc":
            continue
        assert path.name.startswith("_"), f"{path.name}: implementation modules are private"


def test_the_library_does_not_import_the_apps() -> None:
    code = (
        "import sys, tvl_async; "
        "apps = sorted(m for m in sys.modules if m.startswith('tvl_async.cli')); "
        "assert not apps, apps; import tvl_async.cli"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_layout_table_lists_every_module_once() -> None:
    """README's "Where each stage lives" (the newcomer's map) names every module of the
    library (``_name.py``, ``_backends/name.py``), every module and subpackage of ``cli/`` and
    the modules of ``cli/play/`` exactly once, and nothing that does not exist."""
    import re

    root = INIT.parent
    text = (root.parent / "README.md").read_text(encoding="utf-8")
    start = text.index("## Where each stage lives")
    table = text[start : text.index("\n## ", start + 1)]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    named = re.findall(r"`([\w/]+(?:\.py|/))`", "\n".join(rows))
    expected = [p.name for p in root.glob("_*.py") if p.name != "__init__.py"]
    expected += [p.name for p in (root / "_backends").glob("*.py") if p.name != "__init__.py"]
    expected += [p.name for p in (root / "cli").glob("*.py") if p.name != "__init__.py"]
    expected += [f"{p.name}/" for p in (root / "cli").iterdir() if (p / "__init__.py").exists()]
    expected += [p.name for p in (root / "cli" / "play").glob("*.py") if p.name != "__init__.py"]
    expected += ["cli/", "_backends/"]
    missing = sorted(n for n in expected if named.count(n) == 0)
    twice = sorted({n for n in expected if named.count(n) > 1})
    unknown = sorted(set(named) - set(expected))
    assert not missing and not twice and not unknown, (missing, twice, unknown)

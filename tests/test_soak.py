"""A short soak (``tools/soak.py``): memory, open files and threads stay flat across epochs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parents[1] / "tools" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tvl_soak_tool", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def soak_files(soak: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return soak.make_files(tmp_path_factory.mktemp("soak"), 20, 5, 24, 64, 48)  # type: ignore[no-any-return]


def test_soak_files_are_hard_links(soak_files: list[Path]) -> None:
    assert len(soak_files) == 20
    assert len({p.stat().st_ino for p in soak_files}) == 5


@pytest.mark.timeout(180)
def test_short_soak_per_epoch_is_flat(
    soak: ModuleType, soak_files: list[Path], no_new_threads: None
) -> None:
    """Six epochs, a new Prefetcher each: after every epoch the open files and threads are back
    at the baseline, and RSS (after returning freed heap pages) stays within a tolerance."""
    records = soak.run_soak(soak_files, epochs=6, batch_size=8, decode_threads=2, check=3)
    base, epochs = records[0], records[1:]
    assert [r.epoch for r in epochs] == list(range(6))
    assert {r.samples for r in epochs} == {sum(24 + k % 5 % 3 - 3 for k in range(20))}
    assert all(r.skipped == 0 for r in epochs)
    assert all(r.open_files == base.open_files for r in epochs), [r.open_files for r in records]
    assert all(r.threads == base.threads for r in epochs), [r.threads for r in records]
    growth = epochs[-1].rss_mib - epochs[1].rss_mib  # after a warm-up epoch
    assert growth < 24, [r.rss_mib for r in records]
    assert soak.verdict(records, warmup=2, max_rss_growth=24) == []


@pytest.mark.timeout(180)
def test_short_soak_single_prefetcher_is_flat(
    soak: ModuleType, soak_files: list[Path], no_new_threads: None
) -> None:
    """One Prefetcher over six epochs: the same files and threads at every epoch boundary, all
    released once it closed."""
    records = soak.run_soak(
        soak_files, epochs=6, mode="single", batch_size=8, decode_threads=2, check=3
    )
    base, closed = records[0], records[-1]
    running = records[1:-2]  # boundaries while it runs (the last epoch ends at close)
    assert len({r.threads for r in running}) == 1, records
    # Open containers are cached per decode thread (16 at most each): bounded, not growing.
    assert max(r.open_files for r in running) <= base.open_files + 2 * 16 + 8, records
    assert closed.open_files == base.open_files and closed.threads == base.threads
    assert closed.rss_mib - records[2].rss_mib < 24, [r.rss_mib for r in records]
    assert soak.verdict(records, warmup=2, max_rss_growth=24, mode="single") == []


def test_soak_command_line(
    soak: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = soak.main(
        [
            "--files",
            "6",
            "--unique",
            "2",
            "--frames",
            "12",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--decode-threads",
            "1",
            "--dir",
            str(tmp_path),
            "--json",
            str(tmp_path / "records.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "6 files in" in out
    assert out.count("\nepoch ") == 3  # the baseline and two epochs
    assert "OK: memory, open files and threads stayed flat" in out
    assert (tmp_path / "records.json").exists()

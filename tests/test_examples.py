"""Every example runs (fast settings) and prints what it promises, so none of them rots.

Each example runs as a subprocess, the way a user starts it. The index cache (and so the videos
the examples write for themselves) lives in this session's temporary folder (conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvl_async.cli.synthetic import frame_index_of, write_video

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import extract_frames  # noqa: E402


def run_example(name: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"{name} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


def test_async_dataloading() -> None:
    out = run_example("async_dataloading.py", "--quick")
    assert re.search(r"inline : decode +[\d.]+ s \+ other work", out), out
    assert re.search(
        r"decoding overlapped with the other work: [\d.]+ s of [\d.]+ s \(\d+%\)", out
    ), out
    assert "heartbeat coroutine:" in out
    assert "same clips in the same order as inline: yes" in out
    assert "frame check: 20/20 clips end on the frame asked for" in out


def test_train_superres_both_loaders() -> None:
    out = run_example("train_superres.py", "--quick")
    assert "4 iterations, batch 2, 5 frames in (24, 32) -> 1 out (48, 64), fp32" in out, out
    for label in ("tvl_async (mp4)", "DataLoader+PNG (2 wkr)"):
        line = next(x for x in out.splitlines() if x.startswith(label))
        data_ms, step_ms, cpu_load = (float(v) for v in line[len(label) :].split()[:3])
        assert data_ms >= 0 and step_ms > 0 and cpu_load > 0
    assert "data ms/iter" in out and "CPU load" in out and "disk MB" in out


def test_train_superres_bf16_three_frames() -> None:
    out = run_example(
        "train_superres.py",
        "--quick",
        "--loader",
        "tvl",
        "--dtype",
        "bf16",
        "--frames",
        "3",
        "--iters",
        "2",
    )
    assert "2 iterations, batch 2, 3 frames in (24, 32) -> 1 out (48, 64), bf16" in out, out
    assert "tvl_async (mp4)" in out


def test_video_data_exercise() -> None:
    out = run_example("video_data_exercise.py", "--quick")
    for q in ("(1)", "(2)", "(3)", "(4)"):
        assert any(
            line.startswith(q) and line.rstrip().endswith("yes") for line in out.splitlines()
        ), f"row {q} missing or inexact:\n{out}"
    assert "sequential reading" in out and "gop_shuffle" in out and "chunked" in out
    assert "(4.1)" in out and "i.i.d. (expected)" in out
    assert "(5) GPU decoding" in out and "CUDA_ERROR_NOT_INITIALIZED" in out
    assert "(6) host/GPU copies" in out
    # the samplers' bias: uniform is i.i.d.-like, chunked clusters GOPs far more
    ratios = {
        line.split()[0]: float(line.split()[-3])
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("uniform", "chunked")
    }
    assert ratios["uniform"] < 2 < ratios["chunked"], ratios


def test_compare_readers() -> None:
    out = run_example("compare_readers.py", "--quick")
    lines = out.splitlines()
    for reader in ("tvl seek", "tvl stream", "tvl auto", "pyav"):
        rows = [x for x in lines if x.startswith(reader + " ")]
        assert len(rows) == 4, (reader, out)  # 2 requests x 2 layouts
        assert all(x.rstrip().endswith("yes") and "±" in x for x in rows), rows
    for optional in ("torchcodec", "decord"):
        rows = [x for x in lines if x.startswith(optional)]
        assert rows and (
            "not installed" in rows[0]
            or "unusable" in rows[0]
            or all(x.rstrip().endswith("yes") for x in rows)
        ), rows


def test_video_player_help() -> None:
    """The player itself runs under Xvfb in test_player.py; here only its entry point."""
    out = run_example("video_player.py", "--help", timeout=60)
    assert "--frame" in out and "--speed" in out


# ---------------------------------------------------------------------------------- tools


def test_png_writer_and_reader_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (48, 64, 3), (3, 4, 4), (1, 1, 1)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        back = extract_frames.decode_png(extract_frames.encode_png(a))
        assert np.array_equal(back.reshape(a.shape), a), shape
    with pytest.raises(ValueError, match="not a PNG"):
        extract_frames.decode_png(b"GIF89a")


def test_png_reader_sub_filter() -> None:
    """Rows with the Sub filter (as other writers make them) decode too."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    rows = a.reshape(4, 15).astype(np.int16)
    sub = rows.copy()
    sub[:, 3:] = rows[:, 3:] - rows[:, :-3]
    raw = np.concatenate([np.ones((4, 1), np.int16), sub], axis=1) % 256
    png = (
        extract_frames.PNG_SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw.astype(np.uint8).tobytes()))
        + chunk(b"IEND", b"")
    )
    assert np.array_equal(extract_frames.decode_png(png), a)


def test_png_files_are_written_and_read_by_pillow() -> None:
    """The PNG baseline reads and writes with Pillow (C speed), not a Python loop per row."""
    import inspect
    import io

    from PIL import Image

    a = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = extract_frames.encode_png(a)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == (64, 48) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), a)
    source = inspect.getsource(extract_frames)
    assert "import zlib" not in source and "for y in range" not in source


def test_extract_frames_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "v" / "clip.mp4", n_frames=12, width=64, height=48, gop=6)
    assert extract_frames.main([str(tmp_path / "v"), "-o", str(tmp_path / "png")]) == 0
    assert "1 videos, 12 PNG files" in capsys.readouterr().out
    files = sorted((tmp_path / "png" / "clip").glob("frame_*.png"))
    assert len(files) == 12
    for i in (0, 5, 11):
        img = extract_frames.read_png(files[i])
        assert img.shape == (48, 64, 3)
        assert frame_index_of(img, layout="hwc") == i
    # a second run skips the finished video; a missing input is one line, exit code 2
    assert extract_frames.extract(video, tmp_path / "png")[0] == 12
    assert extract_frames.main([str(tmp_path / "nope"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err


# ---------------------------------------------------------------------------------- public API


def test_planner_lead_fraction_comes_from_the_environment() -> None:
    """tools/planner_lead.py turns the planner's lead through ``TVL_ASYNC_LEAD_FRACTION`` (read
    at import, one child process per value), not by patching a private module."""
    code = "import tvl_async._planning as p; print(p.LEAD_FRACTION)"
    run = [sys.executable, "-c", code]
    env = {k: v for k, v in os.environ.items() if k != "TVL_ASYNC_LEAD_FRACTION"}
    assert subprocess.run(run, env=env, capture_output=True, text=True).stdout.strip() == "8"
    got = subprocess.run(
        run, env={**env, "TVL_ASYNC_LEAD_FRACTION": "32"}, capture_output=True, text=True
    )
    assert got.stdout.strip() == "32"
    bad = subprocess.run(
        run, env={**env, "TVL_ASYNC_LEAD_FRACTION": "0"}, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "Invalid TVL_ASYNC_LEAD_FRACTION ('0'). Supported values are integers >= 1" in bad.stderr


def _tvl_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every ``tvl_async`` import in ``path`` (name None for a
    plain ``import``)."""
    import ast

    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [
                (node.lineno, a.name, None)
                for a in node.names
                if a.name.split(".")[0] == "tvl_async"
            ]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "tvl_async"
        ):
            out += [(node.lineno, node.module, a.name) for a in node.names]
    return out


def test_examples_and_tools_import_only_public_names() -> None:
    """No module path with a private part (``tvl_async._x``, ``tvl_async.cli._x``), and a name
    taken from ``tvl_async`` or ``tvl_async.cli`` is in that package's ``__all__``."""
    import importlib
    import importlib.util

    files = sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    checked = 0
    bad = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for line, module, name in _tvl_imports(path):
            checked += 1
            where = f"{rel}:{line}: {module}" + (f".{name}" if name else "")
            if any(part.startswith("_") for part in module.split(".")):
                bad.append(where)
                continue
            if name is None:
                continue
            package = importlib.import_module(module)
            public = getattr(package, "__all__", None)
            is_module = (
                importlib.util.find_spec(f"{module}.{name}") is not None
                if hasattr(package, "__path__")
                else False
            )
            if name.startswith("_") or (
                public is not None and name not in public and not is_module
            ):
                bad.append(where)
    assert checked > 10  # the scan found the imports
    assert not bad, "private names imported:\n" + "\n".join(bad)

"""The tvl-async command: every subcommand, --help everywhere, one-line errors with exit code 2,
progress bars (tqdm) on the long steps."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tvl_async import VideoLoader, load_index
from tvl_async.cli import demo
from tvl_async.cli import main as cli
from tvl_async.cli.synthetic import frame_index_of, make_video_set, write_video


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small videos: two plain, one with audio in a subfolder, one at a variable rate."""
    root = tmp_path_factory.mktemp("cli")
    make_video_set(root / "set", n_files=2, n_frames=24, width=64, height=48, gop=8)
    write_video(
        root / "set" / "sub" / "audio.mp4",
        n_frames=20,
        width=64,
        height=48,
        gop=10,
        audio_first=True,
    )
    pts, t = [], 0
    for i in range(30):
        pts.append(t)
        t += 20 + (i * 37) % 51
    write_video(
        root / "set" / "vfr.mkv",
        n_frames=30,
        width=64,
        height=48,
        gop=10,
        time_base=Fraction(1, 1000),
        pts=pts,
    )
    (root / "notavideo.mp4").write_bytes(b"hello, not a video")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


# ---------------------------------------------------------------------------------- help


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name in ("demo", "probe", "index", "transcode", "play"):
        assert name in subcommands()
        assert name in out


@pytest.mark.parametrize("name", subcommands())
def test_help_of_each_command(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run_cli(capsys, name, "--help")
    assert code == 0
    assert f"usage: tvl-async {name}" in out


# ---------------------------------------------------------------------------------- errors


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(
        *run_cli(capsys, "demo", "--batch-size", "0")[::2], "--batch-size", ">= 1"
    )
    assert_one_line_error(*run_cli(capsys, "nosuchcommand")[::2], "invalid choice")
    assert_one_line_error(*run_cli(capsys, "transcode", "x.mp4")[::2], "--output")
    assert_one_line_error(*run_cli(capsys)[::2], "required")


def test_runtime_errors_are_one_line(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    assert_one_line_error(
        *run_cli(capsys, "probe", str(folder / "missing.mp4"))[::2],
        "tvl-async probe: error:",
        "missing.mp4",
    )
    assert_one_line_error(
        *run_cli(capsys, "probe", str(folder / "notavideo.mp4"))[::2], "notavideo.mp4"
    )
    # a pydantic validation error (several lines in its own words) folds into one line
    assert_one_line_error(
        *run_cli(capsys, "demo", str(folder / "set"), "--device", "tpu", "--quiet")[::2], "device"
    )
    assert_one_line_error(*run_cli(capsys, "play", str(folder / "missing.mp4"))[::2], "missing.mp4")
    assert_one_line_error(
        *run_cli(capsys, "play", str(folder / "notavideo.mp4"))[::2],
        "tvl-async play: error:",
        "notavideo.mp4",
    )


def test_installed_entry_point_error(folder: Path) -> None:
    """The real command in a fresh process: exit code 2, one line, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "tvl_async.cli.main", "index", str(folder / "nothing-here")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(r.returncode, r.stderr, "tvl-async index: error:", "nothing-here")
    assert r.stdout == ""


# ---------------------------------------------------------------------------------- commands


def test_demo_on_a_folder(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, _ = run_cli(
        capsys,
        "demo",
        str(folder / "set"),
        "--seq-len",
        "3",
        "--batch-size",
        "4",
        "--sampling",
        "chunked",
        "--quiet",
    )
    assert code == 0, out
    assert "4 files" in out and "sampling chunked" in out
    assert "throughput:" in out and "frames/s" in out


def test_demo_writes_and_checks_its_own_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # demo writes 8 clips of 120 frames where none exist; smaller ones written here first
    # (make_video_set keeps existing files) keep the test fast
    make_video_set(tmp_path, n_files=8, n_frames=16, width=64, height=48, gop=8)
    monkeypatch.setattr(demo, "default_demo_dir", lambda: tmp_path)
    code, out, _ = run_cli(capsys, "demo", "--batch-size", "4", "--quiet")
    assert code == 0, out
    assert "frame check: 416/416 frames are exactly the frame asked for" in out


def test_probe(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, _ = run_cli(capsys, "probe", str(folder / "set" / "sub" / "audio.mp4"))
    assert code == 0
    assert "audio" in out and "video:h264" in out
    assert "frames: 20" in out and "GOPs: 2" in out
    assert "random access:" in out


def test_index(capsys: pytest.CaptureFixture[str], folder: Path) -> None:
    code, out, _ = run_cli(capsys, "index", str(folder / "set"), "--quiet")
    assert code == 0
    assert out.startswith("indexed 4 files, 98 frames")


def test_transcode(capsys: pytest.CaptureFixture[str], folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run_cli(
        capsys,
        "transcode",
        str(folder / "set"),
        "-o",
        str(out_dir),
        "--gop",
        "4",
        "--width",
        "32",
        "--quiet",
    )
    assert code == 0, err
    assert "transcoded 4 files (98 frames" in out
    src = folder / "set"
    for rel in ("clip_000.mp4", "sub/audio.mp4", "vfr.mkv"):
        dst = (out_dir / rel).with_suffix(".mp4")
        a, b = load_index(src / rel), load_index(dst)
        assert b.n_frames == a.n_frames
        assert (b.width, b.height) == (32, 24)
        assert np.all(b.gop_lengths()[:-1] == 4)  # a keyframe every 4 frames
        np.testing.assert_allclose(b.times - b.times[0], a.times - a.times[0], atol=1e-3)
        with av.open(str(dst)) as c:
            assert [s.type for s in c.streams] == ["video"]  # audio dropped
        with VideoLoader(dst) as v:
            for i in (0, 5, b.n_frames - 1):
                assert frame_index_of(v.select_frame(i)) == i
    # a second run skips what exists; a broken input is one line and exit code 2
    code, out, _ = run_cli(
        capsys, "transcode", str(src / "clip_000.mp4"), "-o", str(out_dir), "--quiet"
    )
    assert code == 0 and "skipped" in out
    code, out, err = run_cli(
        capsys, "transcode", str(folder / "notavideo.mp4"), "-o", str(out_dir), "--quiet"
    )
    assert_one_line_error(code, err, "notavideo.mp4")
    assert not list(out_dir.glob(".*part*")), "no half-written file is left behind"
    code, _, err = run_cli(capsys, "transcode", str(src / "clip_000.mp4"), "-o", str(src))
    assert_one_line_error(code, err, "overwrite its input")
    code, _, err = run_cli(
        capsys,
        "transcode",
        str(src / "clip_000.mp4"),
        "-o",
        str(out_dir),
        "--codec",
        "vp9",
        "--format",
        "mov",
    )
    assert_one_line_error(code, err, "Invalid --codec ('vp9') for --format mov. Supported")


def test_play_without_display(
    capsys: pytest.CaptureFixture[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = run_cli(capsys, "play", str(folder / "set" / "clip_000.mp4"))
    assert_one_line_error(code, err, "no display")


@pytest.mark.skipif(
    shutil.which("xvfb-run") is None,
    reason="xvfb-run is not installed (apt-get install xvfb; .ci/run does this)",
)
def test_play_opens_the_player(folder: Path) -> None:
    """``tvl-async play`` under a virtual display plays the file to its end and exits."""
    clip = folder / "set" / "clip_001.mp4"
    r = subprocess.run(
        [
            "xvfb-run",
            "-a",
            sys.executable,
            "-m",
            "tvl_async.cli.main",
            "play",
            str(clip),
            "--frame",
            "20",
            "--play",
            "--speed",
            "2x",
            "--exit-at-end",
            "--report",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    shown = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("shown")]
    assert shown == [20, 21, 22, 23]


# ---------------------------------------------------------------------------------- audit fixes


@pytest.mark.timeout(60)
def test_bad_options_fail_before_any_work(
    capsys: pytest.CaptureFixture[str], folder: Path, tmp_path: Path
) -> None:
    """Settings that would fail on every file (or only after minutes of encoding) are one line
    and exit code 2 at once, naming the option."""
    clip = str(folder / "set" / "clip_000.mp4")
    out = str(tmp_path / "out")
    for extra, needle in (
        (["--crf", "-5"], "Invalid --crf (-5) for libx264. Supported values are 0..51."),
        (["--crf", "99999"], "Invalid --crf (99999)"),
        (["--preset", "nonsense"], "Invalid --preset ('nonsense') for libx264. Supported"),
        (["--pix-fmt", "foo"], "Invalid --pix-fmt ('foo')"),
        (["--codec", "mpeg4", "--bframes", "2", "--gop", "16"], "multiples of bframes + 1 = 3"),
    ):
        code, _, err = run_cli(capsys, "transcode", clip, "-o", out, "--quiet", *extra)
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()
    for extra, needle in (
        (["--lookaheads", "abc"], "--lookaheads: Invalid value ('abc'). Supported values are"),
        (["--chunks", "x"], "--chunks: Invalid value ('x')"),
        (["--seconds", "-1"], "--seconds: Invalid value ('-1'). Supported values are seconds > 0."),
        (["--size", "foo"], "--size"),
    ):
        code, _, err = run_cli(capsys, "bench", "--quiet", *extra)
        assert_one_line_error(code, err, needle)
    for device in ("foo", "cuda:7"):  # checked before a window opens (it would never close)
        code, _, err = run_cli(capsys, "play", clip, "--device", device)
        assert_one_line_error(code, err, f"Invalid --device ('{device}'). Supported values are")


def test_index_with_the_cache_off(
    capsys: pytest.CaptureFixture[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TVL_ASYNC_CACHE", "off")
    code, out, _ = run_cli(capsys, "index", str(folder / "set"), "--quiet")
    assert code == 0 and "cache: off (TVL_ASYNC_CACHE=off): nothing was stored" in out


def test_warnings_are_one_line_each(folder: Path) -> None:
    """In a fresh process (pytest captures warnings itself): every file is too short, so a
    one-line warning about the skipped files comes before the one-line error."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tvl_async.cli.main",
            "demo",
            str(folder / "set"),
            "--seq-len",
            "31",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith("tvl-async demo: error:"), r.stderr
    assert lines[:-1] and all(x.startswith("tvl-async demo: warning:") for x in lines[:-1]), (
        r.stderr
    )


def test_demo_on_files_of_several_sizes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_video(tmp_path / "small.mp4", n_frames=12, width=64, height=48, gop=6)
    write_video(tmp_path / "big.mp4", n_frames=12, width=96, height=72, gop=6)
    code, _, err = run_cli(capsys, "demo", str(tmp_path), "--quiet")
    assert_one_line_error(code, err, "differ in frame size", "pass --size WxH")
    code, out, err = run_cli(capsys, "demo", str(tmp_path), "--size", "32x24", "--quiet")
    assert code == 0, err
    assert "2 files" in out and "throughput:" in out


# ---------------------------------------------------------------------------------- progress

#: What a tqdm bar writes (even when stderr is not a terminal): "... | 3/4 [00:01<00:00, 2.9it/s]"
TQDM_BAR = re.compile(r"\|\s*\d+/\d+ \[[\d:]+<[\d:?]+, +[\d.?]+ *(s/)?[a-z]*(/s)?\]")


def run_command(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tvl-async ARGV`` in a fresh process, stderr a pipe (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "tvl_async.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bar_units(stderr: str) -> set[str]:
    """The units of the tqdm bars found in ``stderr`` (``batch``, ``file``, ``frame``...)."""
    return {
        m.group(0)
        .rsplit(",", 1)[1]
        .strip(" ]")
        .lstrip("0123456789.?")
        .removesuffix("/s")
        .removeprefix("s/")
        for m in TQDM_BAR.finditer(stderr)
    }


@pytest.mark.timeout(180)
def test_long_steps_show_progress_bars(folder: Path, tmp_path: Path) -> None:
    """demo, index and transcode draw tqdm bars on stderr (tqdm's defaults: also when stderr
    is not a terminal); --quiet draws none, and the library itself draws none."""
    r = run_command("demo", str(folder / "set"), "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    assert "batch" in bar_units(r.stderr), r.stderr
    assert re.search(r"batches: +\d+%\|", r.stderr), r.stderr  # desc, percentage, bar
    r = run_command("index", str(folder / "set"))
    assert r.returncode == 0, r.stderr
    assert "file" in bar_units(r.stderr) and "4/4" in r.stderr, r.stderr
    r = run_command(
        "transcode", str(folder / "set" / "clip_000.mp4"), "-o", str(tmp_path), "--width", "32"
    )
    assert r.returncode == 0, r.stderr
    assert "frame" in bar_units(r.stderr) and "clip_000.mp4" in r.stderr, r.stderr
    for argv in (
        ("demo", str(folder / "set"), "--batch-size", "4", "--quiet"),
        ("index", str(folder / "set"), "--quiet"),
    ):
        r = run_command(*argv)
        assert r.returncode == 0 and not TQDM_BAR.search(r.stderr), r.stderr


def test_the_library_draws_no_progress_bar(folder: Path) -> None:
    code = (
        "import tvl_async as tvl\n"
        f"with tvl.Prefetcher({str(folder / 'set')!r}, batch_size=4) as it:\n"
        "    n = sum(1 for _ in it)\n"
        "print(n)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and int(r.stdout) > 0, r.stderr
    assert not TQDM_BAR.search(r.stderr) and "it/s" not in r.stderr, r.stderr


def test_the_apps_write_bad_values_in_the_library_form() -> None:
    """``tvl_async.cli._common.invalid`` (the applications use only the public API) writes the
    same text as the library's ``tvl_async._checks.invalid_message``."""
    from tvl_async._checks import invalid_message
    from tvl_async.cli._common import invalid

    for args, context in ((("--crf", -5, "0..51"), "for libx264"), (("size", "foo", "WxH"), "")):
        assert invalid(*args, context=context) == invalid_message(*args, context=context)


def test_probe_and_index_over_http(
    capsys: pytest.CaptureFixture[str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """URLs (a file, a folder URL ending in /) are probed and indexed by byte ranges."""
    pytest.importorskip("RangeHTTPServer")
    from servers import RangeServer

    monkeypatch.setenv("TVL_ASYNC_CACHE", "off")
    server = RangeServer(folder / "set")
    try:
        url = server.url("sub/audio.mp4")
        code, out, _ = run_cli(capsys, "probe", url, "--storage-options", "{}")
        assert code == 0, out
        assert out.startswith(url) and "audio" in out and "video:h264" in out
        assert "frames: 20" in out and "GOPs: 2" in out
        code, out, _ = run_cli(
            capsys, "index", server.url("sub/"), server.url("vfr.mkv"), "--quiet"
        )
        assert code == 0 and out.startswith("indexed 2 files, 50 frames"), (out, _)
        videos = [r for r in server.requests if r != "whole"]  # "whole": the folder's page
        assert videos and all(r.startswith("bytes=") for r in videos)
        code, _, err = run_cli(capsys, "probe", server.url("nope.mp4"))
        assert_one_line_error(code, err, server.url("nope.mp4"))
    finally:
        server.stop()


def test_bad_storage_options_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("probe", "index", "play"):
        code, _, err = run_cli(capsys, cmd, "s3://b/x.mp4", "--storage-options", "[1]")
        assert_one_line_error(code, err, "--storage-options: invalid value '[1]'")
    code, _, err = run_cli(capsys, "probe", "s3://b/x.mp4", "--storage-options", "{nope")
    assert_one_line_error(code, err, "--storage-options: invalid JSON '{nope'")
    code, _, err = run_cli(capsys, "bench", "--s3", "--remote", "s3://b/set/", "--quiet")
    assert_one_line_error(code, err, "--s3 and --remote s3://b/set/ exclude each other")

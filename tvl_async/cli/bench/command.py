"""``tvl-async bench`` (and ``python -m tvl_async.cli.bench``): options, the run, the outputs.

Every option is checked before any work (``--plot`` without matplotlib included); then
:func:`~tvl_async.cli.bench.runner.run_bench` measures, the table goes to stdout and the report
to ``--json`` and ``--plot``. Blocks in the calling thread for the whole run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tvl_async.cli._common import invalid, json_object, parse_size, positive_int
from tvl_async.cli.bench.configs import DEFAULT_CHUNKS, DEFAULT_LOOKAHEADS, REFERENCE


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "bench",
        help="measure tvl_async against a DataLoader + PyAV baseline",
        description="tvl-async bench: tvl_async against a DataLoader + PyAV-seek baseline and "
        "the sequential ceiling, on one machine, in one run. See docs/benchmarks.md.",
    )
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(invalid("value", text, "seconds > 0"))
    return value


def _lookahead_list(text: str) -> str:
    """``--lookaheads``: comma-separated integers >= 1 or ``default``; checked before any work."""
    for item in text.split(","):
        if item.strip() != "default":
            positive_int(item.strip())
    return text


def _int_list(text: str) -> str:
    """``--chunks``: comma-separated integers >= 1 (empty: none)."""
    for item in text.split(","):
        if item.strip():
            positive_int(item.strip())
    return text


def _size(text: str) -> str:
    try:
        parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The bench options, shared by ``tvl-async bench`` and ``python -m tvl_async.cli.bench``."""
    p.add_argument(
        "folder",
        nargs="?",
        help="videos to use (default: the reference set, written into --cache-dir on first use)",
    )
    r = REFERENCE
    p.add_argument(
        "--files",
        type=positive_int,
        default=r.files,
        help=f"files in the generated set (default {r.files})",
    )
    p.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=r.seconds,
        help=f"seconds per generated file (default {r.seconds:g})",
    )
    p.add_argument(
        "--size",
        type=_size,
        default=f"{r.width}x{r.height}",
        help=f"generated frame size WxH (default {r.width}x{r.height})",
    )
    p.add_argument("--fps", type=positive_int, default=r.fps, help=f"(default {r.fps})")
    p.add_argument(
        "--gop",
        type=positive_int,
        default=r.gop,
        help=f"keyframe interval of the generated set (default {r.gop})",
    )
    p.add_argument(
        "--cache-dir", help="where to write the generated set (default <index cache>/bench-videos)"
    )
    p.add_argument(
        "--batches",
        type=positive_int,
        default=4,
        help="timed batches per configuration, after the warm-up (default 4; "
        "tvl_async times at least one lookahead window unless --warmup is given)",
    )
    p.add_argument(
        "--tvl-batches",
        type=positive_int,
        default=None,
        help="timed batches of tvl_async's windowed configurations and the ceiling (default: "
        "--batches, or one lookahead window when longer; a window of tens of thousands of "
        "samples takes many minutes)",
    )
    p.add_argument(
        "--past-window",
        action="store_true",
        help="tvl_async's windowed configurations warm up for one whole lookahead window (the "
        "exact order's cold start) and are timed after it (the exact order comes in waves of "
        "one window: time at least a window, i.e. leave --tvl-batches out)",
    )
    p.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help="warm-up batches (default: 1, or one per DataLoader worker)",
    )
    p.add_argument("--batch-size", type=positive_int, default=128, help="(default 128)")
    p.add_argument("--crop", type=positive_int, default=224, help="output size (default 224)")
    p.add_argument(
        "--lookaheads",
        type=_lookahead_list,
        default=",".join(DEFAULT_LOOKAHEADS),
        help="uniform configurations ('default' = the library's choice; "
        f"default {','.join(DEFAULT_LOOKAHEADS)})",
    )
    p.add_argument(
        "--chunks",
        type=_int_list,
        default=",".join(map(str, DEFAULT_CHUNKS)),
        help="chunked configurations (default 4,8,16)",
    )
    p.add_argument("--only", help="comma-separated name prefixes of the configurations to run")
    p.add_argument("--no-slow", action="store_true", help="skip the slow-consumer run")
    p.add_argument(
        "--epoch-files",
        type=int,
        default=40,
        help="whole-epoch runs (uniform, gop_shuffle, ceiling) over the first N files "
        "(default 40; 0: none)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=2, help="baseline DataLoader workers (default 2)"
    )
    p.add_argument(
        "--decode-threads",
        type=positive_int,
        default=None,
        help="tvl_async and ceiling decode threads (default: the library's)",
    )
    p.add_argument(
        "--ffmpeg-threads",
        type=positive_int,
        default=None,
        help="FFmpeg threads per decode thread (default: the library's)",
    )
    p.add_argument(
        "--memory-budget",
        type=positive_int,
        default=None,
        help="tvl_async memory_budget in bytes (default: the library's)",
    )
    p.add_argument(
        "--s3",
        action="store_true",
        help="also read the first --remote-files files from a local S3 server (SeaweedFS on "
        "127.0.0.1, started and stopped here; needs the s3 extra): images/s and bytes read "
        "per sample next to the same files read from local disk",
    )
    p.add_argument(
        "--remote",
        metavar="URL",
        help="like --s3, from an existing store: a folder URL holding the files by the same "
        "names (s3://bucket/set/, https://host/set/)",
    )
    p.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="fsspec storage_options for --remote (credentials, endpoint_url...)",
    )
    p.add_argument(
        "--remote-files",
        type=positive_int,
        default=8,
        help="files in the local/remote pair of runs (default 8)",
    )
    p.add_argument("--device", default="cpu", help="where batches end up (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the full report here")
    p.add_argument(
        "--plot", help="write a PNG bar chart of images/s here (needs matplotlib: the bench extra)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages")


def cmd_bench(args: argparse.Namespace) -> int:
    """``tvl-async bench``: run, print the table, write --json/--plot; 1 if a run failed."""
    from tvl_async.cli.bench.report import check_plotting, format_table, write_plot
    from tvl_async.cli.bench.runner import run_bench

    if args.plot:
        check_plotting()  # before minutes of measuring
    if args.s3 and args.remote:
        raise ValueError(f"--s3 and --remote {args.remote} exclude each other: choose one")
    if args.storage_options is not None and not args.remote:
        raise ValueError("--storage-options is for --remote URL (--s3 sets its own)")
    if not hasattr(args, "argv"):
        args.argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []
    report = run_bench(args)
    print(format_table(report))
    m = report["machine"]
    print(
        f"\n{m['cpu_count']} cores ({m['cpu']}), load before/after each run in the JSON; "
        f"{report['videos']['n_files']} files, {report['videos']['n_frames']} frames"
    )
    pair = [r for r in report["results"] if r.get("source") and "error" not in r]
    for r in pair:
        if r["source"] == "remote" and r.get("gop_bytes_per_sample"):
            print(
                f"{r['name']}: bytes read / GOP bytes decoded per sample "
                f"{r['bytes_read_per_sample'] / r['gop_bytes_per_sample']:.2f} "
                f"({report['remote']['where']})"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        write_plot(report, args.plot)
    failed = [r["name"] for r in report["results"] if "error" in r]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tvl_async.cli.bench [options]`` (same options as ``tvl-async bench``)."""
    from tvl_async.cli._common import OneLineParser, exit_on_error

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineParser(prog="python -m tvl_async.cli.bench")
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    return exit_on_error(lambda: cmd_bench(args), parser.prog)

"""The tvl-async command: demo, probe, index, transcode, play and bench.

``tvl-async demo`` is the main job: a Prefetcher over your folder, or over a small set of videos
it writes itself, with a progress bar and the throughput at the end. ``probe`` and ``index``
inspect files; ``transcode`` re-encodes videos for training (NVVL's data preparation);
``play`` opens the Tk player; ``bench`` measures throughput. Each command lives in its own
module of :mod:`tvl_async.cli`; ``--help`` works on every command.

Errors (bad options included) are printed as one line on stderr with exit code 2, never a
traceback (``tvl-async --debug CMD`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any, cast

from tvl_async.cli import demo, probe, transcode
from tvl_async.cli._common import OneLineParser, error_line
from tvl_async.cli.bench import command as bench
from tvl_async.cli.play import command as play


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = OneLineParser(
        prog="tvl-async",
        description=__doc__.splitlines()[0],
        epilog="tvl-async COMMAND --help shows the options of a command.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
    )  # its parsers are OneLineParser too
    demo.add_parser(sub)
    probe.add_parsers(sub)
    transcode.add_parser(sub)
    play.add_parser(sub)
    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tvl-async``; returns the exit code (2 for a clear error). Warnings are
    printed as one line each (``tvl-async CMD: warning: ...``). Blocks while the command runs."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def one_line(  # showwarning's signature: only the message is used
        message: Warning | str,
        category: type[Warning],  # noqa: ARG001
        filename: str,  # noqa: ARG001
        lineno: int,  # noqa: ARG001
        file: Any = None,  # noqa: ARG001
        line: str | None = None,  # noqa: ARG001
    ) -> None:
        text = " ".join(str(message).split())
        print(f"tvl-async {args.command}: warning: {text}", file=sys.stderr, flush=True)

    shown, warnings.showwarning = warnings.showwarning, one_line
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("tvl-async: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"tvl-async {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())

"""``tvl-async play`` and examples/video_player.py: options, checks, and the Tk main loop.

Every option is checked before a window opens (a bad file, device or backend would otherwise
only fail inside the window); then :class:`~tvl_async.cli.play.player.Player` runs in the Tk
main loop until the window closes. Main thread only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tvl_async.cli._common import error_line, invalid, json_object
from tvl_async.cli.play.worker import SPEEDS, backends, devices


def add_parser(sub: Any) -> None:
    """Register ``play`` on the ``tvl-async`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "play",
        help="open the Tk video player on a file",
        description="Play a video with VideoLoader in a Tk window: play/pause at "
        "the file's own frame rate, seek with the slider or the frame box, "
        "Left/Right step one frame, slow motion. Needs a display.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def build_parser(prog: str = "tvl-async play") -> argparse.ArgumentParser:
    """Options of the player (shared by ``tvl-async play`` and examples/video_player.py)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Play a video with tvl_async's "
        "VideoLoader (Tk; space play/pause, Left/Right step).",
    )
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the player's options to ``p``."""
    p.add_argument(
        "file",
        nargs="?",
        help="video file or fsspec URL (default: choose a file with a dialog)",
    )
    p.add_argument(
        "--storage-options",
        type=json_object,
        default=None,
        metavar="JSON",
        help="fsspec storage_options for a URL (credentials, endpoint_url...)",
    )
    p.add_argument("--frame", type=int, default=0, help="frame shown first (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "pyav", "nvdec"],
        help="decoder (default auto: nvdec on a GPU when available)",
    )
    p.add_argument("--speed", default="1x", choices=list(SPEEDS), help="playback speed")
    p.add_argument("--play", action="store_true", help="start playing at once")
    p.add_argument("--exit-at-end", action="store_true", help="close at the end of playback")
    p.add_argument(
        "--report",
        action="store_true",
        help="print 'shown INDEX TIME MONOTONIC X Y W H' per frame (test hook)",
    )
    p.add_argument(
        "--max-width",
        type=int,
        default=1280,
        help="show wider frames subsampled (pixels, default 1280)",
    )


def _check(args: argparse.Namespace) -> None:
    """Refuse what would only fail inside the window; raises ValueError naming the option."""
    if args.file is not None:
        from tvl_async import load_index

        # a missing or unreadable file is an error here, not in the window; the storage
        # options are remembered for the URL in this process (the decoding thread opens it)
        load_index(args.file, storage_options=getattr(args, "storage_options", None))
    if args.frame < 0:
        raise ValueError(invalid("--frame", args.frame, "integers >= 0"))
    if args.device not in devices():
        raise ValueError(invalid("--device", args.device, f"{', '.join(devices())} (here)"))
    if args.backend != "auto" and args.backend not in backends(args.device):
        allowed = f"auto, {', '.join(backends(args.device))} (here)"
        raise ValueError(invalid("--backend", args.backend, allowed, context=f"for {args.device}"))


def run(args: argparse.Namespace) -> int:
    """Open the window and run the Tk loop until it is closed (blocks; main thread)."""
    _check(args)
    try:
        import tkinter as tk
    except ImportError as e:
        raise RuntimeError(f"Tk is not available in this Python ({e}); install python3-tk") from e
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    ):
        raise RuntimeError(
            "no display: set DISPLAY, or run under a virtual one (xvfb-run tvl-async play FILE)"
        )
    try:
        root = tk.Tk()
    except tk.TclError as e:
        raise RuntimeError(f"cannot open a window: {e}") from e
    from tvl_async.cli.play.player import Player

    player = Player(
        root,
        args.file,
        start_frame=args.frame,
        device=args.device,
        backend=args.backend,
        speed=SPEEDS[args.speed],
        play=args.play,
        report=args.report,
        exit_at_end=args.exit_at_end,
        max_width=args.max_width,
    )
    try:
        root.mainloop()
    finally:
        player.close()
    return 0


def main(argv: Sequence[str] | None = None, *, demo_clip: Callable[[], str] | None = None) -> int:
    """Entry point of examples/video_player.py; errors are one line on stderr, exit code 2.
    With ``demo_clip``, ``--demo``/``--quick`` plays the file it returns. Blocks until the
    window closes."""
    parser = build_parser("video_player.py")
    if demo_clip is not None:
        parser.add_argument(
            "--demo",
            "--quick",
            action="store_true",
            help="play a small generated test clip (no FILE needed)",
        )
    args = parser.parse_args(argv)
    try:
        if getattr(args, "demo", False) and demo_clip is not None:
            args.file = demo_clip()
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(f"video_player.py: error: {error_line(e)}", file=sys.stderr)
        return 2

"""A Tk video player on tvl_async's VideoLoader (TVL's player).

    python examples/video_player.py [FILE] [--frame N] [--speed 0.5x] [--device cuda:0]

Open a file (argument or dialog), play/pause at the file's own frame rate (variable rates play as
recorded: each frame waits for its own timestamp), seek with the slider or the frame spinbox, step
one frame (Left/Right), slow motion (0.25x, 0.5x), choose the device/backend where more than one
is available. Decoding runs in a background thread; the Tk loop only polls a queue.

The player itself lives in ``tvl_async/cli/play/`` so that ``tvl-async play FILE`` opens the same
window from an installed package; this file is the example's entry point. Try it without a video
of your own: ``python examples/video_player.py --demo`` (or ``--quick``) writes a small test clip
first.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tvl_async.cli.play.command import main


def _demo_clip() -> str:
    from tvl_async.cli.synthetic import write_video

    path = Path(tempfile.gettempdir()) / "tvl_async_player_demo.mp4"
    if not path.exists():
        write_video(path, n_frames=250, width=320, height=240, gop=25, texture=0.5)
    return str(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], demo_clip=_demo_clip))

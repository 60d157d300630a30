"""The Tk player (examples/video_player.py, tvl_async/cli/play/) under a virtual X server.

The player runs as a subprocess on its own Xvfb display. Each test takes a screenshot of the real
X root window with ``xwd``, cuts out the image at the place the player reports, and reads the
frame index back from the pixels (``frame_index_of``). Skipped, with the reason, when Xvfb or
xwd is not installed (``.ci/run`` installs them with apt).
"""

from __future__ import annotations

import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tvl_async.cli.play.worker import PlaybackClock, frame_to_ppm
from tvl_async.cli.synthetic import frame_index_of, index_pattern, write_video

ROOT = Path(__file__).resolve().parents[1]
PLAYER = ROOT / "examples" / "video_player.py"

needs_x = pytest.mark.skipif(
    shutil.which("Xvfb") is None or shutil.which("xwd") is None,
    reason="Xvfb and xwd are not installed (apt-get install xvfb x11-apps; .ci/run does this)",
)


# ---------------------------------------------------------------------------------- helpers


def read_xwd(data: bytes) -> np.ndarray:
    """Decode an XWD screenshot (``xwd -root``: ZPixmap, TrueColor, 24/32 bpp) to [H, W, 3]."""

    def be(k: int) -> int:  # header field k: a big-endian uint32
        return int.from_bytes(data[4 * k : 4 * k + 4], "big")

    header_size, version, pixmap_format = be(0), be(1), be(2)
    assert version == 7 and pixmap_format == 2, "not a ZPixmap XWD file"
    width, height, byte_order, bpp, bytes_per_line = be(4), be(5), be(7), be(11), be(12)
    masks = be(14), be(15), be(16)
    ncolors = be(19)
    assert bpp in (24, 32), f"unsupported XWD: {bpp} bits per pixel"
    start = header_size + 12 * ncolors
    raw = np.frombuffer(data, np.uint8, count=bytes_per_line * height, offset=start)
    rows = raw.reshape(height, bytes_per_line)[:, : width * bpp // 8].reshape(height, width, -1)
    order = "little" if byte_order == 0 else "big"
    weights = np.array([1 << (8 * i) for i in range(bpp // 8)], dtype=np.uint64)
    if order == "big":
        weights = weights[::-1]
    pixels = (rows.astype(np.uint64) * weights).sum(axis=2)
    out = np.empty((height, width, 3), np.uint8)
    for c, mask in enumerate(masks):
        shift = (mask & -mask).bit_length() - 1
        out[:, :, c] = ((pixels & np.uint64(mask)) >> np.uint64(shift)).astype(np.uint8)
    return out


@dataclass
class Shown:
    index: int
    time: float
    wall: float
    x: int
    y: int
    w: int
    h: int


class PlayerProcess:
    """The player on a display, its ``--report`` lines collected by a reader thread."""

    def __init__(self, display: str, *args: str) -> None:
        env = {**os.environ, "DISPLAY": display}
        self.display = display
        self.proc = subprocess.Popen(
            [sys.executable, str(PLAYER), *args, "--report"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def wait_shown(self, index: int, timeout: float = 30.0) -> Shown:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            parts = line.split()
            if parts and parts[0] == "shown":
                shown = Shown(
                    int(parts[1]), float(parts[2]), float(parts[3]), *(int(p) for p in parts[4:8])
                )
                if shown.index == index:
                    return shown
        self.stop()
        raise AssertionError(f"frame {index} was never shown; stderr: {self.stderr()}")

    def all_shown(self, timeout: float) -> list[Shown]:
        """Every frame reported until the process exits (it must exit within ``timeout``)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        out = []
        while not self.lines.empty():
            parts = self.lines.get().split()
            if parts and parts[0] == "shown":
                out.append(
                    Shown(
                        int(parts[1]),
                        float(parts[2]),
                        float(parts[3]),
                        *(int(p) for p in parts[4:8]),
                    )
                )
        return out

    def screenshot_index(self, shown: Shown) -> int:
        data = subprocess.run(
            ["xwd", "-root", "-silent", "-display", self.display],
            check=True,
            capture_output=True,
            timeout=20,
        ).stdout
        img = read_xwd(data)
        crop = img[shown.y : shown.y + shown.h, shown.x : shown.x + shown.w]
        assert crop.shape == (shown.h, shown.w, 3), f"image outside the screen: {shown}"
        return frame_index_of(crop, layout="hwc")

    def screen_shows(self, shown: Shown, tries: int = 20) -> int:
        """Frame index read from the screen, retried while the X server catches up."""
        got = -1
        for _ in range(tries):
            got = self.screenshot_index(shown)
            if got == shown.index:
                return got
            time.sleep(0.1)
        return got

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def xdisplay() -> Iterator[str]:
    """A private Xvfb server; yields its DISPLAY name."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 20)
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number:
            pytest.fail("Xvfb did not start within 20 s")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("player")
    pts, t = [], 0
    for i in range(40):  # gaps 20..70 ms, irregular
        pts.append(t)
        t += 20 + (i * 37) % 51
    return {
        "cfr": write_video(folder / "cfr.mp4", n_frames=60, width=160, height=120, gop=12),
        "vfr": write_video(
            folder / "vfr.mkv",
            n_frames=40,
            width=96,
            height=64,
            gop=10,
            time_base=Fraction(1, 1000),
            pts=pts,
        ),
    }


# ---------------------------------------------------------------------------------- without X


def test_frame_to_ppm_round_trip() -> None:
    import torch

    img = index_pattern(1234, 64, 48)
    frame = torch.from_numpy(img).permute(2, 0, 1)
    ppm, w, h = frame_to_ppm(frame)
    assert (w, h) == (64, 48) and ppm.startswith(b"P6\n64 48\n255\n")
    pixels = np.frombuffer(ppm[len(b"P6\n64 48\n255\n") :], np.uint8).reshape(48, 64, 3).copy()
    assert frame_index_of(pixels, layout="hwc") == 1234
    _, w2, h2 = frame_to_ppm(frame.float() / 255, max_width=30)  # subsampled by 3
    assert (w2, h2) == (22, 16)


def test_playback_clock_follows_timestamps_and_speed() -> None:
    clock = PlaybackClock(speed=0.5)
    assert clock.due(1.0) is None
    clock.shown(1.0, 100.0)  # first frame anchors
    assert clock.due(1.04) == pytest.approx(100.08)  # 40 ms of video take 80 ms at 0.5x
    clock.shown(1.04, 100.08)
    clock.set_speed(1.0, 1.04, 100.08)
    assert clock.due(1.10) == pytest.approx(100.14)
    clock.shown(1.10, 101.0)  # far too late: re-anchor instead of rushing
    assert clock.due(1.2) == pytest.approx(101.1)
    with pytest.raises(ValueError, match="speed"):
        PlaybackClock(speed=0)


# ---------------------------------------------------------------------------------- with X


@needs_x
def test_player_shows_the_frame_asked_for(xdisplay: str, clips: dict[str, Path]) -> None:
    player = PlayerProcess(xdisplay, str(clips["cfr"]), "--frame", "17")
    try:
        shown = player.wait_shown(17)
        assert (shown.w, shown.h) == (160, 120)
        assert player.screen_shows(shown) == 17
        if shutil.which("xdotool") is None:
            return
        env = {**os.environ, "DISPLAY": xdisplay}
        win = subprocess.run(
            ["xdotool", "search", "--sync", "--name", "tvl-async player"],
            capture_output=True,
            text=True,
            env=env,
            timeout=20,
            check=True,
        )
        wid = win.stdout.split()[0]
        # keyboard: Right steps one frame, End goes to the last one
        for keys, expected in ((["Right"], 18), (["Right", "Right", "Left"], 19), (["End"], 59)):
            subprocess.run(
                ["xdotool", "windowfocus", "--sync", wid, "key", "--delay", "50", *keys],
                env=env,
                timeout=20,
                check=True,
            )
            shown = player.wait_shown(expected)
            assert player.screen_shows(shown) == expected
    finally:
        player.stop()


@needs_x
def test_player_plays_variable_rate_at_its_own_timestamps(
    xdisplay: str, clips: dict[str, Path]
) -> None:
    speed = 0.5
    player = PlayerProcess(
        xdisplay, str(clips["vfr"]), "--play", "--speed", "0.5x", "--exit-at-end"
    )
    try:
        shown = player.all_shown(timeout=60)
    finally:
        player.stop()
    assert player.proc.returncode == 0, player.stderr()
    assert [s.index for s in shown] == list(range(40))
    media = np.array([s.time for s in shown])
    wall = np.array([s.wall for s in shown])
    gaps = np.diff(media) / speed
    # never early: each frame waits for its own timestamp (slow motion doubles the wait)
    assert np.all(np.diff(wall) >= gaps - 0.008), np.round(np.diff(wall) - gaps, 3)
    # and on time overall (a loaded machine may add some lateness, never much)
    total = wall[-1] - wall[0]
    assert gaps.sum() - 0.01 <= total <= gaps.sum() * 1.5 + 0.5

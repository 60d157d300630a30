"""A Tk video player on :class:`tvl_async.VideoLoader` (TVL's player), for ``tvl-async play``.

Open a file (argument or dialog), play/pause at the file's own frame rate (each frame waits for
its own timestamp, so variable frame rates play as recorded), seek with a slider or a frame
spinbox, step one frame, slow motion (0.25x, 0.5x), choose the device and backend where more than
one is available. The current frame index and timestamp are always on screen.

Threads: one decode thread (``tvl-async-player-decode``) owns the :class:`VideoLoader`; it reads
commands from a queue and puts frames, already converted to PPM bytes, into a bounded queue. The
Tk main loop never blocks: it polls that queue with ``after`` and shows each frame when its time
comes. Frames are shown with ``tk.PhotoImage(data=PPM bytes)``, so Pillow is not needed.

Keys: space play/pause, Left/Right step one frame, Home/End first/last frame, o open a file.

Test hook: ``--report`` prints one line per frame shown on stdout
(``shown INDEX TIME_S MONOTONIC_S X Y W H``: frame index, its timestamp, ``time.monotonic()``
when it was put on screen, and the image's position and size on the root window in pixels), so
a test can screenshot the real X window and read the frame back from its pixels.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SPEEDS", "PlaybackClock", "build_parser", "frame_to_ppm", "main"]

#: Playback speeds offered, label -> factor.
SPEEDS: dict[str, float] = {"0.25x": 0.25, "0.5x": 0.5, "1x": 1.0, "2x": 2.0}
POLL_MS = 5  # longest the Tk loop waits between two looks at the decode queue
BUFFER_FRAMES = 8  # frames decoded ahead while playing
LATE_RESYNC_S = 0.25  # a frame this late re-anchors the clock instead of rushing to catch up
TITLE = "tvl-async player"


def frame_to_ppm(frame: torch.Tensor, max_width: int = 0) -> tuple[bytes, int, int]:
    """A binary PPM image (``P6``) of a ``[3, H, W]`` frame; returns ``(ppm, width, height)``.

    Any device and dtype (floats are taken as [0, 1]). With ``max_width`` > 0, frames wider than
    that are shown subsampled by the smallest integer factor that fits. Any thread.
    """
    t = frame.detach()
    if t.dtype.is_floating_point:
        t = (t.float() * 255.0).round_().clamp_(0, 255)
    t = t.to("cpu", torch.uint8)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if max_width > 0 and t.shape[2] > max_width:
        k = math.ceil(t.shape[2] / max_width)
        t = t[:, ::k, ::k]
    hwc = np.ascontiguousarray(t.permute(1, 2, 0).numpy())
    h, w = hwc.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + hwc.tobytes(), w, h


class PlaybackClock:
    """When each frame is due on screen, from its timestamp (seconds) and the speed.

    The clock is anchored on a shown frame: frame time ``t`` is due at
    ``anchor_wall + (t - anchor_media) / speed``. A frame shown more than ``late_resync``
    seconds after its due time re-anchors the clock there (the player slows down instead of
    rushing through frames). Plain arithmetic on the caller's times; no thread of its own.
    """

    def __init__(self, speed: float = 1.0, late_resync: float = LATE_RESYNC_S) -> None:
        if not speed > 0:
            raise ValueError(f"speed: invalid value {speed!r}; allowed: a number > 0")
        self.speed = speed
        self.late_resync = late_resync
        self.anchor_wall: float | None = None
        self.anchor_media = 0.0

    def anchor(self, media_time: float, wall_time: float) -> None:
        """Say that the frame at ``media_time`` is on screen at ``wall_time``."""
        self.anchor_wall = wall_time
        self.anchor_media = media_time

    def reset(self) -> None:
        """Forget the anchor (the next frame shown anchors the clock again)."""
        self.anchor_wall = None

    def set_speed(self, speed: float, media_time: float, wall_time: float) -> None:
        """Change the speed, keeping the frame at ``media_time`` on screen at ``wall_time``."""
        if not speed > 0:
            raise ValueError(f"speed: invalid value {speed!r}; allowed: a number > 0")
        self.speed = speed
        if self.anchor_wall is not None:
            self.anchor(media_time, wall_time)

    def due(self, media_time: float) -> float | None:
        """Wall time at which the frame at ``media_time`` is due; None when not anchored."""
        if self.anchor_wall is None:
            return None
        return self.anchor_wall + (media_time - self.anchor_media) / self.speed

    def shown(self, media_time: float, wall_time: float) -> None:
        """Record that a frame was put on screen; anchors or re-anchors the clock as needed."""
        due = self.due(media_time)
        if due is None or wall_time - due > self.late_resync:
            self.anchor(media_time, wall_time)


# ---------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class _Open:
    path: str
    device: str
    backend: str
    gen: int


@dataclass(frozen=True)
class _Show:
    index: int
    gen: int


@dataclass(frozen=True)
class _Play:
    start: int
    gen: int


@dataclass(frozen=True)
class _Pause:
    gen: int


@dataclass(frozen=True)
class _Opened:
    path: str
    n_frames: int
    times: np.ndarray
    frame_rate: float
    width: int
    height: int
    codec: str
    backend: str
    device: str
    gen: int


@dataclass(frozen=True)
class _Frame:
    index: int
    time: float
    ppm: bytes
    width: int
    height: int
    gen: int
    playing: bool


@dataclass(frozen=True)
class _Failed:
    message: str
    gen: int


@dataclass(frozen=True)
class _End:
    gen: int


_Command = _Open | _Show | _Play | _Pause
_Result = _Opened | _Frame | _Failed | _End


def _decode_worker(commands: queue.Queue[_Command], results: queue.Queue[_Result],
                   stop: threading.Event, max_width: int) -> None:
    """Body of the decode thread: owns the VideoLoader; never blocks longer than a poll slice.

    Handles every waiting command before decoding more (a burst of seeks from a dragged slider
    decodes only the last one); while playing, reads frames forward and offers them to the
    bounded ``results`` queue, re-checking for commands while it is full.
    """
    from tvl_async.loader import VideoLoader

    loader: VideoLoader | None = None
    times = np.zeros(0)
    playing: int | None = None  # next frame to read while playing
    gen = 0
    pending: _Result | None = None
    try:
        while not stop.is_set():
            batch: list[_Command] = []
            try:
                idle = playing is None and pending is None
                batch.append(commands.get(timeout=0.05) if idle else commands.get_nowait())
                while True:
                    batch.append(commands.get_nowait())
            except queue.Empty:
                pass
            for k, cmd in enumerate(batch):
                later = batch[k + 1:]
                if isinstance(cmd, _Show) and any(isinstance(c, _Show | _Open) for c in later):
                    continue  # superseded before we got to it
                gen = cmd.gen
                pending, playing = None, None
                try:
                    if isinstance(cmd, _Open):
                        if loader is not None:
                            loader.close()
                            loader = None
                        loader = VideoLoader(cmd.path, device=cmd.device, backend=cmd.backend)
                        times = loader.timestamps.numpy()
                        pending = _Opened(loader.path, loader.n_frames, times,
                                          loader.frame_rate, loader.width, loader.height,
                                          loader.index.codec, loader.backend_name,
                                          str(loader.device), gen)
                    elif loader is None:
                        continue
                    elif isinstance(cmd, _Show):
                        frame = loader.select_frame(cmd.index)
                        ppm, w, h = frame_to_ppm(frame, max_width)
                        pending = _Frame(cmd.index, float(times[cmd.index]), ppm, w, h, gen,
                                         False)
                    elif isinstance(cmd, _Play):
                        loader.seek_to_frame(cmd.start)
                        playing = cmd.start
                except Exception as e:  # reported on screen, the thread goes on
                    pending = _Failed(f"{type(e).__name__}: {e}", gen)
                    playing = None
                if pending is not None and not isinstance(pending, _Frame):
                    _offer(results, pending, stop)  # control messages are never dropped
                    pending = None
            if batch:
                continue
            if pending is not None:
                with contextlib.suppress(queue.Full):
                    results.put(pending, timeout=0.05)
                    pending = None
                continue
            if playing is not None and loader is not None:
                if playing >= loader.n_frames:
                    pending, playing = _End(gen), None
                    continue
                try:
                    frame = loader.read_frame()
                except Exception as e:
                    pending, playing = _Failed(f"{type(e).__name__}: {e}", gen), None
                    continue
                ppm, w, h = frame_to_ppm(frame, max_width)
                pending = _Frame(playing, float(times[playing]), ppm, w, h, gen, True)
                playing += 1
    finally:
        if loader is not None:
            loader.close()


def _offer(results: queue.Queue[_Result], item: _Result, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            results.put(item, timeout=0.05)
            return
        except queue.Full:
            # the player flushes stale frames on every new command, so room comes back soon
            continue


# ---------------------------------------------------------------------------------- the app


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def _backends(device: str) -> list[str]:
    from tvl_async.backends import nvdec_available

    if device.startswith("cuda") and nvdec_available():
        return ["nvdec", "pyav"]
    return ["pyav"]


class Player:
    """The player window. Create and use it in the Tk thread only.

    Args:
        root: the Tk root window.
        path: a file to open at once (None: use the Open button).
        start_frame: frame shown first.
        device, backend: where to decode (``"cpu"``/``"cuda:N"``; ``"auto"``, ``"pyav"`` or
            ``"nvdec"``).
        speed: one of :data:`SPEEDS`' factors.
        play: start playing once the file is open.
        report: print a ``shown ...`` line per frame on stdout (test hook, see the module doc).
        exit_at_end: close the window when playback reaches the last frame.
        max_width: frames wider than this are shown subsampled (pixels).
    """

    def __init__(self, root: Any, path: str | None = None, *, start_frame: int = 0,
                 device: str = "cpu", backend: str = "auto", speed: float = 1.0,
                 play: bool = False, report: bool = False, exit_at_end: bool = False,
                 max_width: int = 1280) -> None:
        import tkinter as tk
        from tkinter import ttk

        self.tk = tk
        self.root = root
        self.report = report
        self.exit_at_end = exit_at_end
        self.device = device
        self.backend = backend
        self.clock = PlaybackClock(speed)
        self.gen = 0
        self.playing = False
        self.play_on_open = play
        self.start_frame = start_frame
        self.current = -1  # frame on screen
        self.n_frames = 0
        self.times = np.zeros(0)
        self.path: str | None = None
        self.info = ""
        self._slider_value = -1  # last value the program (not the user) gave the slider
        self._buffer: deque[_Frame | _End] = deque()
        self._poll_id: str | None = None
        self._closed = False

        self.commands: queue.Queue[_Command] = queue.Queue()
        self.results: queue.Queue[_Result] = queue.Queue(maxsize=BUFFER_FRAMES)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=_decode_worker, args=(self.commands, self.results, self.stop, max_width),
            name="tvl-async-player-decode", daemon=True)
        self.thread.start()

        root.title(TITLE)
        root.protocol("WM_DELETE_WINDOW", self.close)
        self.photo = tk.PhotoImage(width=320, height=180)
        self.image = tk.Label(root, image=self.photo, background="black", borderwidth=0)
        self.image.grid(row=0, column=0, sticky="n")

        self.slider = tk.Scale(root, from_=0, to=0, orient="horizontal", showvalue=False,
                               command=self._on_slider, length=320)
        self.slider.grid(row=1, column=0, sticky="ew", padx=4)

        bar = ttk.Frame(root)
        bar.grid(row=2, column=0, sticky="ew", padx=4, pady=2)
        ttk.Button(bar, text="Open…", command=self.ask_open).pack(side="left")
        ttk.Button(bar, text="◀|", width=3, command=lambda: self.step(-1)).pack(side="left")
        self.play_button = ttk.Button(bar, text="Play", width=6, command=self.toggle)
        self.play_button.pack(side="left")
        ttk.Button(bar, text="|▶", width=3, command=lambda: self.step(1)).pack(side="left")
        ttk.Label(bar, text=" frame").pack(side="left")
        self.frame_var = tk.StringVar(value="0")
        self.spinbox = tk.Spinbox(bar, from_=0, to=0, width=7, textvariable=self.frame_var,
                                  command=self._on_spinbox)
        self.spinbox.bind("<Return>", lambda _e: self._on_spinbox())
        self.spinbox.bind("<KP_Enter>", lambda _e: self._on_spinbox())
        self.spinbox.pack(side="left")
        ttk.Label(bar, text=" speed").pack(side="left")
        label = next((k for k, v in SPEEDS.items() if v == speed), f"{speed:g}x")
        self.speed_var = tk.StringVar(value=label)
        speed_box = ttk.Combobox(bar, textvariable=self.speed_var, values=list(SPEEDS),
                                 width=6, state="readonly")
        speed_box.bind("<<ComboboxSelected>>", lambda _e: self._on_speed())
        speed_box.pack(side="left")

        self.device_var = tk.StringVar(value=device)
        devices = _devices()
        if len(devices) > 1:
            ttk.Label(bar, text=" device").pack(side="left")
            box = ttk.Combobox(bar, textvariable=self.device_var, values=devices, width=7,
                               state="readonly")
            box.bind("<<ComboboxSelected>>", lambda _e: self._on_device())
            box.pack(side="left")
        self.backend_var = tk.StringVar(value=backend)
        self.backend_box = ttk.Combobox(bar, textvariable=self.backend_var, width=6,
                                        state="readonly")
        self.backend_box.bind("<<ComboboxSelected>>", lambda _e: self._on_device())
        self.backend_label = ttk.Label(bar, text=" backend")
        self._update_backend_choice()

        self.status = tk.StringVar(value="no file: press Open…")
        ttk.Label(root, textvariable=self.status, anchor="w", font="TkFixedFont").grid(
            row=3, column=0, sticky="ew", padx=4, pady=(0, 4))
        root.columnconfigure(0, weight=1)

        for key, action in (("<space>", self.toggle), ("<Right>", lambda: self.step(1)),
                            ("<Left>", lambda: self.step(-1)), ("<Home>", lambda: self.seek(0)),
                            ("<End>", lambda: self.seek(self.n_frames - 1)),
                            ("<o>", self.ask_open)):
            root.bind(key, self._key(action))
        if path is not None:
            self.open(path)
        self._poll_id = root.after(POLL_MS, self._poll)

    # ------------------------------------------------------------------ user actions

    def _key(self, action: Any) -> Any:
        def handler(event: Any) -> None:
            if event.widget is self.spinbox:
                return  # typing a frame number: the keys belong to the spinbox
            action()
        return handler

    def ask_open(self) -> None:
        """Pick a file with the Tk dialog and open it."""
        from tkinter import filedialog

        path = filedialog.askopenfilename(parent=self.root, title="Open a video")
        if path:
            self.start_frame = 0
            self.open(path)

    def open(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` in the decode thread (indexing may take a while); then show a frame."""
        self.path = os.fspath(path)
        self._pause_state()
        self.status.set(f"opening {self.path} …")
        self._send(_Open(self.path, self.device, self.backend, self._next_gen()))

    def seek(self, index: int) -> None:
        """Show frame ``index`` (clamped); keeps playing from there when playing."""
        if self.n_frames == 0:
            return
        index = min(max(int(index), 0), self.n_frames - 1)
        if self.playing:
            self._start_play(index)
        else:
            self._send(_Show(index, self._next_gen()))

    def step(self, delta: int) -> None:
        """Pause and show the frame ``delta`` frames away."""
        if self.n_frames == 0:
            return
        if self.playing:
            self.pause()
        self.seek(max(self.current, 0) + delta)

    def toggle(self) -> None:
        """Play or pause."""
        if self.playing:
            self.pause()
        else:
            self.play()

    def play(self) -> None:
        """Play from the frame after the one on screen (from the start at the end)."""
        if self.n_frames == 0:
            return
        start = self.current + 1 if 0 <= self.current < self.n_frames - 1 else 0
        if self.current < 0:
            start = 0
        self.playing = True
        self.play_button.configure(text="Pause")
        self._start_play(start)

    def pause(self) -> None:
        """Stop playing; the frame on screen stays."""
        self._pause_state()
        self._send(_Pause(self._next_gen()))

    def close(self) -> None:
        """Stop the decode thread and destroy the window."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        if self._poll_id is not None:
            with contextlib.suppress(Exception):
                self.root.after_cancel(self._poll_id)
        self.thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.root.destroy()

    # ------------------------------------------------------------------ widget callbacks

    def _on_slider(self, value: str) -> None:
        index = round(float(value))
        if index != self._slider_value:  # moved by the user, not by us
            self._slider_value = index
            self.seek(index)

    def _on_spinbox(self) -> None:
        try:
            index = int(self.frame_var.get())
        except ValueError:
            self.frame_var.set(str(max(self.current, 0)))
            return
        self.seek(index)

    def _on_speed(self) -> None:
        speed = SPEEDS[self.speed_var.get()]
        media = float(self.times[self.current]) if 0 <= self.current < self.n_frames else 0.0
        self.clock.set_speed(speed, media, time.monotonic())

    def _on_device(self) -> None:
        self.device = self.device_var.get()
        self._update_backend_choice()
        self.backend = self.backend_var.get()
        if self.path is not None:
            self.start_frame = max(self.current, 0)
            self.open(self.path)

    def _update_backend_choice(self) -> None:
        backends = _backends(self.device)
        if self.backend_var.get() not in backends:
            self.backend_var.set(backends[0] if self.backend != "auto" else "auto")
        self.backend_box.configure(values=["auto", *backends])
        if len(backends) > 1:
            self.backend_label.pack(side="left")
            self.backend_box.pack(side="left")
        else:
            self.backend_label.pack_forget()
            self.backend_box.pack_forget()

    # ------------------------------------------------------------------ plumbing

    def _next_gen(self) -> int:
        self.gen += 1
        self._buffer.clear()
        while True:  # stale frames go, so the decode thread always finds room
            try:
                self.results.get_nowait()
            except queue.Empty:
                break
        return self.gen

    def _send(self, cmd: _Command) -> None:
        self.commands.put(cmd)

    def _start_play(self, start: int) -> None:
        self.clock.reset()
        self._send(_Play(start, self._next_gen()))

    def _pause_state(self) -> None:
        self.playing = False
        self.clock.reset()
        self.play_button.configure(text="Play")

    def _poll(self) -> None:
        """Tk-thread timer: take results without blocking, show frames when they are due."""
        self._poll_id = None
        if self._closed:
            return
        now = time.monotonic()
        while len(self._buffer) < 2:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                break
            if item.gen != self.gen:
                continue
            if isinstance(item, _Frame):
                if not item.playing:
                    self._display(item, now)
                else:
                    self._buffer.append(item)
            elif isinstance(item, _Opened):
                self._opened(item)
            elif isinstance(item, _Failed):
                self._pause_state()
                self.status.set(f"error: {item.message}")
                print(f"tvl-async play: error: {item.message}", file=sys.stderr)
            elif isinstance(item, _End):
                self._buffer.append(item)  # after the frames still waiting for their time
        delay = POLL_MS
        while self._buffer and self.playing:
            frame = self._buffer[0]
            if isinstance(frame, _End):
                self._buffer.popleft()
                self._pause_state()
                if self.exit_at_end:
                    self.root.after(200, self.close)
                break
            due = self.clock.due(frame.time)
            now = time.monotonic()
            if due is not None and due - now > 0.002:
                delay = max(1, min(POLL_MS, int((due - now) * 1000)))
                break
            self._buffer.popleft()
            self._display(frame, now)
            self.clock.shown(frame.time, now)
        self._poll_id = self.root.after(delay, self._poll)

    def _opened(self, info: _Opened) -> None:
        self.n_frames, self.times, self.path = info.n_frames, info.times, info.path
        vfr = ""
        if info.n_frames > 2:
            gaps = np.diff(info.times)
            if gaps.max() - gaps.min() > 1e-3:
                vfr = " (variable)"
        self.info = (f"{info.width}x{info.height} {info.codec}  {info.frame_rate:.3f} fps{vfr}  "
                     f"{info.backend} on {info.device}")
        self.root.title(f"{TITLE}: {os.path.basename(info.path)}")
        self.slider.configure(to=max(info.n_frames - 1, 0), length=max(320, min(info.width, 1280)))
        self.spinbox.configure(to=max(info.n_frames - 1, 0))
        start = min(max(self.start_frame, 0), info.n_frames - 1)
        self.current = -1
        if self.play_on_open:
            self.play_on_open = False
            self.current = start - 1
            self.play()
        else:
            self._send(_Show(start, self.gen))

    def _display(self, frame: _Frame, now: float) -> None:
        self.photo.configure(data=frame.ppm, format="PPM", width=frame.width,
                             height=frame.height)
        self.current = frame.index
        self._slider_value = frame.index
        self.slider.set(frame.index)
        if self.root.focus_get() is not self.spinbox or self.playing:
            self.frame_var.set(str(frame.index))
        self.status.set(f"frame {frame.index} of 0..{self.n_frames - 1}   t = {frame.time:.3f} s   "
                        f"{self.info}")
        if self.report:
            self.root.update_idletasks()
            img = self.image
            print(f"shown {frame.index} {frame.time:.6f} {time.monotonic():.6f} "
                  f"{img.winfo_rootx()} {img.winfo_rooty()} {frame.width} {frame.height}",
                  flush=True)


# ---------------------------------------------------------------------------------- entry


def build_parser(prog: str = "tvl-async play") -> argparse.ArgumentParser:
    """Options of the player (shared by ``tvl-async play`` and examples/video_player.py)."""
    p = argparse.ArgumentParser(prog=prog, description="Play a video with tvl_async's "
                                "VideoLoader (Tk; space play/pause, Left/Right step).")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the player's options to ``p``."""
    p.add_argument("file", nargs="?", help="video file (default: choose one with a dialog)")
    p.add_argument("--frame", type=int, default=0, help="frame shown first (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--backend", default="auto", choices=["auto", "pyav", "nvdec"],
                   help="decoder (default auto: nvdec on a GPU when available)")
    p.add_argument("--speed", default="1x", choices=list(SPEEDS), help="playback speed")
    p.add_argument("--play", action="store_true", help="start playing at once")
    p.add_argument("--exit-at-end", action="store_true", help="close at the end of playback")
    p.add_argument("--report", action="store_true",
                   help="print 'shown INDEX TIME MONOTONIC X Y W H' per frame (test hook)")
    p.add_argument("--max-width", type=int, default=1280,
                   help="show wider frames subsampled (pixels, default 1280)")


def run(args: argparse.Namespace) -> int:
    """Open the window and run the Tk loop until it is closed (blocks; main thread)."""
    if args.file is not None:
        from tvl_async.index import load_index

        load_index(args.file)  # a missing or unreadable file is an error here, not in the window
    if args.frame < 0:
        raise ValueError(f"--frame: invalid value {args.frame}; allowed: an integer >= 0")
    try:
        import tkinter as tk
    except ImportError as e:
        raise RuntimeError(f"Tk is not available in this Python ({e}); install python3-tk") from e
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        raise RuntimeError("no display: set DISPLAY, or run under a virtual one "
                           "(xvfb-run tvl-async play FILE)")
    try:
        root = tk.Tk()
    except tk.TclError as e:
        raise RuntimeError(f"cannot open a window: {e}") from e
    player = Player(root, args.file, start_frame=args.frame, device=args.device,
                    backend=args.backend, speed=SPEEDS[args.speed], play=args.play,
                    report=args.report, exit_at_end=args.exit_at_end, max_width=args.max_width)
    try:
        root.mainloop()
    finally:
        player.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of examples/video_player.py; errors are one line on stderr, exit code 2."""
    args = build_parser("video_player.py").parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(f"video_player.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

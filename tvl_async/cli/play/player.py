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

The command-line side (``tvl-async play``, examples/video_player.py) is
:mod:`tvl_async.cli.play.command`; the decode thread is :mod:`tvl_async.cli.play.worker`.

Test hook: ``--report`` prints one line per frame shown on stdout
(``shown INDEX TIME_S MONOTONIC_S X Y W H``: frame index, its timestamp, ``time.monotonic()``
when it was put on screen, and the image's position and size on the root window in pixels), so
a test can screenshot the real X window and read the frame back from its pixels.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from tvl_async.cli.play import worker
from tvl_async.cli.play.window import TITLE, build_window
from tvl_async.cli.play.worker import SPEEDS, PlaybackClock, backends

__all__ = ["Player"]

POLL_MS = 5  # longest the Tk loop waits between two looks at the decode queue
BUFFER_FRAMES = 8  # frames decoded ahead while playing


# ---------------------------------------------------------------------------------- the app


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

    # widgets, made by build_window (Tk objects)
    backend_box: Any
    backend_label: Any
    backend_var: Any
    device_var: Any
    frame_var: Any
    image: Any
    photo: Any
    play_button: Any
    slider: Any
    speed_var: Any
    spinbox: Any
    status: Any

    def __init__(
        self,
        root: Any,
        path: str | None = None,
        *,
        start_frame: int = 0,
        device: str = "cpu",
        backend: str = "auto",
        speed: float = 1.0,
        play: bool = False,
        report: bool = False,
        exit_at_end: bool = False,
        max_width: int = 1280,
    ) -> None:
        import tkinter as tk

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
        self._buffer: deque[worker.Frame | worker.End] = deque()
        self._poll_id: str | None = None
        self._closed = False

        self.commands: queue.Queue[worker.Command] = queue.Queue()
        self.results: queue.Queue[worker.Result] = queue.Queue(maxsize=BUFFER_FRAMES)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=worker.decode_worker,
            args=(self.commands, self.results, self.stop, max_width),
            name="tvl-async-player-decode",
            daemon=True,
        )
        self.thread.start()

        build_window(self, root, speed=speed, device=device, backend=backend)
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
        self._send(worker.Open(self.path, self.device, self.backend, self._next_gen()))

    def seek(self, index: int) -> None:
        """Show frame ``index`` (clamped); keeps playing from there when playing."""
        if self.n_frames == 0:
            return
        index = min(max(int(index), 0), self.n_frames - 1)
        if self.playing:
            self._start_play(index)
        else:
            self._send(worker.Show(index, self._next_gen()))

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
        self._send(worker.Pause(self._next_gen()))

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
        choices = backends(self.device)
        if self.backend_var.get() not in choices:
            self.backend_var.set(choices[0] if self.backend != "auto" else "auto")
        self.backend_box.configure(values=["auto", *choices])
        if len(choices) > 1:
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

    def _send(self, cmd: worker.Command) -> None:
        self.commands.put(cmd)

    def _start_play(self, start: int) -> None:
        self.clock.reset()
        self._send(worker.Play(start, self._next_gen()))

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
            if isinstance(item, worker.Frame):
                if not item.playing:
                    self._display(item, now)
                else:
                    self._buffer.append(item)
            elif isinstance(item, worker.Opened):
                self._opened(item)
            elif isinstance(item, worker.Failed):
                self._pause_state()
                self.status.set(f"error: {item.message}")
                print(f"tvl-async play: error: {item.message}", file=sys.stderr)
            elif isinstance(item, worker.End):
                self._buffer.append(item)  # after the frames still waiting for their time
        delay = POLL_MS
        while self._buffer and self.playing:
            frame = self._buffer[0]
            if isinstance(frame, worker.End):
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

    def _opened(self, info: worker.Opened) -> None:
        self.n_frames, self.times, self.path = info.n_frames, info.times, info.path
        vfr = ""
        if info.n_frames > 2:
            gaps = np.diff(info.times)
            if gaps.max() - gaps.min() > 1e-3:
                vfr = " (variable)"
        self.info = (
            f"{info.width}x{info.height} {info.codec}  {info.frame_rate:.3f} fps{vfr}  "
            f"{info.backend} on {info.device}"
        )
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
            self._send(worker.Show(start, self.gen))

    def _display(self, frame: worker.Frame, now: float) -> None:  # noqa: ARG002 (the clock passes it)
        self.photo.configure(data=frame.ppm, format="PPM", width=frame.width, height=frame.height)
        self.current = frame.index
        self._slider_value = frame.index
        self.slider.set(frame.index)
        if self.root.focus_get() is not self.spinbox or self.playing:
            self.frame_var.set(str(frame.index))
        self.status.set(
            f"frame {frame.index} of 0..{self.n_frames - 1}   t = {frame.time:.3f} s   {self.info}"
        )
        if self.report:
            self.root.update_idletasks()
            img = self.image
            print(
                f"shown {frame.index} {frame.time:.6f} {time.monotonic():.6f} "
                f"{img.winfo_rootx()} {img.winfo_rooty()} {frame.width} {frame.height}",
                flush=True,
            )

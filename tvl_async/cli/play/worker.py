"""The player's decode side: the thread that owns the ``VideoLoader``, its messages, the clock.

:func:`decode_worker` is the body of the player's decode thread (``tvl-async-player-decode``):
it owns the :class:`~tvl_async.VideoLoader`, takes commands (:class:`Open`, :class:`Show`,
:class:`Play`, :class:`Pause`) from a queue and answers with :class:`Opened`, :class:`Frame`,
:class:`Failed` and :class:`End` in a bounded queue; frames travel as PPM bytes
(:func:`frame_to_ppm`). :class:`PlaybackClock` decides when each frame is due. Nothing here
touches Tk; the Tk side is ``tvl_async.cli.play.player``.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from tvl_async.cli._common import invalid

#: Playback speeds offered, label -> factor.
SPEEDS: dict[str, float] = {"0.25x": 0.25, "0.5x": 0.5, "1x": 1.0, "2x": 2.0}
LATE_RESYNC_S = 0.25  # a frame this late re-anchors the clock instead of rushing to catch up


def devices() -> list[str]:
    """The devices a file can be decoded on here: ``cpu``, then every ``cuda:N``."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def backends(device: str) -> list[str]:
    """The decoders usable on ``device`` here, preferred first."""
    from tvl_async import nvdec_available

    if device.startswith("cuda") and nvdec_available():
        return ["nvdec", "pyav"]
    return ["pyav"]


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
            raise ValueError(invalid("speed", speed, "numbers > 0"))
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
            raise ValueError(invalid("speed", speed, "numbers > 0"))
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
class Open:
    path: str
    device: str
    backend: str
    gen: int


@dataclass(frozen=True)
class Show:
    index: int
    gen: int


@dataclass(frozen=True)
class Play:
    start: int
    gen: int


@dataclass(frozen=True)
class Pause:
    gen: int


@dataclass(frozen=True)
class Opened:
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
class Frame:
    index: int
    time: float
    ppm: bytes
    width: int
    height: int
    gen: int
    playing: bool


@dataclass(frozen=True)
class Failed:
    message: str
    gen: int


@dataclass(frozen=True)
class End:
    gen: int


Command = Open | Show | Play | Pause
Result = Opened | Frame | Failed | End


def decode_worker(
    commands: queue.Queue[Command],
    results: queue.Queue[Result],
    stop: threading.Event,
    max_width: int,
) -> None:
    """Body of the decode thread: owns the VideoLoader; never blocks longer than a poll slice.

    Handles every waiting command before decoding more (a burst of seeks from a dragged slider
    decodes only the last one); while playing, reads frames forward and offers them to the
    bounded ``results`` queue, re-checking for commands while it is full.
    """
    from tvl_async import VideoLoader

    loader: VideoLoader | None = None
    times = np.zeros(0)
    playing: int | None = None  # next frame to read while playing
    gen = 0
    pending: Result | None = None
    try:
        while not stop.is_set():
            batch: list[Command] = []
            try:
                idle = playing is None and pending is None
                batch.append(commands.get(timeout=0.05) if idle else commands.get_nowait())
                while True:
                    batch.append(commands.get_nowait())
            except queue.Empty:
                pass
            for k, cmd in enumerate(batch):
                later = batch[k + 1 :]
                if isinstance(cmd, Show) and any(isinstance(c, Show | Open) for c in later):
                    continue  # superseded before we got to it
                gen = cmd.gen
                pending, playing = None, None
                try:
                    if isinstance(cmd, Open):
                        if loader is not None:
                            loader.close()
                            loader = None
                        loader = VideoLoader(cmd.path, device=cmd.device, backend=cmd.backend)
                        times = loader.timestamps.numpy()
                        pending = Opened(
                            loader.path,
                            loader.n_frames,
                            times,
                            loader.frame_rate,
                            loader.width,
                            loader.height,
                            loader.index.codec,
                            loader.backend_name,
                            str(loader.device),
                            gen,
                        )
                    elif loader is None:
                        continue
                    elif isinstance(cmd, Show):
                        frame = loader.select_frame(cmd.index)
                        ppm, w, h = frame_to_ppm(frame, max_width)
                        pending = Frame(cmd.index, float(times[cmd.index]), ppm, w, h, gen, False)
                    elif isinstance(cmd, Play):
                        loader.seek_to_frame(cmd.start)
                        playing = cmd.start
                except Exception as e:  # reported on screen, the thread goes on
                    pending = Failed(f"{type(e).__name__}: {e}", gen)
                    playing = None
                if pending is not None and not isinstance(pending, Frame):
                    offer(results, pending, stop)  # control messages are never dropped
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
                    pending, playing = End(gen), None
                    continue
                try:
                    frame = loader.read_frame()
                except Exception as e:
                    pending, playing = Failed(f"{type(e).__name__}: {e}", gen), None
                    continue
                ppm, w, h = frame_to_ppm(frame, max_width)
                pending = Frame(playing, float(times[playing]), ppm, w, h, gen, True)
                playing += 1
    finally:
        if loader is not None:
            loader.close()


def offer(results: queue.Queue[Result], item: Result, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            results.put(item, timeout=0.05)
            return
        except queue.Full:
            # the player flushes stale frames on every new command, so room comes back soon
            continue

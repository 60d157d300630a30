"""The video index: every frame of a file in presentation order, found by demuxing once.

:func:`load_index` opens a file, picks its first video stream and reads every packet of it
**without decoding**. Frame ``i`` is the i-th frame a player shows: packets the container marks as
discarded (MP4 edit lists) are not frames, B-frame reordering is undone by sorting on pts, and no
header frame count or constant rate is trusted. For each frame the index records its pts, its time
in seconds and the keyframe to seek to (the latest keyframe in decode order that is at or before
the frame both in decode and in presentation order, so open-GOP leading pictures decode from the
previous keyframe).

Streams without usable timestamps (raw elementary streams; duplicate or missing pts) fall back to
an exact one-time decode scan: frames are counted as the decoder outputs them, and reading them
later decodes forward from the start (``timestamps_ok`` is False).

Indexes are cached on disk (``TVL_ASYNC_CACHE``, default ``~/.cache/tvl_async``; ``off``
disables), keyed by absolute path, size and modification time; an entry that is stale or cannot
be read is rebuilt, never trusted. Functions here block on file I/O and may run in any thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tvl_async._errors import NoVideoStreamError, UnsupportedCodecError, VideoOpenError

log = logging.getLogger(__name__)

INDEX_VERSION = 5
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".ts", ".m4v", ".mpg", ".mpeg", ".flv")
NO_TS = np.iinfo(np.int64).min  # stands for a missing timestamp in int64 arrays


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """Frame-exact index of one video stream.

    Attributes:
        path: absolute path of the file.
        file_size: size in bytes when indexed.
        mtime_ns: modification time in nanoseconds when indexed.
        stream_index: index of the video stream among all the file's streams.
        codec: FFmpeg codec name (``h264``, ``hevc``, ``vp9``, ``av1``, ``mpeg4``, ``mjpeg``...).
        pix_fmt: decoder pixel format (``yuv420p``, ``yuv420p10le``...), or None if unknown.
        width, height: coded frame size in pixels.
        time_base: the stream's time base (seconds per pts unit).
        average_rate: frames per second averaged over the file.
        color_matrix: ``"bt709"``, ``"bt601"`` or None (unspecified), as the stream declares.
        full_range: True when the stream declares full-range (JPEG) YUV.
        header_frames: frame count the container header claims (0 if none); not trusted.
        timestamps_ok: True when every frame has a unique pts; False for the decode-scan fallback.
        pts: ``[n_frames]`` int64, pts of each frame in presentation order.
        times: ``[n_frames]`` float64, presentation time of each frame in seconds.
        is_keyframe: ``[n_frames]`` bool, whether the frame is a keyframe.
        seek_key: ``[n_frames]`` int64, for each frame the entry of the keyframe table to decode
            from; frames sharing an entry form one GOP for planning.
        key_pts, key_dts: ``[n_keys]`` int64 pts and dts of each keyframe packet (``NO_TS`` when
            missing); keyframes hidden by an edit list are included.
        key_decode_pos: ``[n_keys]`` int64 position of each keyframe packet in decode order.
        packet_pts: ``[n_packets]`` int64 pts of every packet in decode order (for locating the
            demuxer after a seek).
        frame_duration: duration of the last frame in seconds.
        color_space: the colour-space code the stream declares, as FFmpeg gives it
            (``AVColorSpace``: 1 BT.709, 2 unspecified, 9 BT.2020...).
        field_order: ``"progressive"``, ``"tt"``, ``"bb"``, ``"tb"``, ``"bt"`` (interlaced) or
            ``"unknown"``, as FFmpeg reports the stream's field order.
    """

    path: str
    file_size: int
    mtime_ns: int
    stream_index: int
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    time_base: Fraction
    average_rate: float
    color_matrix: str | None
    full_range: bool
    header_frames: int
    timestamps_ok: bool
    pts: np.ndarray
    times: np.ndarray
    is_keyframe: np.ndarray
    seek_key: np.ndarray
    key_pts: np.ndarray
    key_dts: np.ndarray
    key_decode_pos: np.ndarray
    packet_pts: np.ndarray
    frame_duration: float
    color_space: int = 2
    field_order: str = "unknown"
    _frame_of_pts: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_frames(self) -> int:
        """Number of frames a player shows."""
        return len(self.pts)

    @property
    def n_keys(self) -> int:
        """Number of entries in the keyframe table (GOPs)."""
        return len(self.key_pts)

    @property
    def start_time(self) -> float:
        """Presentation time of frame 0 in seconds."""
        return float(self.times[0])

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end."""
        return float(self.times[-1] - self.times[0]) + self.frame_duration

    @property
    def frame_rate(self) -> float:
        """Average frames per second (frames over duration)."""
        return self.n_frames / self.duration if self.duration > 0 else self.average_rate

    def frame_of_pts(self, pts: int) -> int | None:
        """Presentation index of the frame with this pts, or None if no shown frame has it."""
        if not self._frame_of_pts:
            self._frame_of_pts.update({int(p): i for i, p in enumerate(self.pts)})
        return self._frame_of_pts.get(int(pts))

    def gop_frames(self, key: int) -> np.ndarray:
        """Presentation indices of the frames decoded from keyframe entry ``key``."""
        return np.flatnonzero(self.seek_key == key)

    def gop_lengths(self) -> np.ndarray:
        """``[n_keys]`` number of shown frames per keyframe entry."""
        return np.bincount(self.seek_key, minlength=self.n_keys)

    def frame_at_time(self, seconds: float) -> int:
        """Index of the frame shown at ``seconds`` (the last frame starting at or before it)."""
        i = int(np.searchsorted(self.times, seconds + 1e-9, side="right")) - 1
        return min(max(i, 0), self.n_frames - 1)

    def check_frame(self, i: int) -> int:
        """Return ``i`` as an int, or raise IndexError naming the file and the valid range."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{self.path}: frame index must be an int, got {i!r}")
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(
                f"{self.path}: frame index {i} out of range: valid 0..{self.n_frames - 1} "
                f"(or -{self.n_frames}..-1)"
            )
        return int(i) % self.n_frames


# ---------------------------------------------------------------------------------- opening


def check_readable(path: str | os.PathLike[str]) -> Path:
    """Raise the standard exception for a missing, directory or unreadable path; blocks briefly."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "No such video file", str(p))  # str(): "...: 'path'"
    if p.is_dir():
        raise IsADirectoryError(21, "Expected a video file but got a directory", str(p))
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except PermissionError as e:
        raise PermissionError(13, "Cannot read video file (permission denied)", str(p)) from e
    if not head:
        raise VideoOpenError(f"{p}: the file is empty (0 bytes)")
    return p.resolve()


def open_container(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning FFmpeg's errors into tvl_async ones naming the file."""
    p = check_readable(path)
    try:
        return av.open(str(p), mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoOpenError(f"{p}: cannot open as a video ({type(e).__name__}: {e})") from e


def first_video_stream(
    container: av.container.InputContainer, path: str
) -> av.video.stream.VideoStream:
    """The first video stream (audio or data streams may come before it)."""
    for stream in container.streams:
        if stream.type == "video":
            return stream
    kinds = ", ".join(s.type for s in container.streams) or "none"
    raise NoVideoStreamError(f"{path}: no video stream (streams found: {kinds})")


def survive_new_streams(items: Iterable[Any]) -> Iterator[Any]:
    """Wrap ``container.demux(...)`` or ``container.decode(...)``: end quietly where PyAV's
    demuxer fails on a stream that appeared mid-file.

    PyAV (up to at least 18.x) sizes its stream table when the file is opened; when the file adds
    a stream later (MPEG-TS can), the end-of-stream flush indexes that table out of range and
    raises ``IndexError``. The flush packets of the streams known at open come first (new streams
    get higher indices), so every packet and frame of our stream has been delivered by then.
    """
    it = iter(items)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except IndexError as e:
            log.debug("demuxer hit a stream added mid-file (%s); treating it as the end", e)
            return
        yield item


def _color_info(stream: Any) -> tuple[str | None, bool]:
    ctx = stream.codec_context
    matrix = None
    with contextlib.suppress(Exception):
        cs = int(ctx.colorspace)
        matrix = {1: "bt709", 5: "bt601", 6: "bt601"}.get(cs)
    full = False
    with contextlib.suppress(Exception):
        full = int(ctx.color_range) == 2
    if stream.codec_context.pix_fmt and stream.codec_context.pix_fmt.startswith("yuvj"):
        full = True
    return matrix, full


_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


def _scan_info(ctx: Any) -> dict[str, Any]:
    """Colour-space code and field order as FFmpeg reports them (for the GPU decoder)."""
    info: dict[str, Any] = {"color_space": 2, "field_order": "unknown"}
    with contextlib.suppress(Exception):
        info["color_space"] = int(ctx.colorspace)
    with contextlib.suppress(Exception):
        info["field_order"] = _FIELD_ORDERS.get(int(ctx.field_order), "unknown")
    return info


# ------------------------------------------------------------------------------- building


@dataclass
class _Packet:
    pts: int | None
    dts: int | None
    key: bool
    discard: bool
    duration: int


def _demux_packets(container: av.container.InputContainer, stream: Any, path: str) -> list[_Packet]:
    packets: list[_Packet] = []
    trailing_corrupt = 0  # packets the demuxer flagged as incomplete, at the end so far
    try:
        for pkt in survive_new_streams(container.demux(stream)):
            if pkt.size == 0:
                continue
            corrupt = bool(getattr(pkt, "is_corrupt", False))
            trailing_corrupt = trailing_corrupt + 1 if corrupt else 0
            packets.append(
                _Packet(
                    pkt.pts,
                    pkt.dts,
                    bool(pkt.is_keyframe),
                    bool(getattr(pkt, "is_discard", False)),
                    int(pkt.duration or 0),
                )
            )
    except av.FFmpegError as e:
        raise VideoOpenError(
            f"{path}: the stream is corrupt or truncated after {len(packets)} packets "
            f"({type(e).__name__}: {e})"
        ) from e
    if trailing_corrupt and trailing_corrupt < len(packets):
        # A truncated file: the last packet(s) were cut short. They are not frames (the decoder
        # would fail on them); every complete packet before them decodes normally.
        del packets[-trailing_corrupt:]
        log.warning(
            "%s: the file is truncated: its last %d packet(s) are incomplete and are not "
            "indexed; %d complete packets remain",
            path,
            trailing_corrupt,
            len(packets),
        )
    return packets


def _timestamps_usable(packets: list[_Packet]) -> bool:
    pts = [p.pts for p in packets]
    if not pts or any(p is None for p in pts):
        return False
    return len(set(pts)) == len(pts)


def _assign_seek_keys(packets: list[_Packet]) -> tuple[list[int], list[int]]:
    """Keyframe table (decode positions) and, per shown packet, the table entry to seek to."""
    keys: list[int] = []
    seek_of_packet: list[int] = []
    for pos, pkt in enumerate(packets):
        if pkt.key:
            keys.append(pos)
        if pkt.discard:
            seek_of_packet.append(-1)
            continue
        k = len(keys) - 1
        # A frame shown before its keyframe (open-GOP leading picture) needs the keyframe before.
        while k > 0 and _shown_after(packets[keys[k]], pkt):
            k -= 1
        seek_of_packet.append(k)
    return keys, seek_of_packet


def _shown_after(a: _Packet, b: _Packet) -> bool:
    return a.pts is not None and b.pts is not None and a.pts > b.pts


def _build_from_packets(packets: list[_Packet], tb: Fraction) -> dict[str, Any]:
    keys, seek_of_packet = _assign_seek_keys(packets)
    if not keys:
        keys = [0]
    shown = [i for i, p in enumerate(packets) if not p.discard]
    shown.sort(key=lambda i: packets[i].pts)  # type: ignore[arg-type,return-value]
    pts = np.array([packets[i].pts for i in shown], dtype=np.int64)
    seek_key = np.array([max(seek_of_packet[i], 0) for i in shown], dtype=np.int64)
    is_key = np.array([packets[i].key for i in shown], dtype=bool)
    last = packets[shown[-1]]
    if last.duration > 0:
        last_dur = float(last.duration * tb)
    elif len(pts) > 1:
        last_dur = float((pts[-1] - pts[0]) * tb) / (len(pts) - 1)
    else:
        last_dur = 0.0
    return {
        "pts": pts,
        "times": pts.astype(np.float64) * float(tb),
        "is_keyframe": is_key,
        "seek_key": seek_key,
        "key_pts": np.array([_ts(packets[k].pts) for k in keys], dtype=np.int64),
        "key_dts": np.array([_ts(packets[k].dts) for k in keys], dtype=np.int64),
        "key_decode_pos": np.array(keys, dtype=np.int64),
        "packet_pts": np.array([_ts(p.pts) for p in packets], dtype=np.int64),
        "frame_duration": last_dur,
    }


def _ts(value: int | None) -> int:
    return NO_TS if value is None else int(value)


def _build_by_decode_scan(path: str, rate: float) -> dict[str, Any]:
    """Exact fallback without timestamps: decode every frame once and count them."""
    keyflags: list[bool] = []
    with open_container(path) as container:
        stream = first_video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            for frame in survive_new_streams(container.decode(stream)):
                keyflags.append(bool(frame.key_frame))
        except av.FFmpegError as e:
            raise VideoOpenError(
                f"{path}: decoding failed after {len(keyflags)} frames: {e}"
            ) from e
    n = len(keyflags)
    rate = rate if rate > 0 else 25.0
    pts = np.arange(n, dtype=np.int64)
    return {
        "pts": pts,
        "times": pts / rate,
        "is_keyframe": np.array(keyflags, dtype=bool),
        "seek_key": np.zeros(n, dtype=np.int64),
        "key_pts": np.array([NO_TS], dtype=np.int64),
        "key_dts": np.array([NO_TS], dtype=np.int64),
        "key_decode_pos": np.array([0], dtype=np.int64),
        "packet_pts": np.zeros(0, dtype=np.int64),
        "frame_duration": 1.0 / rate,
    }


def build_index(path: str | os.PathLike[str]) -> VideoIndex:
    """Demux ``path`` once (no decoding) and return its index; does not touch the cache; blocks."""
    p = check_readable(path)
    st = p.stat()
    with open_container(p) as container:
        stream = first_video_stream(container, str(p))
        ctx = stream.codec_context
        if ctx is None or not ctx.name:
            raise UnsupportedCodecError(
                f"{p}: this FFmpeg build has no decoder for the video stream"
            )
        tb = stream.time_base or Fraction(1, 1)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        matrix, full = _color_info(stream)
        meta: dict[str, Any] = {
            "stream_index": stream.index,
            "codec": ctx.name,
            "pix_fmt": ctx.pix_fmt,
            "width": ctx.width,
            "height": ctx.height,
            "header_frames": int(stream.frames or 0),
            "color_matrix": matrix,
            "full_range": full,
            **_scan_info(ctx),
        }
        packets = _demux_packets(container, stream, str(p))
    ok = _timestamps_usable(packets)
    if ok and all(pk.discard for pk in packets):
        ok = False
    arrays = _build_from_packets(packets, tb) if ok else _build_by_decode_scan(str(p), rate)
    if len(arrays["pts"]) == 0:
        raise VideoOpenError(
            f"{p}: the video stream has no frames (header claims {meta['header_frames']}); "
            f"the file may be truncated or damaged"
        )
    times = arrays["times"]
    if not rate and len(times) > 1 and times[-1] > times[0]:
        rate = (len(times) - 1) / float(times[-1] - times[0])
    if not ok:
        tb = Fraction(1, 1) / Fraction(rate or 25.0).limit_denominator(1001)
    return VideoIndex(
        path=str(p),
        file_size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        time_base=tb,
        average_rate=rate,
        timestamps_ok=ok,
        **meta,
        **arrays,
    )


# ---------------------------------------------------------------------------------- cache


def cache_dir() -> Path | None:
    """The index cache directory (``TVL_ASYNC_CACHE``), or None when caching is off."""
    env = os.environ.get("TVL_ASYNC_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none", "false"):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvl_async"


def _cache_file(folder: Path, path: Path, size: int, mtime_ns: int) -> Path:
    key = hashlib.sha1(f"{path}\0{size}\0{mtime_ns}".encode()).hexdigest()
    return folder / f"{key}.npz"


_ARRAY_FIELDS = (
    "pts",
    "times",
    "is_keyframe",
    "seek_key",
    "key_pts",
    "key_dts",
    "key_decode_pos",
    "packet_pts",
)


def _save(index: VideoIndex, target: Path) -> None:
    meta = {
        k: getattr(index, k)
        for k in (
            "path",
            "file_size",
            "mtime_ns",
            "stream_index",
            "codec",
            "pix_fmt",
            "width",
            "height",
            "average_rate",
            "color_matrix",
            "full_range",
            "header_frames",
            "timestamps_ok",
            "frame_duration",
            "color_space",
            "field_order",
        )
    }
    meta["time_base"] = [index.time_base.numerator, index.time_base.denominator]
    meta["version"] = INDEX_VERSION
    target.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread: two threads may index the same file at once
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
    arrays = {k: getattr(index, k) for k in _ARRAY_FIELDS}
    np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    os.replace(tmp, target)


def _load(target: Path, path: Path, size: int, mtime_ns: int) -> VideoIndex | None:
    """The cached index, or None when the entry is absent, stale or unreadable."""
    try:
        if not target.exists():  # may raise PermissionError for an unreadable cache folder
            return None
        with np.load(target, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays: dict[str, Any] = {k: np.array(data[k]) for k in _ARRAY_FIELDS}
        if (
            meta.pop("version") != INDEX_VERSION
            or meta["path"] != str(path)
            or meta["file_size"] != size
            or meta["mtime_ns"] != mtime_ns
        ):
            return None
        tb = meta.pop("time_base")
        index = VideoIndex(time_base=Fraction(tb[0], tb[1]), **meta, **arrays)
        n = index.n_frames
        if n == 0 or any(len(a) != n for a in (index.times, index.is_keyframe, index.seek_key)):
            return None
        if index.seek_key.max() >= index.n_keys:
            return None
        return index
    except Exception as e:  # any damage means: rebuild
        log.info("index cache entry %s for %s is unreadable (%s); rebuilding", target, path, e)
        return None


def load_index(path: str | os.PathLike[str], *, cache: bool = True) -> VideoIndex:
    """Index ``path``, from the on-disk cache when a fresh entry exists; blocks.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the path cannot be read.
        VideoOpenError: not a video, corrupt, or no frames (subclasses name the exact cause).
    """
    p = check_readable(path)
    st = p.stat()
    folder = cache_dir() if cache else None
    target = _cache_file(folder, p, st.st_size, st.st_mtime_ns) if folder else None
    if target is not None:
        hit = _load(target, p, st.st_size, st.st_mtime_ns)
        if hit is not None:
            return hit
    index = build_index(p)
    if target is not None:
        try:
            _save(index, target)
        except OSError as e:
            log.warning("cannot write index cache %s: %s", target, e)
    return index


def find_videos(items: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, by :data:`VIDEO_SUFFIXES`) into a list of files:
    files as given, each folder's videos sorted by path; blocks on listing folders.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: nothing found.
    """
    items = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(2, "No such file or folder", str(p))
    if not out:
        raise ValueError(f"no video files given (got {[str(i) for i in items]}; folders are "
                         f"searched for {' '.join(VIDEO_SUFFIXES)})")
    return out


def load_indexes(
    paths: Iterable[str | os.PathLike[str]], *, cache: bool = True
) -> list[VideoIndex]:
    """:func:`load_index` for each path, in order; blocks."""
    return [load_index(p, cache=cache) for p in paths]

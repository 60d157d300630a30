"""The :class:`VideoIndex` record: every frame of one video stream in presentation order.

Built by :mod:`tvl_async._index_build`, cached by :mod:`tvl_async._index_cache`, loaded by
:func:`tvl_async._index.load_index`. Immutable; may be read from any thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from tvl_async._checks import invalid_type, out_of_range

INDEX_VERSION = 7
NO_TS = np.iinfo(np.int64).min  # stands for a missing timestamp in int64 arrays

#: Display matrix (entries 0, 1, 3, 4 as signs) -> (counter-clockwise quarter turns, mirrored):
#: the displayed picture is ``fliplr(rot90(stored, k))`` when mirrored, else ``rot90(stored, k)``
#: (numpy's ``rot90`` turns counter-clockwise). Checked against the ffmpeg CLI's autorotation.
ORIENTATIONS: dict[tuple[int, int, int, int], tuple[int, bool]] = {
    (1, 0, 0, 1): (0, False),
    (1, 0, 0, -1): (2, True),
    (-1, 0, 0, 1): (0, True),
    (-1, 0, 0, -1): (2, False),
    (0, -1, 1, 0): (1, False),
    (0, 1, 1, 0): (3, True),
    (0, -1, -1, 0): (1, True),
    (0, 1, -1, 0): (3, False),
}


#: The array fields of :class:`VideoIndex`, by length: one entry per frame, per keyframe and per
#: packet. The on-disk caches (``_index_cache``, ``_index_store``) store exactly these.
FRAME_ARRAYS = ("pts", "times", "is_keyframe", "seek_key")
KEY_ARRAYS = ("key_pts", "key_dts", "key_decode_pos")
PACKET_ARRAYS = ("packet_pts", "packet_pos", "packet_size")
ARRAY_FIELDS = FRAME_ARRAYS + KEY_ARRAYS + PACKET_ARRAYS


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
        coded_width, coded_height: frame size in pixels as stored in the stream.
        rotation: counter-clockwise degrees (0, 90, 180, 270) the display matrix turns the
            stored picture by for display (as ``ffprobe`` reports it); 0 without a matrix.
        mirrored: the display matrix also mirrors the picture left-right after the turn.
        autorotate: frames come out as a player shows them (rotation and mirror applied);
            False gives the stored orientation. :attr:`width`/:attr:`height` follow it.
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
        packet_pos, packet_size: ``[n_packets]`` int64 byte offset (-1: unknown) and size of
            every packet in decode order, so that a remote source can fetch a decode job's
            bytes in one range request (:meth:`byte_range`); empty for the decode-scan index.
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
    coded_width: int
    coded_height: int
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
    rotation: int = 0
    mirrored: bool = False
    autorotate: bool = True
    color_space: int = 2
    field_order: str = "unknown"
    packet_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    packet_size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _frame_of_pts: dict[int, int] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_fields(cls, fields: dict[str, object]) -> VideoIndex:
        """An index from every field but ``_frame_of_pts``, without ``__init__``'s per-field
        ``object.__setattr__`` calls: about 5x cheaper, for loading 10^5 records at once. The
        caller guarantees the fields are complete and well typed (they come from a cache entry
        that was checked as a whole); non-blocking, any thread."""
        obj = object.__new__(cls)
        obj.__dict__.update(fields)
        obj.__dict__["_frame_of_pts"] = {}
        return obj

    @property
    def turns(self) -> int:
        """Counter-clockwise quarter turns applied to decoded frames (0 when not autorotating)."""
        return (self.rotation // 90) % 4 if self.autorotate else 0

    @property
    def mirror(self) -> bool:
        """Whether decoded frames are mirrored left-right after the turn."""
        return self.mirrored and self.autorotate

    @property
    def width(self) -> int:
        """Width in pixels of the frames that come out (the displayed width when autorotating)."""
        return self.coded_height if self.turns % 2 else self.coded_width

    @property
    def height(self) -> int:
        """Height in pixels of the frames that come out."""
        return self.coded_width if self.turns % 2 else self.coded_height

    def with_autorotate(self, autorotate: bool) -> VideoIndex:
        """This index with frames in displayed (True) or stored (False) orientation."""
        if autorotate == self.autorotate:
            return self
        return dataclasses.replace(self, autorotate=autorotate, _frame_of_pts={})

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
            raise invalid_type("frame index", i, "integers", file=self.path)
        if not -self.n_frames <= i < self.n_frames:
            raise out_of_range("frame index", i, self.n_frames, file=self.path)
        return int(i) % self.n_frames

    def byte_range(self, first: int, last: int) -> tuple[int, int] | None:
        """``(start, end)`` byte offsets (end exclusive) spanning the packets at decode positions
        ``first…last`` (clipped to the file's packets), or None when their offsets are unknown
        (the decode-scan index, or a container that does not report them)."""
        n = len(self.packet_pos)
        if n == 0 or first >= n:
            return None
        lo, hi = max(first, 0), min(last, n - 1) + 1
        pos, size = self.packet_pos[lo:hi], self.packet_size[lo:hi]
        if len(pos) == 0 or (pos < 0).any():
            return None
        return int(pos.min()), int((pos + size).max())

"""CPU decoding with PyAV (FFmpeg): exactly the frames asked for, with the least decoding.

The frames wanted from one file are grouped by the keyframe the index names for them; each run of
GOPs is decoded with one seek: the demuxer is positioned exactly on the keyframe packet (packets
before it are skipped without decoding), the decoder runs forward and every output frame is
identified by its pts, never by counting. Streams without timestamps are decoded forward from the
start and identified by counting (exact, but random access costs a restart).

A :class:`PyAVBackend` belongs to the thread that created it. FFmpeg releases the GIL while it
decodes, so several backends in several threads decode in parallel.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import av
import torch

from tvl_async._backends.base import (
    READ_MODES,
    DecodeResult,
    ReadMode,
    job_byte_range,
    packets_from_key,
    plan_runs,
    pts_positions,
)
from tvl_async._backends.pyav_convert import FrameConverter, Sink
from tvl_async._backends.pyav_skip import decode_packets
from tvl_async._checks import invalid_value
from tvl_async._errors import DecodeError
from tvl_async._errors import short_list as _short
from tvl_async._index import VideoIndex, open_container, survive_new_streams
from tvl_async._index_open import remote_of, source_error

log = logging.getLogger(__name__)

#: libswscale's scalers (matched case-insensitively).
SwsInterpolation = Literal["BILINEAR", "BICUBIC", "AREA", "POINT", "FAST_BILINEAR", "LANCZOS"]
INTERPOLATIONS: tuple[str, ...] = get_args(SwsInterpolation)


@dataclass
class _OpenFile:
    """One open container and the decoding position in it."""

    container: Any
    stream: Any
    convert: FrameConverter
    # For streams without timestamps: the frame iterator and the index of its next frame.
    sequential: Iterator[Any] | None = None
    next_frame: int = 0
    pos_of_pts: dict[int, int] = field(default_factory=dict)


class PyAVBackend:
    """Frame-exact CPU decoder over PyAV.

    Args:
        max_open_files: containers kept open (least recently used are closed first).
        threads: FFmpeg decoder threads per file (0 = FFmpeg's choice).
        thread_type: FFmpeg threading, ``"AUTO"``, ``"FRAME"``, ``"SLICE"`` or ``"NONE"``.
        interpolation: swscale interpolation used when ``size`` is given.
        skip_unwanted: decode less (``pyav_skip``): drop H.264 non-reference frames nobody
            wants and stop after the last wanted frame; the same frames, bit for bit.

    Not thread-safe: create, use and close it in one thread.
    """

    name = "pyav"
    #: ``decode`` takes ``on_frame`` (frames handed over one by one as they are decoded).
    streams_frames = True

    def __init__(
        self,
        *,
        max_open_files: int = 16,
        threads: int = 0,
        thread_type: str = "AUTO",
        interpolation: str = "BILINEAR",
        skip_unwanted: bool = False,
    ) -> None:
        if max_open_files < 1:
            raise invalid_value("max_open_files", max_open_files, "integers >= 1")
        if interpolation.upper() not in INTERPOLATIONS:
            raise invalid_value("interpolation", interpolation, INTERPOLATIONS)
        self.device = torch.device("cpu")
        self.max_open_files = max_open_files
        self.threads = threads
        self.thread_type = thread_type
        self.interpolation = interpolation.upper()
        self.skip_unwanted = skip_unwanted
        self.frames_decoded = 0
        self._files: OrderedDict[str, _OpenFile] = OrderedDict()
        self._warned: set[tuple[str, str]] = set()  # (path, kind) already logged

    # ------------------------------------------------------------------------ public API

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
        on_frame: Callable[[int, torch.Tensor], None] | None = None,
    ) -> DecodeResult:
        """Decode ``frames`` (presentation indices) of ``index.path``; see :class:`Backend`.

        ``on_frame(i, frame)`` (this backend only): called once per distinct wanted frame as
        soon as it is decoded, instead of returning the frames (``DecodeResult.frames`` is then
        empty), so that a caller can process full-size frames one by one and drop them. If it
        raises, decoding stops and the exception propagates.
        """
        if mode not in READ_MODES:
            raise invalid_value("read mode", mode, READ_MODES, file=index.path)
        wanted = [index.check_frame(i) for i in frames]
        if not wanted:
            return DecodeResult([], 0)
        got: dict[int, torch.Tensor] = {} if on_frame is None else Sink(on_frame)
        before = self.frames_decoded
        f = self._open(index)
        try:
            if not index.timestamps_ok:
                self._decode_sequential(f, index, sorted(set(wanted)), got, size)
            else:
                for key, run in plan_runs(index, wanted, mode):
                    self._decode_run(f, index, key, run, got, size)
        except (av.FFmpegError, DecodeError) as e:
            error = source_error(f.container)
            self._forget(index.path)
            if error is not None:  # a failed remote read that FFmpeg reported its own way
                error.add_note(f"while decoding frames {_short(wanted)} of {index.path}")
                raise error from e
            if isinstance(e, DecodeError):
                raise
            raise DecodeError(
                f"{index.path}: decoding frames {_short(wanted)} failed: {type(e).__name__}: {e}"
            ) from e
        out = [] if on_frame is not None else [got[i] for i in wanted]
        return DecodeResult(out, self.frames_decoded - before)

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield frames ``start…n_frames-1`` decoding forward once, on a container of its own."""
        start = index.check_frame(start)
        container = open_container(index.path)
        try:
            stream = self._stream_of(container, index)
            self._configure(stream)
            convert = self._converter(index)
            expected = start
            if not index.timestamps_ok:
                for count, frame in enumerate(survive_new_streams(container.decode(stream))):
                    self.frames_decoded += 1
                    if count >= start:
                        yield self._to_tensor(frame, size, index, count, convert)
                        expected += 1
            else:
                f = _OpenFile(container, stream, convert)
                key = int(index.seek_key[start])
                for frame in self._frames_from_key(f, index, key):
                    i = index.frame_of_pts(frame.pts) if frame.pts is not None else None
                    if i is None or i < expected:
                        continue
                    if i != expected:
                        raise DecodeError(
                            f"{index.path}: frame {expected} never came out of the "
                            f"decoder (got frame {i} instead)"
                        )
                    yield self._to_tensor(frame, size, index, i, convert)
                    expected += 1
            if expected != index.n_frames:
                raise DecodeError(
                    f"{index.path}: the decoder stopped at frame {expected} of {index.n_frames}"
                )
        except (av.FFmpegError, DecodeError) as e:
            if (error := source_error(container)) is not None:
                raise error from e  # a failed remote read that FFmpeg reported its own way
            if isinstance(e, DecodeError):
                raise
            raise DecodeError(
                f"{index.path}: decoding from frame {start} failed at frame "
                f"{expected}: {type(e).__name__}: {e}"
            ) from e
        finally:
            container.close()

    def close(self) -> None:
        """Close every open container; safe to call twice."""
        while self._files:
            _, f = self._files.popitem(last=False)
            _close_quietly(f.container)

    @property
    def open_files(self) -> int:
        """Number of containers currently open."""
        return len(self._files)

    # ------------------------------------------------------------------------ internals

    def _configure(self, stream: Any) -> None:
        stream.thread_type = self.thread_type
        stream.codec_context.thread_count = self.threads

    def _open(self, index: VideoIndex) -> _OpenFile:
        f = self._files.get(index.path)
        if f is not None:
            self._files.move_to_end(index.path)
            return f
        container = open_container(index.path)
        try:
            stream = self._stream_of(container, index)
            self._configure(stream)
        except BaseException:
            container.close()
            raise
        f = _OpenFile(container, stream, self._converter(index))
        self._files[index.path] = f
        while len(self._files) > self.max_open_files:
            _, old = self._files.popitem(last=False)
            _close_quietly(old.container)
        return f

    @staticmethod
    def _stream_of(container: Any, index: VideoIndex) -> Any:
        """The indexed stream (``index.stream_index``), checked to still be video."""
        streams = container.streams
        if index.stream_index >= len(streams) or streams[index.stream_index].type != "video":
            raise DecodeError(
                f"{index.path}: stream {index.stream_index} is not video; the "
                f"file changed since it was indexed"
            )
        return streams[index.stream_index]

    def _converter(self, index: VideoIndex) -> FrameConverter:
        return FrameConverter(index.turns, index.mirror, self.interpolation)

    def _forget(self, path: str) -> None:
        f = self._files.pop(path, None)
        if f is not None:
            _close_quietly(f.container)

    def _to_tensor(
        self,
        frame: Any,
        size: tuple[int, int] | None,
        index: VideoIndex,
        i: int,
        convert: FrameConverter,
    ) -> torch.Tensor:
        size = self._check_frame(frame, size, index, i)
        return torch.from_numpy(convert(frame, size)).permute(2, 0, 1)

    def _check_frame(
        self, frame: Any, size: tuple[int, int] | None, index: VideoIndex, i: int
    ) -> tuple[int, int] | None:
        """Warn once per file about a damaged frame; the output size for this frame.

        A frame whose size differs from the stream's declared size (a resolution change
        mid-stream) is scaled to the declared size, so that every frame of a file has one shape.
        """
        if getattr(frame, "is_corrupt", False) and (index.path, "damaged") not in self._warned:
            self._warned.add((index.path, "damaged"))
            log.warning(
                "%s: frame %d was decoded from damaged data (FFmpeg concealed the errors; it may "
                "show artefacts); further damaged frames of this file are not reported",
                index.path,
                i,
            )
        declared = (index.width, index.height)  # displayed (after the turn)
        coded = (index.coded_width, index.coded_height)
        if size is None and min(coded) > 0 and (frame.width, frame.height) != coded:
            if (index.path, "size") not in self._warned:
                self._warned.add((index.path, "size"))
                log.warning(
                    "%s: the resolution changes mid-stream: frame %d is %dx%d, the stream "
                    "declares %dx%d; such frames are scaled to %dx%d",
                    index.path,
                    i,
                    frame.width,
                    frame.height,
                    *coded,
                    *declared,
                )
            return declared
        return size

    def _packets_from_key(self, f: _OpenFile, index: VideoIndex, key: int) -> Iterator[Any]:
        """Seek and yield the stream's packets starting exactly at keyframe entry ``key``."""
        if not f.pos_of_pts:
            f.pos_of_pts = pts_positions(index)
        f.stream.codec_context.flush_buffers()  # nothing of the previous run leaks into this one
        return packets_from_key(f.container, f.stream, index, key, f.pos_of_pts)

    def _expect_bytes(self, f: _OpenFile, index: VideoIndex, key: int, wanted: set[int]) -> None:
        """Announce this run's byte range to a remote source (:func:`job_byte_range`)."""
        source = remote_of(f.container)
        if source is not None:
            source.error = None
            if not f.pos_of_pts:
                f.pos_of_pts = pts_positions(index)
            threads = f.stream.codec_context.thread_count
            span = job_byte_range(index, key, wanted, f.pos_of_pts, threads)
            if span is not None:
                source.expect(*span)

    def _frames_from_key(
        self, f: _OpenFile, index: VideoIndex, key: int, wanted: set[int] | None = None
    ) -> Iterator[Any]:
        """Decoded frames from keyframe entry ``key`` on (``wanted``: see ``decode_packets``)."""
        packets = self._packets_from_key(f, index, key)
        frames = decode_packets(f.stream.codec_context, packets, index, wanted)
        try:
            for frame in frames:
                self.frames_decoded += 1
                yield frame
        finally:
            frames.close()  # type: ignore[attr-defined]

    def _decode_run(
        self,
        f: _OpenFile,
        index: VideoIndex,
        key: int,
        run: list[int],
        got: dict[int, torch.Tensor],
        size: tuple[int, int] | None,
    ) -> None:
        remaining = {i for i in run if i not in got}
        # skipping first; again without, should a decoder have lost a wanted frame by it
        for skip in (True, False) if self.skip_unwanted else (False,):
            if not remaining:
                return
            last = max(remaining)
            self._expect_bytes(f, index, key, remaining)
            frames = self._frames_from_key(f, index, key, set(remaining) if skip else None)
            try:
                for frame in frames:
                    i = index.frame_of_pts(frame.pts) if frame.pts is not None else None
                    if i is None:
                        continue
                    if i in remaining:
                        got[i] = self._to_tensor(frame, size, index, i, f.convert)
                        remaining.discard(i)
                        if not remaining:
                            return
                    elif i > last:  # output is in presentation order: the rest will not come
                        break
            finally:
                frames.close()  # type: ignore[attr-defined]
        raise DecodeError(
            f"{index.path}: frames {_short(sorted(remaining))} never came out of "
            f"the decoder (decoding from keyframe {key})"
        )

    def _decode_sequential(
        self,
        f: _OpenFile,
        index: VideoIndex,
        wanted: list[int],
        got: dict[int, torch.Tensor],
        size: tuple[int, int] | None,
    ) -> None:
        """No timestamps: count frames decoding forward, reopening when asked to go back."""
        if f.sequential is None or wanted[0] < f.next_frame:
            if f.sequential is not None:  # raw streams cannot seek: start again from byte 0
                self._forget(index.path)
                f = self._open(index)
            f.sequential = survive_new_streams(f.container.decode(f.stream))
            f.next_frame = 0
        assert f.sequential is not None
        remaining = set(wanted)
        for frame in f.sequential:
            i = f.next_frame
            f.next_frame += 1
            self.frames_decoded += 1
            if i in remaining:
                got[i] = self._to_tensor(frame, size, index, i, f.convert)
                remaining.discard(i)
                if not remaining:
                    return
        f.sequential = None
        raise DecodeError(
            f"{index.path}: the stream ended before frames {_short(sorted(remaining))}"
        )


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except Exception as e:  # closing must never mask the error being handled
        log.debug("closing %s failed: %s", container, e)

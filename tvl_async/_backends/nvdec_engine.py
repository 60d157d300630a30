"""Packet feeding and frame selection over any hardware decoder: the NVDEC backend's engine.

:class:`Engine` decodes exactly the frames asked for, in the order asked (duplicates included),
from a :class:`FrameDecoder`: it groups frames into runs by their keyframe (``plan_runs``), feeds
packets from :class:`~tvl_async._backends.nvdec_packets.PacketSource`, maps each output frame's
pts to our frame index, converts only the wanted ones, stops feeding once a run is complete and
flushes the decoder so nothing leaks into the next run. It is device-agnostic: the NVDEC backend
gives it PyNvVideoCodec decoders, the CPU tests give it FFmpeg's software decoders. One thread
at a time (the decoder's owner); blocks on file I/O and decoding.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch

from tvl_async._backends.base import READ_MODES, DecodeResult, ReadMode, plan_runs
from tvl_async._backends.nvdec_packets import EncodedPacket, PacketSource
from tvl_async._checks import invalid_value
from tvl_async._errors import DecodeError, TvlAsyncError, UnsupportedCodecError, short_list
from tvl_async._index import VideoIndex

# Guard on end-of-stream flush calls per drain (NVDEC empties itself in one call).
MAX_FLUSH_CALLS = 64


class FrameDecoder(Protocol):
    """What :class:`Engine` needs from a hardware decoder (NVDEC, or a stand-in in tests).

    ``feed`` and ``flush`` return ``(pts, frame)`` pairs in display order; a frame stays valid
    only until the next ``feed``/``flush`` (NVDEC reuses its output buffers), so the engine converts
    the frames it keeps with ``to_rgb`` right away.
    """

    dirty: bool

    def feed(self, packet: EncodedPacket) -> list[tuple[int, Any]]:
        """Decode one packet; returns the frames that became ready."""
        ...

    def flush(self) -> list[tuple[int, Any]]:
        """End of stream: return frames still inside (the engine calls it until it returns
        none); the decoder then accepts a new stream."""
        ...

    def to_rgb(self, frame: Any, index: VideoIndex, size: tuple[int, int] | None) -> torch.Tensor:
        """Convert one output frame to a new ``[3, H, W]`` uint8 tensor."""
        ...

    def close(self) -> None:
        """Release the decoder."""
        ...


DecoderFor = Callable[[VideoIndex, bool], FrameDecoder]


class Engine:
    """Packet feeding and frame selection over any :class:`FrameDecoder`; device-agnostic.

    Args:
        decoder_for: ``(index, dedicated)`` -> decoder for that file; ``dedicated`` asks for a
            decoder of its own (for :meth:`stream`), which the engine closes when done.
        scope: context manager entered around every decoder call and conversion (the CUDA stream).
        deliver: called with frames before they are handed to the caller (stream handoff).
        retire: called with a dedicated decoder when a stream ends (may run in another thread
            when a generator is garbage-collected, so it must only queue the decoder).
        max_open_files: demuxers kept open, least recently used closed first.
    """

    def __init__(
        self,
        decoder_for: DecoderFor,
        *,
        scope: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
        deliver: Callable[[Sequence[torch.Tensor]], None] | None = None,
        retire: Callable[[FrameDecoder], None] | None = None,
        max_open_files: int = 16,
    ) -> None:
        if max_open_files < 1:
            raise invalid_value("max_open_files", max_open_files, "integers >= 1")
        self._decoder_for = decoder_for
        self._scope = scope
        self._deliver = deliver or (lambda frames: None)  # noqa: ARG005 (deliver's signature)
        self._retire = retire or (lambda dec: dec.close())
        self.max_open_files = max_open_files
        self.frames_decoded = 0
        self._sources: OrderedDict[str, PacketSource] = OrderedDict()

    # -------------------------------------------------------------------- public

    def decode(
        self,
        index: VideoIndex,
        frames: Sequence[int],
        *,
        size: tuple[int, int] | None = None,
        mode: ReadMode = "auto",
    ) -> DecodeResult:
        """See :meth:`tvl_async._backends.base.Backend.decode`."""
        if mode not in READ_MODES:
            raise invalid_value("read mode", mode, READ_MODES, file=index.path)
        wanted = [index.check_frame(i) for i in frames]
        if not wanted:
            return DecodeResult([], 0)
        if not index.timestamps_ok:
            raise UnsupportedCodecError(
                f"{index.path}: the stream has no usable timestamps, so NVDEC output cannot be "
                f"matched to frames; decode this file on the CPU (backend='pyav')"
            )
        got: dict[int, torch.Tensor] = {}
        before = self.frames_decoded
        src = self._source(index)
        dec = self._decoder_for(index, False)
        try:
            for key, run in plan_runs(index, wanted, mode):
                self._decode_run(src, dec, index, key, run, got, size)
        except UnsupportedCodecError as e:  # the decoder refused the stream when it met it
            self._forget(index.path)
            raise _refused(index, e) from e
        except (TvlAsyncError, torch.cuda.OutOfMemoryError):
            self._forget(index.path)
            raise
        except Exception as e:  # FFmpeg, PyNvVideoCodec (PyNvVCException) or CUDA errors
            self._forget(index.path)
            raise DecodeError(
                f"{index.path}: decoding frames {short(wanted)} failed: {type(e).__name__}: {e}"
            ) from e
        out = [got[i] for i in wanted]
        self._deliver(out)
        return DecodeResult(out, self.frames_decoded - before)

    def stream(
        self, index: VideoIndex, start: int = 0, *, size: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield frames ``start…n_frames-1`` decoding forward once, with a decoder of its own."""
        start = index.check_frame(start)
        if not index.timestamps_ok:
            raise UnsupportedCodecError(
                f"{index.path}: the stream has no usable timestamps; decode it on the CPU"
            )
        src = PacketSource(index)
        dec: FrameDecoder | None = None
        expected = start
        try:
            dec = self._decoder_for(index, True)
            packets = src.packets_from(int(index.seek_key[start]))
            flushes = 0
            done = False
            while not done:
                with self._scope():
                    pkt = next(packets, None) if flushes == 0 else None
                    if pkt is not None:
                        outs = dec.feed(pkt)
                        dec.dirty = True
                    else:  # end of stream: drain (converting between calls)
                        outs = dec.flush()
                        flushes += 1
                        done = not outs or flushes >= MAX_FLUSH_CALLS
                        dec.dirty = not done
                    ready: list[torch.Tensor] = []
                    for pts, frame in outs:
                        self.frames_decoded += 1
                        i = index.frame_of_pts(pts)
                        if i is None or i < expected:
                            continue
                        if i != expected:
                            raise DecodeError(
                                f"{index.path}: frame {expected} never came out of the decoder "
                                f"(got frame {i} instead)"
                            )
                        ready.append(dec.to_rgb(frame, index, size))
                        expected += 1
                for t in ready:
                    self._deliver([t])
                    yield t
            if expected != index.n_frames:
                raise DecodeError(
                    f"{index.path}: the decoder stopped at frame {expected} of {index.n_frames}"
                )
        except UnsupportedCodecError as e:
            raise _refused(index, e) from e
        except (TvlAsyncError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as e:
            raise DecodeError(
                f"{index.path}: decoding from frame {start} failed at frame "
                f"{expected}: {type(e).__name__}: {e}"
            ) from e
        finally:
            src.close()
            if dec is not None:
                self._retire(dec)

    def close(self) -> None:
        """Close every demuxer; safe to call twice."""
        while self._sources:
            _, src = self._sources.popitem(last=False)
            src.close()

    @property
    def open_files(self) -> int:
        """Number of demuxers currently open."""
        return len(self._sources)

    # -------------------------------------------------------------------- internals

    def _source(self, index: VideoIndex) -> PacketSource:
        src = self._sources.get(index.path)
        if src is not None and src.index.mtime_ns == index.mtime_ns:
            self._sources.move_to_end(index.path)
            return src
        self._forget(index.path)
        src = PacketSource(index)
        self._sources[index.path] = src
        while len(self._sources) > self.max_open_files:
            _, old = self._sources.popitem(last=False)
            old.close()
        return src

    def _forget(self, path: str) -> None:
        src = self._sources.pop(path, None)
        if src is not None:
            src.close()

    def _settle(self, dec: FrameDecoder) -> None:
        """Flush and drop whatever an interrupted run left inside the decoder."""
        if dec.dirty:
            with self._scope():
                self._drain(dec, self._discard)

    def _discard(self, outs: list[tuple[int, Any]]) -> bool:
        self.frames_decoded += len(outs)
        return False

    def _drain(self, dec: FrameDecoder, take: Callable[[list[tuple[int, Any]]], bool]) -> None:
        """End of stream: ``flush`` until the decoder is empty, handing each batch to ``take``
        before the next call (the next call may reuse the previous frames' buffers)."""
        for _ in range(MAX_FLUSH_CALLS):
            outs = dec.flush()
            if not outs:
                break
            take(outs)
        dec.dirty = False

    def _decode_run(
        self,
        src: PacketSource,
        dec: FrameDecoder,
        index: VideoIndex,
        key: int,
        run: list[int],
        got: dict[int, torch.Tensor],
        size: tuple[int, int] | None,
    ) -> None:
        remaining = {i for i in run if i not in got}
        if not remaining:
            return
        last = max(remaining)
        self._settle(dec)

        def take(outs: list[tuple[int, Any]]) -> bool:
            """Keep wanted frames; True once nothing more can come for this run."""
            past = False
            for pts, frame in outs:
                self.frames_decoded += 1
                i = index.frame_of_pts(pts)
                if i is None:
                    continue
                if i in remaining:
                    got[i] = dec.to_rgb(frame, index, size)
                    remaining.discard(i)
                elif i > last:  # display order: the rest will not come
                    past = True
            return past or not remaining

        packets = src.packets_from(key)
        try:
            with self._scope():
                for pkt in packets:
                    dec.dirty = True
                    if take(dec.feed(pkt)):
                        break
                self._drain(dec, take)
        finally:
            packets.close()  # type: ignore[attr-defined]
            if dec.dirty:  # an error left frames inside: never let them leak into the next run
                with contextlib.suppress(Exception):
                    self._settle(dec)
        if remaining:
            raise DecodeError(
                f"{index.path}: frames {short(sorted(remaining))} never came out "
                f"of the decoder (decoding from keyframe {key})"
            )


def _refused(index: VideoIndex, error: UnsupportedCodecError) -> UnsupportedCodecError:
    """``error`` naming the file and the way out (the CPU), once."""
    text = str(error)
    if not text.startswith(index.path):
        text = f"{index.path}: {text}; decode it on the CPU (backend='pyav')"
    return UnsupportedCodecError(text)


short = short_list  # the name nvdec.py re-exports

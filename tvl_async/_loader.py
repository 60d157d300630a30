"""``VideoLoader``: random and sequential access to the frames of one file (TVL's API).

Frames come back as ``[3, H, W]`` RGB tensors on ``device``: uint8 in 0–255, or a float dtype in
[0, 1]. Random access goes through the index (frame-exact on every container); sequential reading
(``read_frame``, ``remaining_frames``) decodes forward without seeking.

A VideoLoader may be shared between threads: every call holds the loader's lock while it
decodes, so calls from several threads are serialised (safe, not parallel; open one loader per
thread for parallel decoding). Generators hold the lock only while they decode, not between
frames. All calls block while decoding.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, get_args

import torch

from tvl_async._backends import create_backend, resolve_backend
from tvl_async._backends.base import READ_MODES, Backend, ReadMode
from tvl_async._checks import invalid_type, invalid_value
from tvl_async._distributed import resolve_device
from tvl_async._errors import BackendUnavailableError, DecodeError
from tvl_async._index import INDEX_TIMEOUT, VideoIndex, load_indexes
from tvl_async._source import remember_options, source_name

DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
Layout = Literal["TCHW", "THWC"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
CHUNK = 32  # frames decoded per request chunk in select_frames: bounds memory for long lists


class VideoLoader:
    """Frame-exact access to one video file.

    Args:
        path: the video file.
        device: where returned tensors live (``"cpu"``, ``"cuda:0"``...).
        dtype: ``torch.uint8`` (0–255) or a float dtype (values in [0, 1]).
        backend: ``"auto"`` (NVDEC on a CUDA device when available, else PyAV), ``"pyav"`` or
            ``"nvdec"``.
        stream_index: the video stream to read, as an index among all the file's streams
            (``ffprobe``'s numbering); None: ffmpeg's best video stream (the one ``ffmpeg``
            and players pick).
        autorotate: frames come out as a player shows them: the display matrix (phone video's
            "rotate 90", mirrors) is applied, and :attr:`width`/:attr:`height` are the
            displayed size (as ffmpeg's ``-autorotate``, on by default). False: frames as
            stored.
        storage_options: fsspec options for a URL ``path`` (credentials, an endpoint).
        index_timeout: seconds indexing the file may take before ``TimeoutError`` (None: no
            limit).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the path cannot be read.
        VideoOpenError: the file is not a readable video, or not a regular file (a FIFO or
            device is refused without opening it); subclasses name the cause.
        ValueError: ``stream_index`` is not a video stream (the video streams are listed).
        TimeoutError: indexing took longer than ``index_timeout``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.uint8,
        *,
        backend: str = "auto",
        stream_index: int | None = None,
        autorotate: bool = True,
        index_timeout: float | None = INDEX_TIMEOUT,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        path = source_name(path)
        remember_options(path, storage_options)
        if dtype not in DTYPES:
            names = ", ".join(str(d).replace("torch.", "") for d in DTYPES)
            raise invalid_value("dtype", dtype, names)
        self.device = resolve_device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"{os.fspath(path)}: device '{self.device}' asked for, but PyTorch sees no CUDA "
                f"device (torch.cuda.is_available() is False; torch {torch.__version__})"
            )
        self.dtype = dtype
        self.backend_name = resolve_backend(backend, self.device)
        if not isinstance(autorotate, bool):
            raise invalid_type("autorotate", autorotate, "True, False")
        found = load_indexes(
            [path],
            stream_index=stream_index,
            autorotate=autorotate,
            timeout=index_timeout,
            workers=1,
        )[0]
        assert isinstance(found, VideoIndex)  # on_error="raise" raised otherwise
        self._index = found
        self._backend: Backend | None = create_backend(self.backend_name, self.device)
        self._lock = threading.RLock()
        self._position = 0
        self._reader: Iterator[torch.Tensor] | None = None
        self._reader_next = -1

    # ------------------------------------------------------------------------ properties

    @property
    def path(self) -> str:
        """Absolute path of the file."""
        return self._index.path

    @property
    def index(self) -> VideoIndex:
        """The file's frame index."""
        return self._index

    @property
    def n_frames(self) -> int:
        """Exact number of frames a player shows."""
        return self._index.n_frames

    @property
    def frame_rate(self) -> float:
        """Average frames per second."""
        return self._index.frame_rate

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self._index.duration

    @property
    def width(self) -> int:
        """Frame width in pixels (displayed, after the display matrix, unless autorotate is
        off)."""
        return self._index.width

    @property
    def height(self) -> int:
        """Frame height in pixels (displayed, as :attr:`width`)."""
        return self._index.height

    @property
    def rotation(self) -> int:
        """Counter-clockwise degrees (0, 90, 180, 270) the file's display matrix turns the
        picture by for display, as ``ffprobe`` reports it; applied unless ``autorotate=False``."""
        return self._index.rotation

    @property
    def mirrored(self) -> bool:
        """The display matrix also mirrors the picture left-right (after the turn)."""
        return self._index.mirrored

    @property
    def stream_index(self) -> int:
        """Index of the video stream read, among all the file's streams."""
        return self._index.stream_index

    @property
    def timestamps(self) -> torch.Tensor:
        """``[n_frames]`` float64 presentation time of each frame in seconds."""
        return torch.from_numpy(self._index.times.copy())

    def frame_time(self, i: int) -> float:
        """Presentation time of frame ``i`` in seconds."""
        return float(self._index.times[self._index.check_frame(i)])

    # ------------------------------------------------------------------------ random access

    def select_frames(self, indices: Iterable[int]) -> Iterator[torch.Tensor]:
        """Yield the frames at ``indices`` in the order asked, duplicates included.

        Indices are checked before anything is decoded (``IndexError`` names the file and the
        valid range). Decodes in chunks of 32 requested frames, each grouped by GOP.
        """
        wanted = [self._index.check_frame(i) for i in indices]
        for start in range(0, len(wanted), CHUNK):
            yield from self._decode(wanted[start : start + CHUNK], "auto")

    def select_frame(self, i: int) -> torch.Tensor:
        """The frame at index ``i`` (negative counts from the end)."""
        return self._decode([self._index.check_frame(i)], "auto")[0]

    def read_frames_at(
        self, indices: Sequence[int], layout: Layout = "TCHW", mode: ReadMode = "auto"
    ) -> torch.Tensor:
        """The frames at ``indices`` stacked into one tensor.

        Args:
            indices: frame indices, any order, duplicates allowed.
            layout: ``"TCHW"`` (``[T, 3, H, W]``) or ``"THWC"`` (``[T, H, W, 3]``).
            mode: ``"auto"`` (one seek per GOP run), ``"seek"`` (one seek per frame) or
                ``"stream"`` (decode the whole range once).
        """
        order = layout.upper()  # "tchw" is taken too
        if order not in LAYOUTS:
            raise invalid_value("layout", order, LAYOUTS, file=self.path)
        if mode not in READ_MODES:
            raise invalid_value("read mode", mode, READ_MODES, file=self.path)
        wanted = [self._index.check_frame(i) for i in indices]
        if not wanted:
            shape = (
                (0, 3, self.height, self.width)
                if order == "TCHW"
                else (0, self.height, self.width, 3)
            )
            return torch.empty(shape, dtype=self.dtype, device=self.device)
        frames = torch.stack(self._decode(wanted, mode))
        return frames.permute(0, 2, 3, 1).contiguous() if order == "THWC" else frames

    # ------------------------------------------------------------------------ sequential access

    def seek(self, seconds: float) -> None:
        """Move the read position to the frame shown at ``seconds`` (presentation time, as
        :attr:`timestamps`; clamped to the file)."""
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise invalid_type("seek time", seconds, "numbers of seconds", file=self.path)
        if math.isnan(float(seconds)):
            raise invalid_value(
                "seek time", seconds, "numbers of seconds (not nan)", file=self.path
            )
        self.seek_to_frame(self._index.frame_at_time(float(seconds)))

    def seek_to_frame(self, i: int) -> None:
        """Move the read position to frame ``i``."""
        with self._lock:
            self._position = self._index.check_frame(i)

    def tell(self) -> int:
        """Index of the frame the next ``read_frame`` returns."""
        return self._position

    def read_frame(self) -> torch.Tensor:
        """The frame at the read position, then advance; ``EOFError`` after the last frame."""
        with self._lock:
            if self._position >= self.n_frames:
                raise EOFError(f"{self.path}: end of video after frame {self.n_frames - 1}")
            backend = self._require_backend()
            if self._reader is None or self._reader_next != self._position:
                self._stop_reader()
                self._reader = backend.stream(self._index, self._position)
                self._reader_next = self._position
            try:
                frame = next(self._reader)
            except StopIteration:
                self._stop_reader()
                raise DecodeError(
                    f"{self.path}: the decoder ended before frame "
                    f"{self._position} of {self.n_frames}; the file may have "
                    f"changed since it was indexed"
                ) from None
            except BaseException:  # the reader is dead: the next call starts a fresh one
                self._stop_reader()
                raise
            self._reader_next += 1
            self._position += 1
            return self._convert(frame)

    def read_frames(self, n: int) -> torch.Tensor:
        """Up to ``n`` frames from the read position, stacked ``[T, 3, H, W]``; EOFError if none."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise invalid_type("read_frames n", n, "integers >= 1", file=self.path)
        if n < 1:
            raise invalid_value("read_frames n", n, "integers >= 1", file=self.path)
        frames = [self.read_frame()]
        while len(frames) < n and self._position < self.n_frames:
            frames.append(self.read_frame())
        return torch.stack(frames)

    def remaining_frames(self) -> Iterator[torch.Tensor]:
        """Yield frames from the read position to the end, advancing it."""
        while self._position < self.n_frames:
            yield self.read_frame()

    def read_all_frames(self) -> Iterator[torch.Tensor]:
        """Yield every frame from the first to the last (moves the read position)."""
        self.seek_to_frame(0)
        yield from self.remaining_frames()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.read_all_frames()

    def __len__(self) -> int:
        return self.n_frames

    # ------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the decoder and open files; safe to call twice."""
        with self._lock:
            self._stop_reader()
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def __enter__(self) -> VideoLoader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (
            f"VideoLoader({self.path!r}, {self.width}x{self.height}, {self.n_frames} frames, "
            f"{self.frame_rate:.3f} fps, backend={self.backend_name!r}, device='{self.device}')"
        )

    # ------------------------------------------------------------------------ internals

    def _require_backend(self) -> Backend:
        if self._backend is None:
            raise ValueError(f"{self.path}: the VideoLoader is closed")
        return self._backend

    def _stop_reader(self) -> None:
        if self._reader is not None:
            close = getattr(self._reader, "close", None)
            if close is not None:
                close()
            self._reader = None

    def _decode(self, wanted: list[int], mode: ReadMode) -> list[torch.Tensor]:
        with self._lock:
            result = self._require_backend().decode(self._index, wanted, mode=mode)
        return [self._convert(f) for f in result.frames]

    def _convert(self, frame: torch.Tensor) -> torch.Tensor:
        frame = frame.to(self.device, non_blocking=True)
        if self.dtype == torch.uint8:
            return frame.contiguous()
        return frame.to(self.dtype).div_(255.0)

"""The NVDEC backend's logic on the CPU, with stand-ins for PyNvVideoCodec and the GPU.

Three levels of stand-in:

* ``PyAVDecoder``: a :class:`FrameDecoder` that decodes the engine's packets with FFmpeg's
  software decoders. Because it sees exactly the bytes NVDEC would (Annex B after the bitstream
  filter, sequence headers in front of AV1 keyframes), correct pixels prove the demuxing, the
  seeking and the frame selection.
* ``ScriptedDecoder``: a pure-Python decoder with a configurable reordering delay that can drop
  frames, for the engine's early stop, flushing and error paths.
* ``fake_nvc`` + ``emulated_backend``: a fake ``PyNvVideoCodec`` module (``CreateDecoder``,
  ``PacketData``, ``Decode`` reading the packet through its raw pointer) under the real
  :class:`NvdecBackend`, with ``torch.cuda`` stream calls stubbed out, so the backend's decoder
  cache, reconfiguration and NV12/P016 conversion run end to end.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest
import torch
from conftest import Video

from tvl_async._backends import nvdec, nvdec_packets, nvdec_support
from tvl_async._backends.nvdec import (
    EncodedPacket,
    Engine,
    NvdecBackend,
    PacketSource,
    av1_has_sequence_header,
    caps_unsupported_reason,
    plan_runs,
    static_unsupported_reason,
)
from tvl_async._errors import BackendUnavailableError, DecodeError, UnsupportedCodecError
from tvl_async._index import VideoIndex, load_index
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, write_video

# FFmpeg software decoders standing in for NVDEC, by cudaVideoCodec name.
SOFTWARE = {
    "H264": "h264",
    "HEVC": "hevc",
    "VP9": "vp9",
    "AV1": "libdav1d",
    "VP8": "vp8",
    "MPEG2": "mpeg2video",
    "MPEG1": "mpeg1video",
}


def indices_of(frames: list[torch.Tensor]) -> list[int]:
    return [frame_index_of(f) for f in frames]


def colourful(height: int, width: int, k: int = 0) -> np.ndarray:
    """A smooth, saturated ``[H, W, 3]`` uint8 image; ``k`` moves the pattern."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack(
        [
            128 + 110 * np.sin(xs / 11 + ys / 23 + k / 5),
            128 + 110 * np.cos(ys / 9 - k / 7),
            128 + 110 * np.sin((xs - ys) / 17 + k / 3),
        ],
        axis=-1,
    )
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# (encoder, pixel format, matrix, full range): colour files exercising every matrix and range.
COLOUR_SPECS = [
    ("libx264", "yuv420p", "bt709", False),
    ("libx264", "yuv420p", "bt601", True),
    ("libx265", "yuv420p10le", "bt709", False),
    ("libvpx-vp9", "yuv420p", "bt601", False),
    ("libsvtav1", "yuv420p", "bt709", True),
    ("libx265", "yuv420p10le", "bt2020", False),
    ("libx265", "yuv420p10le", "bt2020", True),
    ("libx264", "yuv420p", "smpte240m", False),
    ("libx264", "yuv420p", "fcc", True),
]
# matrix -> (AVColorSpace code the file is tagged with, libswscale's name for the matrix)
COLOUR_TAGS = {
    "bt709": (1, "itu709"),
    "bt601": (6, "itu601"),
    "bt2020": (9, "bt2020"),
    "smpte240m": (7, "smpte240m"),
    "fcc": (4, "fcc"),
}


def write_colour_video(
    path: Path,
    codec: str,
    pix_fmt: str,
    matrix: str,
    full: bool,
    *,
    n_frames: int = 12,
    width: int = 256,
    height: int = 192,
) -> Path:
    """Encode colourful frames tagged with ``matrix`` and range (the index reads the tags)."""
    options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25, options=options)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        code, sws = COLOUR_TAGS[matrix]
        s.codec_context.colorspace = code
        s.codec_context.color_range = 2 if full else 1
        for k in range(n_frames):
            f = av.VideoFrame.from_ndarray(colourful(height, width, k), format="rgb24")
            f = f.reformat(
                format=pix_fmt, dst_colorspace=sws, dst_color_range="JPEG" if full else "MPEG"
            )
            f.pts = k
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


# ----------------------------------------------------------------------------- stand-ins


class PyAVDecoder:
    """FrameDecoder over an FFmpeg software decoder fed with the engine's packets."""

    def __init__(self, index: VideoIndex) -> None:
        codec = nvdec.nvdec_codec(index)
        assert codec is not None
        self.ctx = av.CodecContext.create(SOFTWARE[codec], "r")
        self.dirty = False
        self.fed: list[int] = []
        self.flushes = 0
        self.closed = False

    def feed(self, packet: EncodedPacket) -> list[tuple[int, Any]]:
        self.fed.append(packet.pts)
        pkt = av.Packet(packet.data.tobytes())
        pkt.pts = packet.pts
        return [(f.pts, f) for f in self.ctx.decode(pkt)]

    def flush(self) -> list[tuple[int, Any]]:
        self.flushes += 1
        out = [(f.pts, f) for f in self.ctx.decode(None)]
        self.ctx.flush_buffers()
        return out

    def to_rgb(self, frame: Any, index: VideoIndex, size: tuple[int, int] | None) -> torch.Tensor:
        return torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)

    def close(self) -> None:
        self.closed = True


class ScriptedDecoder:
    """Display-order decoder with ``delay`` frames of latency; never outputs ``drop`` pts.

    Like NVDEC, a frame is only valid until the next ``feed``/``flush`` call (``to_rgb`` checks
    it); ``flush_chunk`` limits how many frames one end-of-stream call returns.
    """

    def __init__(
        self, delay: int = 3, drop: set[int] | None = None, flush_chunk: int | None = None
    ) -> None:
        self.delay = delay
        self.drop = drop or set()
        self.flush_chunk = flush_chunk
        self.pending: list[int] = []
        self.dirty = False
        self.feeds = 0
        self.flushes = 0
        self.generation = 0
        self.closed = False
        self.fail_on_convert: int | None = None

    def _out(self, pts: list[int]) -> list[tuple[int, Any]]:
        self.generation += 1
        return [(p, (p, self.generation)) for p in pts if p not in self.drop]

    def feed(self, packet: EncodedPacket) -> list[tuple[int, Any]]:
        self.feeds += 1
        self.pending.append(packet.pts)
        out = []
        while len(self.pending) > self.delay:
            out.append(self._pop())
        return self._out(out)

    def _pop(self) -> int:
        p = min(self.pending)
        self.pending.remove(p)
        return p

    def flush(self) -> list[tuple[int, Any]]:
        self.flushes += 1
        n = len(self.pending)
        if self.flush_chunk is not None:
            n = min(n, self.flush_chunk)
        return self._out([self._pop() for _ in range(n)])

    def to_rgb(self, frame: Any, index: VideoIndex, size: tuple[int, int] | None) -> torch.Tensor:
        pts, generation = frame
        assert generation == self.generation, "frame used after its buffer was reused"
        i = index.frame_of_pts(pts)
        assert i is not None
        if self.fail_on_convert == i:
            self.fail_on_convert = None
            raise RuntimeError("conversion failed")
        return torch.full((1, 1, 1), i, dtype=torch.int64)

    def close(self) -> None:
        self.closed = True


def engine_with(make: Any) -> tuple[Engine, list[Any]]:
    made: list[Any] = []

    def decoder_for(index: VideoIndex, dedicated: bool) -> Any:
        if dedicated or not made:
            made.append(make(index))
        return made[-1]

    return Engine(decoder_for), made


@pytest.fixture(scope="module")
def big_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Video]:
    """Files large enough for NVDEC's minimum sizes (HEVC 144x144, VP9/AV1 128x128)."""
    root = tmp_path_factory.mktemp("nvdec_videos")
    specs = {
        "h264": ("h264.mp4", VideoSpec(codec="libx264", n_frames=36, bframes=3, gop=12)),
        "h264_big": (
            "h264_big.mkv",
            VideoSpec(codec="libx264", n_frames=24, width=320, height=240, gop=8),
        ),
        "hevc": (
            "hevc.mp4",
            VideoSpec(codec="libx265", n_frames=36, width=256, height=192, bframes=3, gop=12),
        ),
        "hevc10": (
            "hevc10.mkv",
            VideoSpec(
                codec="libx265", n_frames=24, width=256, height=192, pix_fmt="yuv420p10le", gop=8
            ),
        ),
        "vp9": (
            "vp9.webm",
            VideoSpec(codec="libvpx-vp9", n_frames=36, width=256, height=192, gop=12),
        ),
        "av1": (
            "av1.mkv",
            VideoSpec(codec="libsvtav1", n_frames=36, width=256, height=192, gop=12),
        ),
        "vp9_odd": (
            "vp9_odd.webm",
            VideoSpec(codec="libvpx-vp9", n_frames=24, width=257, height=193, gop=8),
        ),
    }
    return {k: Video(write_video(root / f, spec), spec.n_frames) for k, (f, spec) in specs.items()}


# ------------------------------------------------------------------ availability errors


def test_import_needs_neither_package_nor_gpu() -> None:
    importlib.reload(nvdec)
    import tvl_async  # noqa: F401


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module

    def fake_import(name: str, *a: Any) -> Any:
        if name == "PyNvVideoCodec":
            raise ImportError("No module named 'PyNvVideoCodec'")
        return real_import(name, *a)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BackendUnavailableError) as e:
        NvdecBackend("cuda:0")
    assert "pip install tvl-async[nvdec]" in str(e.value)
    assert "No module named 'PyNvVideoCodec'" in str(e.value)
    assert "no CUDA device" not in str(e.value)


def test_missing_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib,
        "import_module",
        lambda name, *a: (
            types.ModuleType(name) if name == "PyNvVideoCodec" else real_import(name, *a)
        ),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="no CUDA device is visible") as e:
        NvdecBackend("cuda")
    assert "pip install" not in str(e.value)


def test_this_machine_without_both() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match=r"pip install tvl-async\[nvdec\]"):
        NvdecBackend()


def test_missing_device_index_and_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = importlib.import_module
    monkeypatch.setattr(
        importlib,
        "import_module",
        lambda name, *a: (
            types.ModuleType(name) if name == "PyNvVideoCodec" else real_import(name, *a)
        ),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BackendUnavailableError, match=r"cuda:3 does not exist \(1 CUDA"):
        NvdecBackend("cuda:3")
    with pytest.raises(ValueError, match=r"Invalid device \('cpu'\).*CUDA device"):
        NvdecBackend("cpu")
    with pytest.raises(ValueError, match=r"Invalid max_decoders \(0\)"):
        NvdecBackend("cuda:0", max_decoders=0)


# ----------------------------------------------------------------------- support rules


def test_static_support_rules(videos: dict[str, Video], big_videos: dict[str, Video]) -> None:
    def reason(v: Video) -> str | None:
        return static_unsupported_reason(load_index(v.path))

    for name in ("h264_mp4", "h264_mkv", "h264_ts", "vfr_mp4", "edit_list_mp4", "odd_mp4"):
        assert reason(videos[name]) is None, name
    for name in ("h264", "hevc", "hevc10", "vp9", "av1"):
        assert reason(big_videos[name]) is None, name
    assert "mpeg4" in (reason(videos["mpeg4_avi"]) or "")
    assert "mjpeg" in (reason(videos["mjpeg_mov"]) or "")
    assert "up to 8 bits" in (reason(videos["h264_10bit_mkv"]) or "")
    assert "outside NVDEC's HEVC range 144x144" in (reason(videos["hevc_mp4"]) or "")
    assert "no usable timestamps" in (reason(videos["raw_h264"]) or "")


def test_caps_rules(big_videos: dict[str, Video]) -> None:
    index = load_index(big_videos["hevc"].path)  # 256x192
    ok = {
        "supported": 1,
        "width_min": 144,
        "height_min": 144,
        "width_max": 8192,
        "height_max": 8192,
        "mb_num_max": 1 << 20,
    }
    assert caps_unsupported_reason(index, ok) is None
    assert "no NVDEC support for HEVC" in (
        caps_unsupported_reason(index, {**ok, "supported": 0}) or ""
    )
    assert "range" in (caps_unsupported_reason(index, {**ok, "width_max": 200}) or "")
    assert "macroblocks" in (caps_unsupported_reason(index, {**ok, "mb_num_max": 10}) or "")


def test_av1_sequence_header_detection(big_videos: dict[str, Video]) -> None:
    with av.open(str(big_videos["av1"].path)) as c:
        s = c.streams.video[0]
        config = nvdec_packets._av1_config_obus(s.codec_context.extradata)
        assert config and av1_has_sequence_header(config)
        flags = [(p.is_keyframe, av1_has_sequence_header(bytes(p))) for p in c.demux(s) if p.size]
    assert all(has for key, has in flags if key)
    assert not all(has for key, has in flags if not key)
    assert not av1_has_sequence_header(b"\x12\x00")  # temporal delimiter only
    assert not av1_has_sequence_header(b"")


# ------------------------------------------------------------------------- demuxing


@pytest.mark.parametrize(
    "name",
    [
        "h264_mp4",
        "h264_mkv",
        "h264_ts",
        "vp9_webm",
        "av1_mkv",
        "hevc_mp4",
        "edit_list_mp4",
        "vfr_mp4",
        "start_mp4",
        "audio_first_mp4",
    ],
)
def test_packet_source_starts_exactly_at_each_keyframe(videos: dict[str, Video], name: str) -> None:
    index = load_index(videos[name].path)
    src = PacketSource(index)
    try:
        for key in [*range(index.n_keys), 0, index.n_keys - 1]:  # backwards jumps too
            pts = [p.pts for p in src.packets_from(key)]
            start = int(index.key_decode_pos[key])
            assert pts == [int(p) for p in index.packet_pts[start:]], (name, key)
            assert pts[0] == int(index.key_pts[key])
    finally:
        src.close()


def test_annexb_packets_for_h264_and_hevc(videos: dict[str, Video]) -> None:
    for name in ("h264_mp4", "h264_mkv", "hevc_mp4", "h264_ts"):
        index = load_index(videos[name].path)
        src = PacketSource(index)
        try:
            first = next(iter(src.packets_from(index.n_keys - 1)))
        finally:
            src.close()
        head = first.data[:4].tobytes()
        assert head in (b"\x00\x00\x00\x01",) or head[:3] == b"\x00\x00\x01", name


# ----------------------------------------------------------------- exact frames (engine)


@pytest.mark.parametrize(
    "name",
    [
        "h264_mp4",
        "h264_mkv",
        "h264_ts",
        "hevc_mp4",
        "vp9_webm",
        "av1_mkv",
        "vfr_mkv",
        "vfr_mp4",
        "start_mp4",
        "odd_mp4",
        "audio_first_mp4",
        "edit_list_mp4",
        "hevc_10bit_mkv",
    ],
)
def test_exact_frames_any_order(videos: dict[str, Video], name: str) -> None:
    v = videos[name]
    index = load_index(v.path)
    engine, _ = engine_with(PyAVDecoder)
    n = index.n_frames
    rng = np.random.default_rng(1)
    requests = [
        list(range(n)),
        list(reversed(range(n))),
        rng.permutation(n).tolist()[:20],
        [5, 5, 0, n - 1, 5, n - 1, 0],
        [n - 1],
    ]
    try:
        for wanted in requests:
            for mode in ("auto", "seek", "stream"):
                result = engine.decode(index, wanted, mode=mode)  # type: ignore[arg-type]
                got = [i - v.offset for i in indices_of(result.frames)]
                assert got == wanted, (name, mode, wanted)
                assert result.n_decoded >= len(set(wanted))
    finally:
        engine.close()


def test_auto_decodes_each_gop_once(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)
    engine, made = engine_with(PyAVDecoder)
    wanted = [1, 2, 3, 14, 15, 40]
    auto = engine.decode(index, wanted).n_decoded
    seek = engine.decode(index, wanted, mode="seek").n_decoded
    assert auto < seek
    assert made[0].flushes >= len(plan_runs(index, wanted, "auto")) + len(set(wanted))
    assert not made[0].dirty
    engine.close()


def test_size_is_passed_to_conversion(videos: dict[str, Video]) -> None:
    seen: list[Any] = []

    class Sized(PyAVDecoder):
        def to_rgb(
            self, frame: Any, index: VideoIndex, size: tuple[int, int] | None
        ) -> torch.Tensor:
            seen.append(size)
            return super().to_rgb(frame, index, size)

    engine, _ = engine_with(Sized)
    engine.decode(load_index(videos["h264_mp4"].path), [3], size=(64, 48))
    assert seen == [(64, 48)]


def test_out_of_range_and_bad_mode_name_the_file(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)
    engine, _ = engine_with(PyAVDecoder)
    with pytest.raises(IndexError, match=rf"{Path(index.path).name}: Invalid frame index \(48\)"):
        engine.decode(index, [0, 48])
    with pytest.raises(ValueError, match=r"Invalid read mode \('fast'\).*auto, seek, stream"):
        engine.decode(index, [0], mode="fast")  # type: ignore[arg-type]
    assert engine.decode(index, []).frames == []


def test_no_timestamps_is_unsupported(videos: dict[str, Video]) -> None:
    index = load_index(videos["raw_h264"].path)
    engine, _ = engine_with(PyAVDecoder)
    with pytest.raises(UnsupportedCodecError, match="no usable timestamps"):
        engine.decode(index, [0])


# ------------------------------------------------------------ engine behaviour (scripted)


def test_early_stop_and_reordering_delay(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)  # 48 frames, GOP 12
    engine, made = engine_with(lambda ix: ScriptedDecoder(delay=4))
    result = engine.decode(index, [2, 0, 2])
    dec = made[0]
    assert [int(t) for t in result.frames] == [2, 0, 2]
    assert result.frames[0] is result.frames[2]  # duplicates share the converted frame
    assert dec.feeds < 12  # stopped long before the end of the file
    assert dec.flushes == 2 and dec.pending == [] and not dec.dirty  # drained, then empty


def test_drain_converts_between_flush_calls(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)
    engine, made = engine_with(lambda ix: ScriptedDecoder(delay=6, flush_chunk=1))
    wanted = [40, 44, 47, 46]  # the last frames only come out of the end-of-stream flush
    assert [int(t) for t in engine.decode(index, wanted).frames] == wanted
    assert made[0].flushes >= 6 and not made[0].dirty
    stream = ScriptedDecoder(delay=6, flush_chunk=2)
    engine = Engine(lambda ix, dedicated: stream)
    assert [int(t) for t in engine.stream(index, 40)] == list(range(40, 48))


def test_missing_frame_is_a_decode_error(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)
    lost = int(index.pts[7])
    engine, _ = engine_with(lambda ix: ScriptedDecoder(delay=2, drop={lost}))
    with pytest.raises(DecodeError, match=r"frames \[7\] never came out of the decoder"):
        engine.decode(index, [6, 7, 8])
    assert [int(t) for t in engine.decode(index, [6, 8]).frames] == [6, 8]


def test_interrupted_run_leaves_no_frames_behind(videos: dict[str, Video]) -> None:
    index = load_index(videos["h264_mp4"].path)
    engine, made = engine_with(lambda ix: ScriptedDecoder(delay=3))
    made_dec = ScriptedDecoder(delay=3)
    made.append(made_dec)
    made_dec.fail_on_convert = 20
    with pytest.raises(DecodeError, match="conversion failed"):
        engine.decode(index, [18, 20, 30])
    assert made_dec.pending == [] and not made_dec.dirty
    assert [int(t) for t in engine.decode(index, [30, 18, 20]).frames] == [30, 18, 20]


def test_stream_yields_in_order_and_retires_its_decoder(videos: dict[str, Video]) -> None:
    v = videos["h264_mp4"]
    index = load_index(v.path)
    retired: list[Any] = []
    made: list[Any] = []

    def decoder_for(ix: VideoIndex, dedicated: bool) -> Any:
        assert dedicated
        made.append(PyAVDecoder(ix))
        return made[-1]

    engine = Engine(decoder_for, retire=retired.append)
    assert indices_of(list(engine.stream(index, 17))) == list(range(17, 48))
    assert retired == [made[0]]
    gen = engine.stream(index, 3)
    assert indices_of([next(gen), next(gen)]) == [3, 4]
    gen.close()  # abandoned early: the dedicated decoder is still handed back
    assert retired == made
    with pytest.raises(IndexError):
        list(engine.stream(index, 48))


# ------------------------------------------------ the real NvdecBackend on a fake module


class FakeFrame:
    """What PyNvDecoder.Decode returns (DecodedFrame), holding the software-decoded frame."""

    def __init__(self, frame: Any, ten_bit: bool) -> None:
        self.frame = frame
        self.format = types.SimpleNamespace(name="P016" if ten_bit else "NV12")

    def getPTS(self) -> int:
        return int(self.frame.pts)

    def GetPtrToPlane(self, i: int) -> int:
        return 0


class FakePyNvDecoder:
    """Behaves like PyNvVideoCodec's decoder: Decode(PacketData) reads ``bsl`` bytes at the raw
    address ``bsl_data``; an empty packet flushes (end of stream)."""

    def __init__(self, log: dict[str, list[Any]], **kw: Any) -> None:
        self.kw = kw
        self.log = log
        self.ctx = av.CodecContext.create(SOFTWARE[kw["codec"]], "r")
        self.size = (0, 0)
        log["create"].append(kw)

    def Decode(self, pd: Any) -> list[FakeFrame]:
        self.log["decode"].append(self.kw["codec"])
        if pd.bsl and self.kw["codec"] in self.log["reject"]:  # NVDEC meets the sequence header
            raise PyNvVCExceptionUnsupported(
                "Resolution not supported on this GPU (NvDecoder::HandleVideoSequence)"
            )
        if pd.bsl == 0:
            assert pd.bsl_data == 0 and pd.decode_flag == 0
            frames = list(self.ctx.decode(None))
            self.ctx.flush_buffers()
        else:
            pkt = av.Packet(ctypes.string_at(pd.bsl_data, pd.bsl))
            pkt.pts = pd.pts
            frames = list(self.ctx.decode(pkt))
        if frames:
            self.size = (frames[0].width, frames[0].height)
        return [FakeFrame(f, f.format.name.startswith("yuv420p10")) for f in frames]

    def setReconfigParams(self, width: int, height: int) -> None:
        self.log["reconfigure"].append((width, height))
        raise AssertionError("setReconfigParams leaks CUDA events per call: never call it")

    def GetWidth(self) -> int:
        return self.size[0] + self.size[0] % 2  # NvDecoder: 4:2:0 output rows have even length

    def GetHeight(self) -> int:
        return self.size[1]


class PyNvVCExceptionUnsupported(Exception):
    """Stands for PyNvVideoCodec's exception of that name."""


class EmulatedNvDecoder(nvdec._NvDecoder):
    """The real _NvDecoder, except the output surface comes from host memory, not a pointer."""

    closed: ClassVar[list[Any]] = []

    def _surface(self, frame: Any, rows: int, cols: int, fmt: str) -> torch.Tensor:
        f = frame.frame
        if fmt == "NV12":
            y, uv = (
                np.frombuffer(p, np.uint8).reshape(p.height, -1)
                for p in f.reformat(format="nv12").planes[:2]
            )
        else:
            y, uv = (
                np.frombuffer(p, np.uint16).reshape(p.height, -1)
                for p in f.reformat(format="p010le").planes[:2]
            )
        t = torch.from_numpy(np.concatenate([y[:, :cols], uv[:, :cols]]))
        assert t.shape[0] == rows
        return t if fmt == "NV12" else t.view(torch.int16)

    def close(self) -> None:
        EmulatedNvDecoder.closed.append(self)
        super().close()


class FakeStream:
    cuda_stream = 0

    def __init__(self, device: Any = None) -> None:
        self.syncs = 0

    def synchronize(self) -> None:
        self.syncs += 1


@pytest.fixture
def fake_nvc(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    log: dict[str, list[Any]] = {
        "create": [],
        "reconfigure": [],
        "caps": [],
        "decode": [],
        "reject": [],
    }

    class PacketData:
        def __init__(self) -> None:
            self.bsl_data = 0
            self.bsl = 0
            self.pts = 0
            self.decode_flag = 0

    def caps(**kw: Any) -> dict[str, int]:
        log["caps"].append(kw)
        return {
            "supported": 1,
            "width_min": 48,
            "height_min": 16,
            "width_max": 4096,
            "height_max": 4096,
            "mb_num_max": 1 << 20,
        }

    module = types.SimpleNamespace(
        cudaVideoCodec=types.SimpleNamespace(**{k: k for k in SOFTWARE}),
        OutputColorType=types.SimpleNamespace(NATIVE="NATIVE"),
        PacketData=PacketData,
        CreateDecoder=lambda **kw: FakePyNvDecoder(log, **kw),
        GetDecoderCaps=caps,
        PyNvVCExceptionUnsupported=PyNvVCExceptionUnsupported,
        log=log,
    )
    monkeypatch.setattr(nvdec_support, "_CAPS", {})  # a fresh process as far as caps go
    stream = FakeStream()
    monkeypatch.setattr(nvdec, "_load_pynvvideocodec", lambda device: module)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(NvdecBackend, "_decoder_class", EmulatedNvDecoder)
    EmulatedNvDecoder.closed = []
    yield module


@pytest.mark.parametrize("name", ["h264", "hevc", "hevc10", "vp9", "av1", "vp9_odd"])
def test_emulated_backend_exact_frames(
    fake_nvc: Any, big_videos: dict[str, Video], name: str
) -> None:
    index = load_index(big_videos[name].path)
    backend = NvdecBackend("cuda:0")
    n = index.n_frames
    try:
        assert backend.supports(index) is True
        for wanted in ([n - 1, 0, 7, 7, n // 2], list(reversed(range(n)))):
            result = backend.decode(index, wanted)
            assert indices_of(result.frames) == wanted
            assert all(
                t.shape == (3, index.height, index.width) and t.dtype == torch.uint8
                for t in result.frames
            )
        small = backend.decode(index, [3], size=(64, 48)).frames[0]
        assert small.shape == (3, 48, 64) and frame_index_of(small) == 3
        assert indices_of(list(backend.stream(index, n - 5))) == list(range(n - 5, n))
    finally:
        backend.close()
    created = fake_nvc.log["create"]
    assert created[0]["cudacontext"] == 0 and created[0]["usedevicememory"] is True
    assert created[0]["outputColorType"] == "NATIVE"
    assert created[0]["codec"] == nvdec.nvdec_codec(index)


def test_emulated_backend_colours_match_cpu(fake_nvc: Any, big_videos: dict[str, Video]) -> None:
    for name, tol in (("h264", 3), ("hevc10", 5)):
        index = load_index(big_videos[name].path)
        backend = NvdecBackend("cuda:0")
        try:
            gpu = backend.decode(index, [4]).frames[0].to(torch.int32)
        finally:
            backend.close()
        with av.open(str(index.path)) as c:
            frame = next(f for i, f in enumerate(c.decode(video=0)) if i == 4)
            cpu = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
        d = (gpu - cpu.to(torch.int32)).abs()
        assert int(d.max()) <= tol and float(d.float().mean()) <= 2.0, name


def test_emulated_decoder_cache(
    fake_nvc: Any, big_videos: dict[str, Video], videos: dict[str, Video]
) -> None:
    """One decoder per (codec, bit depth, width, height), least recently used out first; a
    size change never reconfigures a decoder (setReconfigParams raises in the stand-in)."""
    log = fake_nvc.log
    small = load_index(big_videos["h264"].path)  # 128x96
    big = load_index(big_videos["h264_big"].path)  # 320x240
    hevc = load_index(big_videos["hevc"].path)
    backend = NvdecBackend("cuda:0", max_decoders=2)
    try:
        backend.decode(small, [1])
        backend.decode(small, [2])
        assert len(log["create"]) == 1 and backend.decoders == 1
        assert indices_of(backend.decode(big, [1]).frames) == [1]  # another size: its own
        assert [(c["maxwidth"], c["maxheight"]) for c in log["create"]] == [(128, 96), (320, 240)]
        assert indices_of(backend.decode(small, [5]).frames) == [5]  # cached, not recreated
        assert len(log["create"]) == 2 and log["reconfigure"] == []
        assert indices_of(backend.decode(hevc, [3]).frames) == [3]  # evicts 320x240 H.264
        assert backend.decoders == 2 and [d.width for d in EmulatedNvDecoder.closed] == [320]
        backend.decode(small, [4])
        assert len(log["create"]) == 3
        other = load_index(videos["vp9_webm"].path)  # 128x96: too small for NVDEC VP9
        with pytest.raises(UnsupportedCodecError, match="decode it on the CPU"):
            backend.decode(other, [0])
        assert isinstance(backend.supports(other), str)
        backend.decode(load_index(big_videos["vp9"].path), [0])  # LRU evicted again
        assert backend.decoders == 2 and len(EmulatedNvDecoder.closed) == 2
        assert len(log["caps"]) == 3  # asked once per (codec, bit depth)
    finally:
        backend.close()
        backend.close()
    assert log["reconfigure"] == []
    with pytest.raises(RuntimeError, match="after close"):
        backend.decode(small, [0])


def test_size_switches_never_reconfigure(fake_nvc: Any, big_videos: dict[str, Video]) -> None:
    """Jobs alternate between sizes (even, odd 257x193, larger) on one codec and another: exact
    frames every time, one decoder per size created at that size, none ever reconfigured."""
    log = fake_nvc.log
    ix = {
        k: load_index(big_videos[n].path)
        for k, n in (("a", "vp9"), ("b", "vp9_odd"), ("c", "h264_big"), ("e", "h264"))
    }
    backend = NvdecBackend("cuda:0", max_decoders=4)
    try:
        for k in "abacecabe" * 3:
            assert indices_of(backend.decode(ix[k], [5, 17, 2]).frames) == [5, 17, 2], k
    finally:
        backend.close()
    assert log["reconfigure"] == []
    sizes = [(c["codec"], c["maxwidth"], c["maxheight"]) for c in log["create"]]
    assert sizes == [
        ("VP9", 256, 192),
        ("VP9", 257, 193),
        ("H264", 320, 240),
        ("H264", 128, 96),
    ]  # each created once, at its own (odd) size


def test_decoder_caps_asked_once_per_process(fake_nvc: Any, big_videos: dict[str, Video]) -> None:
    """GetDecoderCaps creates and destroys a CUDA context per call: asked once per process per
    (GPU, codec, chroma, bit depth), whatever the number of backends (one per VideoLoader) and
    threads; another GPU is asked for itself."""
    import threading

    log = fake_nvc.log
    h264, hevc10 = (load_index(big_videos[n].path) for n in ("h264", "hevc10"))

    def use(device: str) -> None:
        backend = NvdecBackend(device)
        try:
            assert backend.supports(h264) is True and backend.supports(hevc10) is True
        finally:
            backend.close()

    threads = [threading.Thread(target=use, args=("cuda:0",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    use("cuda:0")
    assert sorted((c["gpuid"], c["codec"], c["bitdepth"]) for c in log["caps"]) == [
        (0, "H264", 8),
        (0, "HEVC", 10),
    ]
    use("cuda:1")
    assert len(log["caps"]) == 4 and {c["gpuid"] for c in log["caps"][2:]} == {1}


def test_nvdecoder_packet_handling(fake_nvc: Any, big_videos: dict[str, Video]) -> None:
    seen: list[tuple[bytes, int, int]] = []

    class Recorder:
        def Decode(self, pd: Any) -> list[Any]:
            data = ctypes.string_at(pd.bsl_data, pd.bsl) if pd.bsl else b""
            seen.append((data, pd.pts, pd.decode_flag))
            return (
                [types.SimpleNamespace(getPTS=lambda: 99)] if pd.bsl == 0 and len(seen) == 2 else []
            )

    fake_nvc.CreateDecoder = lambda **kw: Recorder()
    dec = nvdec._NvDecoder(fake_nvc, torch.device("cuda", 0), FakeStream(), "H264", 64, 48, 64, 48)  # type: ignore[arg-type]
    payload = np.frombuffer(b"\x00\x00\x00\x01abc", dtype=np.uint8)
    assert dec.feed(EncodedPacket(payload, 1234)) == []
    assert seen[0] == (b"\x00\x00\x00\x01abc", 1234, 0)
    assert [p for p, _ in dec.flush()] == [99]  # one end-of-stream call per flush()
    assert dec.flush() == []
    assert len(seen) == 3 and all(d == b"" and flag == 0 for d, _, flag in seen[1:])


@pytest.mark.parametrize("spec", COLOUR_SPECS, ids=lambda s: "-".join(map(str, s)))
def test_emulated_backend_colour_tags(
    fake_nvc: Any, tmp_path: Path, spec: tuple[str, str, str, bool]
) -> None:
    """Matrix and range from the index reach the conversion: agrees with the CPU's rgb24."""
    codec, pix_fmt, matrix, full = spec
    index = load_index(write_colour_video(tmp_path / f"{codec}.mkv", *spec))
    assert (index.color_space, index.full_range) == (COLOUR_TAGS[matrix][0], full)
    backend = NvdecBackend("cuda:0")
    try:
        gpu = torch.stack(backend.decode(index, [5, 2]).frames).to(torch.int32)
    finally:
        backend.close()
    with av.open(str(index.path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    cpu = torch.from_numpy(np.stack([frames[5], frames[2]])).permute(0, 3, 1, 2).to(torch.int32)
    d = (gpu - cpu).abs().to(torch.float32)
    ten_bit = "10" in pix_fmt
    assert int(d.max()) <= (5 if ten_bit else 3), spec
    assert float(d.mean()) <= (2.0 if ten_bit else 1.25), spec

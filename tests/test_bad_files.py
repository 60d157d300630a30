"""Bad input files: every case has one exact outcome, documented in docs/caveats.md.

At open time (``VideoLoader``, ``load_index``, ``Prefetcher(...)``, which indexes every file) a
bad file raises a ``tvl_async`` error or ``FileNotFoundError`` / ``IsADirectoryError`` /
``PermissionError``, naming the file and the cause. Damage found while decoding reaches the
consumer at that sample (``on_error="raise"``), or the sample is skipped, counted and logged once
per file (``on_error="skip"``), and every other sample arrives exactly.
"""

from __future__ import annotations

import builtins
import logging
import os
import struct
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from tvl_async import (
    DecodeError,
    NoVideoStreamError,
    TvlAsyncError,
    UnsupportedCodecError,
    VideoLoader,
    VideoOpenError,
    load_index,
)
from tvl_async._prefetcher import Prefetcher
from tvl_async._sampling import VideoDataset
from tvl_async.cli.synthetic import VideoSpec, frame_index_of, index_pattern, write_video

FPS = 25
N = 48  # frames per test video
GOP = 12


def small(path: Path, n: int = N, **kw: Any) -> Path:
    """A 64x48 video whose frame i shows i; textured so that packets have realistic sizes."""
    spec = VideoSpec(n_frames=n, width=64, height=48, gop=GOP, bframes=2, texture=0.5, fps=FPS)
    for k, v in kw.items():
        setattr(spec, k, v)
    return write_video(path, spec)


def shown(frames: torch.Tensor | list[torch.Tensor]) -> list[int]:
    return [frame_index_of(f) for f in frames]


def packets(path: Path) -> list[tuple[int, int, int, bool]]:
    """(pts in frames, byte position, size, keyframe) of every video packet, in decode order."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        step = 1 / (float(s.time_base) * FPS)
        start = s.start_time or 0
        return [
            (round((p.pts - start) / step), p.pos, p.size, p.is_keyframe)
            for p in c.demux(s)
            if p.size
        ]


def atoms(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 atoms: name -> (offset, size)."""
    out, i = {}, 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        out[data[i + 4 : i + 8].decode("latin1")] = (i, size)
        if size < 8:
            break
        i += size
    return out


def faststart(src: Path, dst: Path) -> Path:
    """Remux ``src`` with the index atom (moov) before the data (``movflags=faststart``)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for p in inp.demux(s):
            if p.dts is None:
                continue
            p.stream = o
            out.mux(p)
    return dst


def expected_content(loader: VideoLoader) -> list[int]:
    """What frame i of the file should show: the original index, from its timestamp."""
    t = loader.index.times
    return [round((x - t[0]) * FPS) for x in t]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    f: dict[str, Path] = {}
    f["good"] = small(d / "good.mp4")
    f["good2"] = small(d / "good2.mp4")
    f["fast"] = faststart(f["good"], d / "fast.mp4")
    f["short"] = small(d / "short.mp4", n=3)
    f["mkv"] = small(d / "src.mkv")
    f["ts"] = small(d / "src.ts")
    # Bytes zeroed inside one P-frame of GOP 1 (decode position 16), keeping its first 8 bytes.
    data = bytearray(f["good"].read_bytes())
    _, pos, size, key = packets(f["good"])[16]
    assert not key
    data[pos + 8 : pos + size] = bytes(size - 8)
    f["corrupt"] = d / "corrupt.mp4"
    f["corrupt"].write_bytes(bytes(data))
    return f


def cut(src: Path, at: int, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[:at])
    return dst


# ----------------------------------------------------------------------------- open time


def test_missing_path(tmp_path: Path) -> None:
    p = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=r"No such video file: '.*nope\.mp4'") as e:
        VideoLoader(p)
    assert e.value.filename == str(p)
    assert str(e.value) == f"[Errno 2] No such video file: '{p}'"  # the path once
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        Prefetcher([p], seq_len=2)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="Expected a video file but got a directory") as e:
        VideoLoader(tmp_path)
    assert e.value.filename == str(tmp_path)
    with pytest.raises(IsADirectoryError):
        load_index(tmp_path)
    # The Prefetcher expands a folder into the videos inside; an empty one holds none.
    with pytest.raises(ValueError, match="no video files given"):
        Prefetcher(tmp_path, seq_len=2)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.mp4"
    p.touch()
    with pytest.raises(VideoOpenError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        VideoLoader(p)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    p = tmp_path / "notes.mp4"
    p.write_text("these are notes, not a video\n" * 20)
    with pytest.raises(VideoOpenError) as e:
        VideoLoader(p)
    assert str(e.value).startswith(f"{p}: cannot open as a video (InvalidDataError: ")
    assert isinstance(e.value.__cause__, av.InvalidDataError)


def test_random_bytes_named_mp4(tmp_path: Path) -> None:
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoOpenError, match=r"noise\.mp4: cannot open as a video"):
        VideoLoader(p)


def test_jpeg_named_mp4_is_a_one_frame_video(tmp_path: Path) -> None:
    """FFmpeg detects formats by content, not by name: a JPEG is a valid 1-frame MJPEG video.

    tvl_async reads it as such; a dataset whose clips need more than one frame skips it with
    the usual "too short" warning.
    """
    jpg = tmp_path / "still.jpg"
    with av.open(str(jpg), "w", format="image2") as c:
        s = c.add_stream("mjpeg")
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(index_pattern(9, 64, 48), format="rgb24")
        for pkt in s.encode(frame.reformat(format="yuvj420p")):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    p = tmp_path / "still.mp4"
    p.write_bytes(jpg.read_bytes())
    assert p.read_bytes()[:2] == b"\xff\xd8"  # a JPEG start-of-image marker
    with VideoLoader(p) as loader:
        assert (loader.n_frames, loader.index.codec, loader.width, loader.height) == (
            1,
            "mjpeg",
            64,
            48,
        )
        assert shown(list(loader.read_all_frames())) == [9]
    with pytest.warns(UserWarning, match=r"skipping 1 file\(s\) too short .*still\.mp4' \(1 "):
        VideoDataset([p, small(tmp_path / "ok.mp4", n=24)], seq_len=2)


def audio_only(p: Path) -> Path:
    with av.open(str(p), "w") as c:
        a = c.add_stream("aac", rate=48000)
        for k in range(20):
            fr = av.AudioFrame.from_ndarray(
                np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
            )
            fr.sample_rate, fr.pts = 48000, k * 1024
            for pkt in a.encode(fr):
                c.mux(pkt)
        for pkt in a.encode(None):
            c.mux(pkt)
    return p


def unknown_codec(tmp_path: Path) -> Path:
    src = small(tmp_path / "h264.mkv", n=24)
    data = src.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    p = tmp_path / "unknown_codec.mkv"
    p.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/ISO/ZZZ"))
    return p


def test_audio_only_file(tmp_path: Path) -> None:
    p = audio_only(tmp_path / "audio.mp4")
    with pytest.raises(NoVideoStreamError) as e:
        VideoLoader(p)
    assert str(e.value) == f"{p}: no video stream (streams found: audio)"
    assert isinstance(e.value, VideoOpenError)


def test_unreadable_file_emulated(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulates a file without read permission (tests run as root, where chmod 000 does not
    block reads): ``open`` of that path raises PermissionError inside the index module."""
    import tvl_async._index_open as index_module

    target = files["good2"]

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(index_module, "open", fake_open, raising=False)
    with pytest.raises(
        PermissionError, match=r"Cannot read video file \(permission denied\): '.*good2\.mp4'"
    ):
        VideoLoader(target)
    with pytest.raises(PermissionError, match=r"good2\.mp4"):
        Prefetcher([files["good"], target], seq_len=2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    p = small(tmp_path / "locked.mp4", n=24)
    p.chmod(0)
    try:
        with pytest.raises(
            PermissionError, match=r"Cannot read video file \(permission denied\): '.*locked\.mp4'"
        ):
            VideoLoader(p)
    finally:
        p.chmod(0o644)


def test_codec_without_decoder(tmp_path: Path) -> None:
    """A real file whose codec FFmpeg cannot decode: an MKV whose CodecID was rewritten to one
    FFmpeg does not know (same length, so the EBML stays valid). PyAV gives such a stream no
    codec context, as it does for a known codec whose decoder is missing from the build."""
    p = unknown_codec(tmp_path)
    with pytest.raises(UnsupportedCodecError) as e:
        VideoLoader(p)
    assert str(e.value) == f"{p}: this FFmpeg build has no decoder for the video stream"


@pytest.mark.parametrize("kind", ["empty", "text", "audio", "codec", "truncated"])
def test_prefetcher_reports_open_time_errors(
    files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """A Prefetcher indexes every file in its constructor: a bad file among good ones fails
    there, with the same error as VideoLoader, naming that file (whatever ``on_error`` is)."""
    if kind == "empty":
        bad, cls = tmp_path / "empty.mp4", VideoOpenError
        bad.touch()
    elif kind == "text":
        bad, cls = tmp_path / "text.mp4", VideoOpenError
        bad.write_text("not a video\n" * 50)
    elif kind == "audio":
        bad, cls = audio_only(tmp_path / "audio.mp4"), NoVideoStreamError
    elif kind == "codec":
        bad, cls = unknown_codec(tmp_path), UnsupportedCodecError
    else:
        data = files["good"].read_bytes()
        bad, cls = cut(files["good"], len(data) // 2, tmp_path / "cut.mp4"), VideoOpenError
    with pytest.raises(cls) as loader_error:
        VideoLoader(bad)
    with pytest.raises(cls) as e:
        Prefetcher([files["good"], bad, files["good2"]], seq_len=2, on_error="raise")
    assert str(e.value) == str(loader_error.value)
    assert str(e.value).startswith(f"{bad}: ")
    with pytest.warns(UserWarning, match=f"leaving out '{bad}'") as caught:
        it = Prefetcher([files["good"], bad, files["good2"]], seq_len=2, on_error="skip")
    assert sum("leaving out" in str(w.message) for w in caught) == 1
    with it:
        assert it.stats().unindexed_files == [str(bad)]
        assert sorted(it.dataset.files) == sorted([str(files["good"]), str(files["good2"])])


def test_file_shorter_than_one_clip(files: dict[str, Path]) -> None:
    with pytest.warns(
        UserWarning,
        match=r"skipping 1 file\(s\) too short for one clip of "
        r"seq_len=4.*short\.mp4' \(3 frames\)",
    ):
        ds = VideoDataset([files["short"], files["good"]], seq_len=4)
    assert len(ds) == N - 3
    assert ds.locate(0) == (1, 0)  # indices stay consistent: sample 0 is the good file's
    with (
        pytest.warns(UserWarning, match=r"short\.mp4"),
        Prefetcher(
            [files["short"], files["good"]],
            seq_len=4,
            batch_size=8,
            shuffle=False,
            decode_threads=1,
        ) as it,
    ):
        batches = list(it)
    assert sum(b.batch_size for b in batches) == N - 3
    assert {p for b in batches for p in b.files} == {str(files["good"])}
    for b in batches:
        for clip, idx in zip(b["default"], b.frame_indices, strict=True):
            assert shown(clip) == idx.tolist()


def test_wrong_header_frame_count(tmp_path: Path) -> None:
    """An AVI whose headers (avih dwTotalFrames, strh dwLength) claim 1000 frames: the index
    counts the 24 real ones and keeps the claim only as ``header_frames``."""
    src = small(tmp_path / "src.avi", n=24, codec="mpeg4")
    data = bytearray(src.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    assert struct.unpack_from("<I", data, avih + 8 + 16) == (24,)
    assert struct.unpack_from("<I", data, strh + 8 + 32) == (24,)
    struct.pack_into("<I", data, avih + 8 + 16, 1000)
    struct.pack_into("<I", data, strh + 8 + 32, 1000)
    p = tmp_path / "lies.avi"
    p.write_bytes(bytes(data))
    with av.open(str(p)) as c:
        assert c.streams.video[0].frames == 1000  # what FFmpeg reports from the header
    with VideoLoader(p) as loader:
        assert loader.n_frames == 24
        assert loader.index.header_frames == 1000
        assert loader.duration == pytest.approx(24 / FPS)
        assert shown(list(loader.read_all_frames())) == list(range(24))
        assert shown(list(loader.select_frames([23, 0, 12]))) == [23, 0, 12]
        with pytest.raises(
            IndexError, match=r"Invalid frame index \(24\)\. Supported values are 0\.\.23 "
        ):
            loader.select_frame(24)


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("where", ["in_ftyp", "in_mdat", "in_moov"])
def test_truncated_mp4_moov_at_end(files: dict[str, Path], tmp_path: Path, where: str) -> None:
    """A normal MP4 keeps its index atom (moov) after the data: any cut loses (part of) it, so
    the file cannot be indexed at all."""
    src = files["good"]
    at = atoms(src.read_bytes())
    assert list(at) == ["ftyp", "free", "mdat", "moov"]
    point = {
        "in_ftyp": 16,
        "in_mdat": at["mdat"][0] + at["mdat"][1] // 2,
        "in_moov": at["moov"][0] + at["moov"][1] // 2,
    }[where]
    p = cut(src, point, tmp_path / f"cut_{where}.mp4")
    with pytest.raises(VideoOpenError) as e:
        VideoLoader(p)
    msg = str(e.value)
    if where == "in_moov":
        assert msg == (
            f"{p}: the video stream has no frames (header claims {N}); the file may be truncated "
            "or damaged"
        )
    else:
        assert msg.startswith(f"{p}: cannot open as a video (InvalidDataError: ")


def test_truncated_faststart_in_moov(files: dict[str, Path], tmp_path: Path) -> None:
    src = files["fast"]
    at = atoms(src.read_bytes())
    assert list(at)[:2] == ["ftyp", "moov"]
    p = cut(src, at["moov"][0] + at["moov"][1] // 2, tmp_path / "cut_moov.mp4")
    with pytest.raises(VideoOpenError, match=r"cut_moov\.mp4: the video stream has no frames"):
        VideoLoader(p)


@pytest.mark.parametrize("decode_pos", [1, 20, 29, 46])
def test_truncated_faststart_mid_gop(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, decode_pos: int
) -> None:
    """A faststart MP4 cut inside the data, in the middle of packet ``decode_pos``: the index
    keeps exactly the frames whose packets are complete (the demuxer flags the cut one), and
    every one of them decodes exactly, in sequence and at random."""
    src = files["fast"]
    table = packets(src)
    _, pos, size, _ = table[decode_pos]
    point = pos + size // 2
    p = cut(src, point, tmp_path / f"cut_{decode_pos}.mp4")
    complete = sorted(k for k, ppos, psize, _ in table if ppos + psize <= point)
    assert len(complete) == decode_pos
    with caplog.at_level(logging.WARNING, logger="tvl_async"), VideoLoader(p) as loader:
        assert loader.n_frames == len(complete)
        assert expected_content(loader) == complete
        assert shown(list(loader.read_all_frames())) == complete
        order = list(range(loader.n_frames))[::-1]
        assert shown(list(loader.select_frames(order))) == [complete[i] for i in order]
        with pytest.raises(IndexError, match=r"Invalid frame index .*Supported values are 0\.\."):
            loader.select_frame(loader.n_frames)
    notes = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert notes == [
        f"{p}: the file is truncated: its last 1 packet(s) are incomplete and are not indexed; "
        f"{decode_pos} complete packets remain"
    ]


def test_truncated_faststart_gpu_packets_stop_before_the_cut(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """The NVDEC backend's demuxing (``nvdec_packets.PacketSource``, no GPU needed) shares the
    CPU backend's keyframe positioning: it yields exactly the indexed packets, never the cut
    one that the index left out."""
    from tvl_async._backends.nvdec_packets import PacketSource

    src = files["fast"]
    table = packets(src)
    _, pos, size, _ = table[29]
    p = cut(src, pos + size // 2, tmp_path / "cut_gpu.mp4")
    index = load_index(p)
    source = PacketSource(index)
    try:
        got = [pkt.pts for pkt in source.packets_from(0)]
    finally:
        source.close()
    assert got == index.packet_pts.tolist() and len(got) == 29


def test_truncated_mkv(files: dict[str, Path], tmp_path: Path) -> None:
    """Matroska cut mid-cluster: the frames whose blocks are present, each exact."""
    src = files["mkv"]
    table = packets(src)
    _, pos, size, _ = table[30]
    p = cut(src, pos + size // 2, tmp_path / "cut.mkv")
    with VideoLoader(p) as loader:
        content = expected_content(loader)
        assert set(content) <= set(range(N))
        assert len(content) >= 28
        assert shown(list(loader.read_all_frames())) == content
        assert shown(list(loader.select_frames(range(loader.n_frames - 1, -1, -3)))) == [
            content[i] for i in range(loader.n_frames - 1, -1, -3)
        ]


def test_truncated_mpegts_last_frame_concealed(
    files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MPEG-TS cannot tell that its last packet was cut (video PES have no length), so that
    packet is decoded: FFmpeg conceals the missing data and flags the frame; tvl_async returns
    it and logs one warning naming the file and frame. Every other frame is exact."""
    src = files["ts"]
    data = src.read_bytes()
    p = cut(src, len(data) - 300, tmp_path / "cut.ts")
    with caplog.at_level(logging.WARNING, logger="tvl_async"), VideoLoader(p) as loader:
        n = loader.n_frames
        content = expected_content(loader)
        got = shown(list(loader.read_all_frames()))
    damaged = [r.getMessage() for r in caplog.records if "damaged data" in r.getMessage()]
    assert len(damaged) == 1
    assert damaged[0].startswith(f"{p}: frame ")
    bad_frame = int(damaged[0].split("frame ")[1].split()[0])
    assert [i for i in range(n) if got[i] != content[i]] in ([], [bad_frame])


# ----------------------------------------------------------------------------- damaged data


def test_corrupt_bytes_mid_stream(files: dict[str, Path]) -> None:
    """Zeroed bytes inside one P-frame of GOP 1: frames of the other GOPs decode exactly;
    decoding through the damaged packet raises DecodeError naming the file and frames."""
    p = files["corrupt"]
    with VideoLoader(p) as loader:
        assert loader.n_frames == N  # demuxing does not look inside packets
        others = [i for i in range(N) if not GOP <= i < 3 * GOP]
        assert shown(list(loader.select_frames(others[::-1]))) == others[::-1]
        with pytest.raises(DecodeError) as e:
            loader.read_frames_at([18])
        msg = str(e.value)
        assert msg.startswith(f"{p}: decoding frames [18] failed: InvalidDataError: ")
        assert isinstance(e.value.__cause__, av.InvalidDataError)
        with pytest.raises(DecodeError, match=str(p)):
            list(loader.read_all_frames())
        # sequential reading after the failure: the same error again (a fresh reader), never a
        # bare StopIteration from a dead one; frames before the damage still come back
        for _ in range(2):
            loader.seek_to_frame(0)
            got = []
            with pytest.raises(DecodeError, match=str(p)):
                while True:
                    got.append(frame_index_of(loader.read_frame()))
            assert got == list(range(len(got))) and 0 < len(got) <= 18


def test_resolution_change_mid_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two encodes (64x48 then 96x72) in one MPEG-TS stream, remuxed with continuous timestamps
    and also byte-concatenated (restarting timestamps: the index then counts decoded frames).
    Behaviour: every frame comes back at the stream's declared size (the first one), scaled,
    with one warning per file."""
    a = small(tmp_path / "a.ts", n=24, bframes=0, gop=8)
    b = small(tmp_path / "b.ts", n=24, bframes=0, gop=8, width=96, height=72)
    remuxed = tmp_path / "remuxed.ts"
    with av.open(str(a)) as ia, av.open(str(b)) as ib, av.open(str(remuxed), "w") as out:
        o = out.add_stream_from_template(ia.streams.video[0])
        end = 0
        for pkt in ia.demux(ia.streams.video[0]):
            if pkt.dts is not None:
                end = max(end, pkt.pts + pkt.duration)
                pkt.stream = o
                out.mux(pkt)
        first = None
        for pkt in ib.demux(ib.streams.video[0]):
            if pkt.dts is not None:
                first = pkt.dts if first is None else first
                pkt.pts += end - first
                pkt.dts += end - first
                pkt.stream = o
                out.mux(pkt)
    concatenated = tmp_path / "concatenated.ts"
    concatenated.write_bytes(a.read_bytes() + b.read_bytes())
    want = list(range(24)) * 2
    for p, timestamps_ok in ((remuxed, True), (concatenated, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tvl_async"), VideoLoader(p) as loader:
            assert (loader.width, loader.height, loader.n_frames) == (64, 48, 48)
            assert loader.index.timestamps_ok is timestamps_ok
            frames = list(loader.read_all_frames())
            assert {tuple(f.shape) for f in frames} == {(3, 48, 64)}
            assert shown(frames) == want
            assert shown(list(loader.select_frames([40, 3, 30, 47]))) == [16, 3, 6, 23]
            assert loader.read_frames_at([25, 2]).shape == (2, 3, 48, 64)
        warned = [r.getMessage() for r in caplog.records if "resolution" in r.getMessage()]
        assert warned == [
            f"{p}: the resolution changes mid-stream: frame 24 is 96x72, the stream declares "
            "64x48; such frames are scaled to 64x48"
        ]
    with Prefetcher([remuxed], seq_len=4, batch_size=4, shuffle=False, decode_threads=1) as it:
        clips = [clip for batch in it for clip in batch["default"]]
    assert len(clips) == 45
    assert [shown(c) for c in clips] == [want[s : s + 4] for s in range(45)]


# ----------------------------------------------------------------------------- during an epoch


def failing_samples(ds: VideoDataset, path: Path) -> set[int]:
    """Samples of ``path`` that fail when decoded alone (what the service retries)."""
    bad = set()
    with VideoLoader(path) as loader:
        for sid in range(len(ds)):
            if ds.files[ds.locate(sid)[0]] != str(path):
                continue
            try:
                loader.read_frames_at(ds.clip_frames(sid))
            except DecodeError:
                bad.add(sid)
    return bad


def check_exact(batch: Any) -> None:
    for clip, idx in zip(batch["default"], batch.frame_indices, strict=True):
        assert shown(clip) == idx.tolist()


def test_epoch_on_error_raise(files: dict[str, Path]) -> None:
    paths = [files["good"], files["corrupt"]]
    ds = VideoDataset(paths, seq_len=4, step=4)
    bad = failing_samples(ds, files["corrupt"])
    assert bad and bad < set(range(12, 24))
    first_bad = min(bad)
    got: list[int] = []
    with (
        pytest.raises(DecodeError) as e,
        Prefetcher(ds, batch_size=1, shuffle=False, decode_threads=1, on_error="raise") as it,
    ):
        for batch in it:
            check_exact(batch)
            got.extend(batch.sample_ids.tolist())
    assert got == list(range(first_bad))  # every sample before the failing one, in order
    assert str(files["corrupt"]) in str(e.value)
    frames = ds.clip_frames(first_bad)
    assert e.value.__notes__ == [
        f"tvl_async: raised in the service thread for sample {first_bad} (epoch 0): "
        f"{files['corrupt']} frames {frames}"
    ]


def test_epoch_on_error_skip(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    paths = [files["good"], files["corrupt"], files["good2"]]
    ds = VideoDataset(paths, seq_len=4, step=4)
    bad = failing_samples(ds, files["corrupt"])
    with (
        caplog.at_level(logging.WARNING, logger="tvl_async"),
        Prefetcher(
            ds,
            batch_size=5,
            shuffle=True,
            seed=3,
            epochs=2,
            decode_threads=2,
            on_error="skip",
            max_file_failures=100,
        ) as it,
    ):
        seen: list[tuple[int, int]] = []
        for batch in it:
            check_exact(batch)
            seen.extend((batch.epoch, s) for s in batch.sample_ids.tolist())
        stats = it.stats()
    want = {(e, s) for e in (0, 1) for s in range(len(ds)) if s not in bad}
    assert len(seen) == len(want) and set(seen) == want
    assert stats.samples_skipped == 2 * len(bad)
    assert {(s.epoch, s.sample_id) for s in stats.skipped} == {(e, s) for e in (0, 1) for s in bad}
    for s in stats.skipped:
        assert s.file == str(files["corrupt"])
        assert s.frames == ds.clip_frames(s.sample_id)
        assert s.error.startswith(f"DecodeError: {files['corrupt']}: decoding frames ")
    assert stats.dropped_files == []
    skip_logs = [r for r in caplog.records if "skipping sample" in r.getMessage()]
    assert len(skip_logs) == 1  # logged once per file
    assert str(files["corrupt"]) in skip_logs[0].getMessage()


def test_epoch_file_dropped_after_repeated_failures(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that keeps failing is given up after ``max_file_failures`` failures with one
    warning; its later samples are skipped (listed with that reason)."""
    from tvl_async._backends.pyav import PyAVBackend

    broken = str(files["good2"].resolve())
    real = PyAVBackend.decode
    calls: list[str] = []

    def decode(self: PyAVBackend, index: Any, frames: Any, **kw: Any) -> Any:
        calls.append(index.path)
        if index.path == broken:
            raise DecodeError(f"{index.path}: injected failure")
        return real(self, index, frames, **kw)

    monkeypatch.setattr(PyAVBackend, "decode", decode)
    ds = VideoDataset([files["good"], files["good2"]], seq_len=4, step=4)
    with (
        caplog.at_level(logging.WARNING, logger="tvl_async"),
        Prefetcher(
            ds,
            batch_size=4,
            shuffle=True,
            seed=1,
            epochs=2,
            decode_threads=1,
            lookahead=2,
            on_error="skip",
            max_file_failures=3,
        ) as it,
    ):
        seen = [(b.epoch, s) for b in it for s in b.sample_ids.tolist()]
        stats = it.stats()
    assert sorted(seen) == [(e, s) for e in (0, 1) for s in range(12)]
    assert stats.dropped_files == [broken]
    assert stats.samples_skipped == 24
    reasons = sorted(s.error for s in stats.skipped)
    assert (
        reasons
        == [f"DecodeError: {broken}: injected failure"] * 3
        + ["file dropped after repeated failures"] * 21
    )
    gave_up = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(gave_up) == 1
    assert gave_up[0].getMessage().startswith(f"tvl_async: giving up {broken} after 3 failures")
    assert len([r for r in caplog.records if "skipping sample" in r.getMessage()]) == 1
    # once given up, the file is no longer decoded: only the 3 failures (each retried once
    # alone) and the samples already planned (lookahead=2) reached the decoder, not all 12
    assert calls.count(broken) <= 2 * (3 + 2)


def test_epoch_truncated_file_loses_nothing(files: dict[str, Path], tmp_path: Path) -> None:
    """A truncated faststart file in a dataset: its complete frames are all sampled, exactly."""
    table = packets(files["fast"])
    _, pos, size, _ = table[33]
    p = cut(files["fast"], pos + size // 2, tmp_path / "cut.mp4")
    with VideoLoader(p) as loader:
        content = {str(p.resolve()): expected_content(loader)}
        assert loader.n_frames == 33
    content[str(files["good"].resolve())] = list(range(N))
    n = 0
    with Prefetcher([p, files["good"]], seq_len=3, batch_size=6, decode_threads=1) as it:
        for batch in it:
            for clip, idx, f in zip(
                batch["default"], batch.frame_indices, batch.files, strict=True
            ):
                assert shown(clip) == [content[f][i] for i in idx.tolist()]
                n += 1
    assert n == (33 - 2) + (N - 2)


def test_errors_are_tvl_or_standard() -> None:
    """The documented error classes: the tvl_async ones share one base class."""
    for cls in (VideoOpenError, NoVideoStreamError, UnsupportedCodecError, DecodeError):
        assert issubclass(cls, TvlAsyncError)


@pytest.mark.timeout(60)
def test_fifo_in_a_folder_is_refused_unopened(files: dict[str, Path], tmp_path: Path) -> None:
    """A FIFO named like a video would block any open(); it is refused without one, and with
    on_error="skip" left out while the other files load."""
    import os
    import shutil

    folder = tmp_path / "with_fifo"
    folder.mkdir()
    shutil.copy(files["good"], folder / "a.mp4")
    os.mkfifo(folder / "x.mp4")
    with pytest.raises(VideoOpenError, match=r"x\.mp4"):
        VideoLoader(folder / "x.mp4")
    with pytest.warns(UserWarning, match=r"x\.mp4"):
        it = Prefetcher(folder, seq_len=2, on_error="skip")
    with it:
        assert it.stats().unindexed_files == [str(folder / "x.mp4")]
        assert len(list(it)) > 0

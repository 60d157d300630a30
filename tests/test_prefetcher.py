"""The Prefetcher service: exact frames, order, batching, processing, errors, lifecycle, resume.

Every check reads the frame index back from the pixels (``frame_index_of``), so a test can tell
exactly which frame of which clip came back. Videos are small (64x48, GOP 8) and written once per
module; every test runs well under a second or two on a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch

from tvl_async._backends.pyav import PyAVBackend
from tvl_async._config import ProcessDesc
from tvl_async._errors import PrefetcherClosedError, TvlAsyncError
from tvl_async._index import load_index
from tvl_async._prefetcher import Batch, Prefetcher
from tvl_async._sampling import VideoDataset
from tvl_async.cli.synthetic import frame_index_of, write_video

SEQ = 3
N_A, N_B = 20, 13  # frames of a.mp4 / b.mkv
SAMPLES_A, SAMPLES_B = N_A - SEQ + 1, N_B - SEQ + 1  # 18 + 11 clips of 3 frames
N_SAMPLES = SAMPLES_A + SAMPLES_B  # 29
H, W = 48, 64


class Boom(RuntimeError):
    """Raised by a patched decoder, to check that the consumer gets this very type."""


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("prefetch")
    write_video(d / "a.mp4", n_frames=N_A, width=W, height=H, gop=8)
    write_video(d / "b.mkv", n_frames=N_B, width=W, height=H, gop=8)
    # a different size, and a variable frame rate
    write_video(d / "big" / "c.mp4", n_frames=13, width=96, height=72, gop=8)
    write_video(d / "tiny" / "t.mp4", n_frames=13, width=32, height=24, gop=8)
    pts = [0]
    for i in range(15):
        pts.append(pts[-1] + 20 + (i * 37) % 51)
    write_video(
        d / "vfr" / "v.mkv",
        n_frames=16,
        width=W,
        height=H,
        gop=8,
        time_base=Fraction(1, 1000),
        pts=pts,
    )
    return d


@pytest.fixture(scope="module")
def files(vdir: Path) -> list[str]:
    return [str(vdir / "a.mp4"), str(vdir / "b.mkv")]


def make(files: Any, **kw: Any) -> Prefetcher:
    opts: dict[str, Any] = {"seq_len": SEQ, "batch_size": 4, "decode_threads": 2}
    opts.update(kw)
    return Prefetcher(files, **opts)


def run(files: Any, **kw: Any) -> list[Batch]:
    with make(files, **kw) as it:
        return list(it)


def clip_indices(t: torch.Tensor, layout: str = "chw") -> list[list[int]]:
    """Frame index shown by every frame of a ``[B, F, C, H, W]`` tensor."""
    return [[frame_index_of(f, layout) for f in clip] for clip in t]


def ids(batches: list[Batch]) -> list[int]:
    return [int(i) for b in batches for i in b.sample_ids]


def service_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tvl-async")]


def check_exact(batch: Batch, dataset: VideoDataset, name: str = "default") -> None:
    """Pixels, frame_indices, files and clip_frames all agree for every clip of ``batch``."""
    expected = [dataset.clip_frames(int(i)) for i in batch.sample_ids]
    assert batch.frame_indices.tolist() == expected
    assert clip_indices(batch[name]) == expected
    assert batch.files == [dataset.file_of(int(i)) for i in batch.sample_ids]


def patch_decode(monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any, list[int]], None]) -> None:
    """Run ``hook(index, frames)`` before every PyAV decode (in the decode threads)."""
    original = PyAVBackend.decode

    def decode(self: PyAVBackend, index: Any, frames: Any, **kw: Any) -> Any:
        hook(index, list(frames))
        return original(self, index, frames, **kw)

    monkeypatch.setattr(PyAVBackend, "decode", decode)


def fail_on(monkeypatch: pytest.MonkeyPatch, path: str, frame: int) -> None:
    def hook(index: Any, frames: list[int]) -> None:
        if index.path == path and frame in frames:
            raise Boom(f"cannot decode frame {frame}")

    patch_decode(monkeypatch, hook)


# ------------------------------------------------------------------------------ exact frames


@pytest.mark.timeout(30)
def test_every_sample_of_an_epoch_has_exact_frames(files: list[str], no_new_threads: None) -> None:
    with make(files) as it:
        batches = list(it)
        dataset = it.dataset
    assert len(dataset) == N_SAMPLES
    for b in batches:
        assert b["default"].shape == (b.batch_size, SEQ, 3, H, W)
        assert b["default"].dtype == torch.uint8
        assert b.frame_indices.dtype == torch.int64
        assert b.epoch == 0
        assert b.labels is None
        check_exact(b, dataset)
    assert sorted(ids(batches)) == list(range(N_SAMPLES))


@pytest.mark.timeout(30)
def test_timestamps_are_the_index_times(vdir: Path, files: list[str], no_new_threads: None) -> None:
    vfr = str(vdir / "vfr" / "v.mkv")
    index = load_index(vfr)
    steps = set(torch.tensor(index.times).diff().round(decimals=6).tolist())
    assert len(steps) > 3, "the test video should have a variable frame rate"
    for b in run([*files, vfr]):
        assert b.timestamps.dtype == torch.float64
        assert b.timestamps.shape == b.frame_indices.shape
        for path, frames, times in zip(b.files, b.frame_indices, b.timestamps, strict=True):
            expected = load_index(path).times[frames.numpy()]
            assert times.tolist() == expected.tolist()


@pytest.mark.timeout(30)
def test_labels_come_from_get_label(files: list[str], no_new_threads: None) -> None:
    for b in run(files, get_label=lambda p: 7 if p.endswith("a.mp4") else 3):
        assert b.labels.tolist() == [7 if f.endswith("a.mp4") else 3 for f in b.files]


# ------------------------------------------------------------------------------ order


@pytest.mark.timeout(30)
def test_order_is_reproducible_and_depends_on_the_seed(
    files: list[str], no_new_threads: None
) -> None:
    first = run(files, seed=5)
    second = run(files, seed=5)
    other = run(files, seed=6)
    assert ids(first) == ids(second)
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x["default"], y["default"])
    assert ids(other) != ids(first)
    assert sorted(ids(other)) == sorted(ids(first)) == list(range(N_SAMPLES))
    assert ids(first) != list(range(N_SAMPLES))  # shuffled


@pytest.mark.timeout(30)
def test_epochs_each_sample_once_with_fresh_permutations(
    files: list[str], no_new_threads: None
) -> None:
    with make(files, epochs=3, seed=1) as it:
        batches = list(it)
        dataset = it.dataset
    per_epoch: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for b in batches:
        per_epoch[b.epoch].extend(int(i) for i in b.sample_ids)
        check_exact(b, dataset)
    assert [b.epoch for b in batches] == sorted(b.epoch for b in batches)
    # a batch never mixes epochs: each epoch ends with its own short batch
    assert [b.batch_size for b in batches] == ([4] * 7 + [1]) * 3
    for order in per_epoch.values():
        assert sorted(order) == list(range(N_SAMPLES))
    assert len({tuple(o) for o in per_epoch.values()}) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("opts", [{"shuffle": False}, {"sampling": "sequential"}])
def test_sequential_order(files: list[str], opts: dict[str, Any], no_new_threads: None) -> None:
    with make(files, **opts) as it:
        batches = list(it)
        dataset = it.dataset
    assert ids(batches) == list(range(N_SAMPLES))
    for b in batches:
        check_exact(b, dataset)
    # sample 0..17 are a.mp4 from frame 0, then b.mkv from frame 0
    assert batches[0].frame_indices[0].tolist() == [0, 1, 2]
    assert batches[4].files[2] == files[1] and batches[4].frame_indices[2].tolist() == [0, 1, 2]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sampling", ["chunked", "gop_shuffle"])
def test_relaxed_samplers_deliver_each_sample_once(
    files: list[str], sampling: str, no_new_threads: None
) -> None:
    with make(files, sampling=sampling, chunk_size=4, shuffle_buffer=8) as it:
        batches = list(it)
        dataset = it.dataset
        expected = [int(i) for i in it.sampler.epoch_order(0)]
    assert ids(batches) == expected
    assert sorted(expected) == list(range(N_SAMPLES))
    for b in batches:
        check_exact(b, dataset)


@pytest.mark.timeout(30)
def test_endless_epochs(files: list[str], no_new_threads: None) -> None:
    with make(files, epochs=None, seed=2) as it:
        batches = [next(it) for _ in range(20)]
        dataset = it.dataset
    assert [b.epoch for b in batches] == [0] * 8 + [1] * 8 + [2] * 4
    assert sorted(ids(batches[8:16])) == list(range(N_SAMPLES))
    for b in batches:
        check_exact(b, dataset)


@pytest.mark.timeout(30)
def test_ranks_read_disjoint_shards(files: list[str], no_new_threads: None) -> None:
    shards = []
    for rank in (0, 1):
        with make(files, seed=8, rank=rank, world_size=2) as it:
            batches = list(it)
            dataset = it.dataset
        for b in batches:
            check_exact(b, dataset)
        shards.append(ids(batches))
    assert len(shards[0]) == len(shards[1]) == 15  # 29 samples, padded to 30
    assert set(shards[0]) | set(shards[1]) == set(range(N_SAMPLES))
    assert len(set(shards[0]) & set(shards[1])) <= 1


@pytest.mark.timeout(30)
def test_replacement_draws_n_samples(files: list[str], no_new_threads: None) -> None:
    with make(files, seed=4, replacement=True) as it:
        batches = list(it)
        dataset = it.dataset
    drawn = ids(batches)
    assert len(drawn) == N_SAMPLES and len(set(drawn)) < N_SAMPLES  # repeats are expected
    for b in batches:
        check_exact(b, dataset)


# ------------------------------------------------------------------------------ batching


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("batch_size", "drop_last", "sizes"),
    [
        (4, False, [4] * 7 + [1]),
        (4, True, [4] * 7),
        (5, False, [5] * 5 + [4]),
        (29, False, [29]),
        (30, False, [29]),
        (1, False, [1] * 29),
    ],
)
def test_batch_size_and_drop_last(
    files: list[str], batch_size: int, drop_last: bool, sizes: list[int], no_new_threads: None
) -> None:
    with make(files, batch_size=batch_size, drop_last=drop_last, shuffle=False) as it:
        assert len(it) == len(sizes)
        batches = list(it)
        dataset = it.dataset
    assert [b.batch_size for b in batches] == sizes
    assert [b["default"].shape[0] for b in batches] == sizes
    assert ids(batches) == list(range(sum(sizes)))
    for b in batches:
        check_exact(b, dataset)


@pytest.mark.timeout(30)
def test_len_is_batches_per_epoch(files: list[str]) -> None:
    assert len(make(files, batch_size=4)) == 8
    assert len(make(files, batch_size=4, drop_last=True)) == 7
    assert len(make(files, batch_size=4, epochs=3)) == 8  # per epoch
    assert len(make(files, batch_size=4, rank=1, world_size=2)) == 4  # 15 samples on this rank
    assert len(make(files, batch_size=100)) == 1


# ------------------------------------------------------------------------------ processing


@pytest.mark.timeout(30)
def test_float_dtypes_and_value_ranges(files: list[str], no_new_threads: None) -> None:
    base = run(files, shuffle=False)
    descs = {
        "u8": ProcessDesc(),
        "f32": ProcessDesc(dtype=torch.float32),
        "f16": ProcessDesc(dtype="float16"),
        "bf16": ProcessDesc(dtype=torch.bfloat16),
        "norm": ProcessDesc(dtype=torch.float32, normalized=True),
        "ms": ProcessDesc(
            dtype=torch.float32, normalized=True, mean=(0.5, 0.4, 0.3), std=(0.25, 0.5, 0.125)
        ),
    }
    out = run(files, shuffle=False, processing=descs)
    assert ids(out) == ids(base)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.25, 0.5, 0.125]).view(1, 1, 3, 1, 1)
    for b, ref in zip(out, base, strict=True):
        u8 = ref["default"]
        assert set(b) == set(descs)
        assert torch.equal(b["u8"], u8)
        for name, dtype in [
            ("f32", torch.float32),
            ("f16", torch.float16),
            ("bf16", torch.bfloat16),
        ]:
            assert b[name].dtype == dtype
            assert torch.equal(b[name].float(), u8.float()), name  # 0..255, exact integers
        assert b["norm"].dtype == torch.float32
        assert float(b["norm"].min()) >= 0.0 and float(b["norm"].max()) <= 1.0
        torch.testing.assert_close(b["norm"], u8.float() / 255)
        torch.testing.assert_close(b["ms"], (u8.float() / 255 - mean) / std)
        assert clip_indices(b["norm"]) == b.frame_indices.tolist()


@pytest.mark.timeout(30)
def test_scale_crop_layout_and_colour(files: list[str], no_new_threads: None) -> None:
    descs = {
        "small": ProcessDesc(scale_width=32, scale_height=24),
        "centre": ProcessDesc(width=32, height=24),
        "cfhw": ProcessDesc(layout="cfhw"),
        "fhwc": ProcessDesc(layout="fhwc"),
        "gray": ProcessDesc(color_space="gray"),
        "ycbcr": ProcessDesc(color_space="YCbCr", dtype=torch.float32),
        "full": ProcessDesc(),
    }
    with make(files, processing=descs) as it:
        batches = list(it)
        dataset = it.dataset
    for b in batches:
        n = b.batch_size
        check_exact(b, dataset, "full")
        expected = b.frame_indices.tolist()
        full = b["full"]
        assert b["small"].shape == (n, SEQ, 3, 24, 32)
        assert clip_indices(b["small"]) == expected
        assert b["centre"].shape == (n, SEQ, 3, 24, 32)
        assert torch.equal(b["centre"], full[..., 12:36, 16:48])
        assert b.augment["centre"] == [{"crop": [12, 16, 24, 32], "flip": False}] * n
        assert b.augment["full"] == [{"crop": None, "flip": False}] * n
        assert torch.equal(b["cfhw"], full.permute(0, 2, 1, 3, 4))
        assert torch.equal(b["fhwc"], full.permute(0, 1, 3, 4, 2))
        assert b["gray"].shape == (n, SEQ, 1, H, W)
        assert clip_indices(b["gray"]) == expected
        assert b["ycbcr"].shape == (n, SEQ, 3, H, W)
        y = b["ycbcr"][:, :, 0:1]
        assert (b["gray"].float() - y).abs().max() <= 0.5  # Y is the gray value
        # the test frames are gray: chroma is neutral
        assert (b["ycbcr"][:, :, 1:] - 128).abs().max() <= 1.0


@pytest.mark.timeout(30)
def test_index_map_middle_and_reversed(files: list[str], no_new_threads: None) -> None:
    descs = {
        "middle": ProcessDesc(index_map=[-1, -1, 0, -1, -1]),
        "reversed": ProcessDesc(index_map=[4, 3, 2, 1, 0]),
    }
    with make(files, seq_len=5, processing=descs) as it:
        batches = list(it)
        dataset = it.dataset
    for b in batches:
        frames = [dataset.clip_frames(int(i)) for i in b.sample_ids]
        assert b.frame_indices.tolist() == frames
        assert b["middle"].shape == (b.batch_size, 1, 3, H, W)
        assert clip_indices(b["middle"]) == [[f[2]] for f in frames]
        assert clip_indices(b["reversed"]) == [f[::-1] for f in frames]


@pytest.mark.timeout(30)
def test_index_map_decodes_only_the_needed_frame(files: list[str], no_new_threads: None) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def hook(index: Any, frames: list[int]) -> None:
        with lock:
            seen.extend(frames)

    mp = pytest.MonkeyPatch()
    try:
        patch_decode(mp, hook)
        with make(
            files, seq_len=5, shuffle=False, processing=ProcessDesc(index_map=[-1, -1, 0, -1, -1])
        ) as it:
            batches = list(it)
            stats = it.stats()
    finally:
        mp.undo()
    assert clip_indices(batches[0]["default"]) == [[2], [3], [4], [5]]
    # frames 0, 1 (and the last two of each file) are in no output: never asked for
    assert 0 not in seen and 1 not in seen
    assert stats.frames_delivered == stats.samples_delivered == 16 + 9


@pytest.mark.timeout(30)
def test_random_crop_and_flip_are_per_clip_and_reported(
    files: list[str], no_new_threads: None
) -> None:
    descs = {
        "full": ProcessDesc(),
        "crop": ProcessDesc(width=40, height=30, random_crop=True, random_flip=True),
    }
    with make(files, processing=descs, seed=3) as it:
        batches = list(it)
        dataset = it.dataset
    crops, flips = set(), set()
    for b in batches:
        check_exact(b, dataset, "full")
        assert b["crop"].shape == (b.batch_size, SEQ, 3, 30, 40)
        for k, aug in enumerate(b.augment["crop"]):
            top, left, h, w = aug["crop"]
            assert (h, w) == (30, 40) and 0 <= top <= H - 30 and 0 <= left <= W - 40
            expected = b["full"][k, :, :, top : top + h, left : left + w]
            if aug["flip"]:
                expected = expected.flip(-1)
            # the same crop and flip for every frame of the clip, exactly as reported
            assert torch.equal(b["crop"][k], expected)
            crops.add((top, left))
            flips.add(aug["flip"])
    assert len(crops) > 5 and flips == {True, False}


@pytest.mark.timeout(30)
def test_random_resized_crop_shape(files: list[str], no_new_threads: None) -> None:
    desc = ProcessDesc(
        width=32, height=32, random_resized_crop=(0.3, 1.0), dtype=torch.float32, normalized=True
    )
    for b in run(files, processing={"rrc": desc}):
        assert b["rrc"].shape == (b.batch_size, SEQ, 3, 32, 32)
        assert float(b["rrc"].min()) >= 0.0 and float(b["rrc"].max()) <= 1.0
        assert all(a["crop"] is not None for a in b.augment["rrc"])


@pytest.mark.timeout(30)
def test_two_outputs_come_from_one_decode(files: list[str], no_new_threads: None) -> None:
    one = make(files, shuffle=False, decode_threads=1, lookahead=1)
    with one:
        list(one)
        decoded_one = one.stats().frames_decoded
    two = make(
        files,
        shuffle=False,
        decode_threads=1,
        lookahead=1,
        processing={
            "rgb": ProcessDesc(),
            "small": ProcessDesc(
                scale_width=32, scale_height=24, dtype=torch.float16, normalized=True
            ),
        },
    )
    with two:
        batches = list(two)
        decoded_two = two.stats().frames_decoded
    assert decoded_two == decoded_one > 0
    for b in batches:
        assert set(b) == {"rgb", "small"}
        assert clip_indices(b["rgb"]) == clip_indices(b["small"]) == b.frame_indices.tolist()


@pytest.mark.timeout(30)
def test_transform_runs_in_the_service_thread(files: list[str], no_new_threads: None) -> None:
    names: set[str] = set()

    def transform(batch: Batch) -> dict[str, torch.Tensor]:
        names.add(threading.current_thread().name)
        return {"default": batch["default"], "firsts": batch.frame_indices[:, 0] * 10}

    with make(files, transform=transform) as it:
        batches = list(it)
        dataset = it.dataset
    assert names == {"tvl-async-service"}
    for b in batches:
        check_exact(b, dataset)
        assert b["firsts"].tolist() == [10 * f[0] for f in b.frame_indices.tolist()]

    def in_place(batch: Batch) -> None:
        batch.outputs["default"] = batch["default"].float() / 255

    for b in run(files, transform=in_place):
        assert b["default"].dtype == torch.float32 and float(b["default"].max()) <= 1.0

    with pytest.raises(TypeError, match="callable"):
        make(files, transform=42)


# ------------------------------------------------------------------------------ inputs


@pytest.mark.timeout(30)
def test_sizes_differ_without_fixed_output_size(
    vdir: Path, files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    big = str(vdir / "big" / "c.mp4")
    calls: list[int] = []
    patch_decode(monkeypatch, lambda index, frames: calls.append(1))
    with pytest.raises(ValueError, match="differ in frame size") as info:
        make([files[0], big])
    assert "a.mp4" in str(info.value) and "c.mp4" in str(info.value)
    assert "scale_width" in str(info.value)
    with pytest.raises(ValueError, match="differ in frame size"):
        make([files[0], big], processing=ProcessDesc(dtype=torch.float32))
    assert calls == [] and service_threads() == []
    monkeypatch.undo()

    with make([files[0], big], processing=ProcessDesc(scale_width=W, scale_height=H)) as it:
        batches = list(it)
        dataset = it.dataset
    assert sorted(ids(batches)) == list(range(SAMPLES_A + 11))
    assert {f for b in batches for f in b.files} == {files[0], big}
    for b in batches:
        assert b["default"].shape[-2:] == (H, W)
        check_exact(b, dataset)


@pytest.mark.timeout(30)
def test_crop_only_output_size_mixes_sizes(
    vdir: Path, files: list[str], no_new_threads: None
) -> None:
    big = str(vdir / "big" / "c.mp4")
    with make([files[0], big], shuffle=False, processing=ProcessDesc(width=40, height=30)) as it:
        batches = list(it)
    assert ids(batches) == list(range(SAMPLES_A + 11))
    for b in batches:
        assert b["default"].shape[1:] == (SEQ, 3, 30, 40)
        for path, aug in zip(b.files, b.augment["default"], strict=True):
            fh, fw = (H, W) if path == files[0] else (72, 96)
            assert aug["crop"] == [(fh - 30) // 2, (fw - 40) // 2, 30, 40]


@pytest.mark.timeout(30)
def test_crop_larger_than_a_file_fails_before_decoding_naming_it(
    vdir: Path, files: list[str], no_new_threads: None
) -> None:
    tiny = str(vdir / "tiny" / "t.mp4")
    with pytest.raises(ValueError, match="larger than") as info:
        make([files[0], tiny], processing={"crop": ProcessDesc(width=40, height=30)})
    assert tiny in str(info.value) and "'crop'" in str(info.value)
    assert service_threads() == []


@pytest.mark.timeout(30)
def test_folder_and_dataset_inputs(vdir: Path, files: list[str], no_new_threads: None) -> None:
    folder = vdir / "folder"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("not a video")
    for name in ("x.mp4", "y.mp4"):
        target = folder / name
        if not target.exists():
            target.write_bytes((vdir / "a.mp4").read_bytes())
    with Prefetcher(folder, seq_len=SEQ, batch_size=4, decode_threads=1) as it:
        assert it.dataset.files == [str(folder / "x.mp4"), str(folder / "y.mp4")]
        batches = list(it)
        dataset = it.dataset
    assert sorted(ids(batches)) == list(range(2 * SAMPLES_A))
    for b in batches:
        check_exact(b, dataset)

    ds = VideoDataset(files, 2, stride=3, step=2)
    with Prefetcher(ds, batch_size=3, decode_threads=1, shuffle=False) as it:
        assert it.config.seq_len == 2 and it.dataset is ds
        batches = list(it)
    assert ids(batches) == list(range(len(ds)))
    for b in batches:
        check_exact(b, ds)
        assert all(f[1] - f[0] == 3 and f[0] % 2 == 0 for f in b.frame_indices.tolist())


# ------------------------------------------------------------------------------ equivalences


def _signature(batches: list[Batch]) -> list[tuple[list[int], list[torch.Tensor]]]:
    return [(b.sample_ids.tolist(), [b[k] for k in sorted(b)]) for b in batches]


def _same(x: list[Batch], y: list[Batch]) -> None:
    assert len(x) == len(y)
    for (ids_x, tx), (ids_y, ty) in zip(_signature(x), _signature(y), strict=True):
        assert ids_x == ids_y
        for a, b in zip(tx, ty, strict=True):
            assert torch.equal(a, b)


AUGMENT = {
    "full": ProcessDesc(),
    "crop": ProcessDesc(width=40, height=30, random_crop=True, random_flip=True),
}


@pytest.mark.timeout(30)
def test_lookahead_does_not_change_the_output(files: list[str], no_new_threads: None) -> None:
    small = run(files, lookahead=1, seed=11, epochs=2, processing=AUGMENT)
    large = run(files, lookahead=64, seed=11, epochs=2, processing=AUGMENT)
    _same(small, large)
    assert [b.augment for b in small] == [b.augment for b in large]


@pytest.mark.timeout(30)
def test_decode_threads_do_not_change_the_output(files: list[str], no_new_threads: None) -> None:
    one = run(files, decode_threads=1, lookahead=6, seed=2, processing=AUGMENT)
    three = run(files, decode_threads=3, lookahead=6, seed=2, processing=AUGMENT)
    _same(one, three)


# ------------------------------------------------------------------------------ resume


@pytest.mark.timeout(40)
@pytest.mark.parametrize("k", [0, 3, 8, 9])
def test_resume_gives_exactly_the_remaining_batches(
    files: list[str], k: int, no_new_threads: None
) -> None:
    opts: dict[str, Any] = {"seed": 4, "epochs": 2, "processing": AUGMENT, "lookahead": 10}
    full = run(files, **opts)
    assert len(full) == 16
    with make(files, **opts) as it:
        for _ in range(k):
            next(it)
        time.sleep(0.2)  # let the service read ahead: the state must not follow it
        state = json.loads(json.dumps(it.state_dict()))  # a plain, JSON-able dict
    assert state["batches_delivered"] == k
    resumed = make(files, **opts)
    resumed.load_state_dict(state)
    with resumed:
        rest = list(resumed)
    _same(rest, full[k:])
    assert [b.epoch for b in rest] == [b.epoch for b in full[k:]]


@pytest.mark.timeout(30)
def test_load_state_dict_and_set_epoch_only_before_start(
    files: list[str], no_new_threads: None
) -> None:
    it = make(files)
    with pytest.raises(ValueError, match="sampler"):
        it.load_state_dict({})
    with it:
        next(it)
        state = it.state_dict()
        with pytest.raises(RuntimeError, match="before"):
            it.load_state_dict(state)
        with pytest.raises(RuntimeError, match="before"):
            it.set_epoch(1)
    full = run(files, epochs=3)
    # set_epoch(e) starts the run at e and runs `epochs` epochs from there: with the default
    # epochs=1 exactly epoch e (DistributedSampler's idiom: one Prefetcher per epoch)
    for epochs, expected in ((1, [1]), (2, [1, 2])):
        later = make(files, epochs=epochs)
        later.set_epoch(1)
        with later:
            batches = list(later)
        assert sorted({b.epoch for b in batches}) == expected
        assert ids(batches) == ids([b for b in full if b.epoch in expected])


# ------------------------------------------------------------------------------ stats


@pytest.mark.timeout(30)
def test_stats(files: list[str], no_new_threads: None) -> None:
    with make(files, lookahead=64, decode_threads=2, queue_depth=3) as it:
        before = it.stats()
        next(it)
        next(it)
        mid = it.stats()
        list(it)
        s = it.stats()
    assert before.batches_delivered == 0 and before.samples_delivered == 0
    assert (mid.batches_delivered, mid.samples_delivered, mid.frames_delivered) == (2, 8, 24)
    assert s.batches_delivered == 8
    assert s.samples_delivered == N_SAMPLES
    assert s.frames_delivered == N_SAMPLES * SEQ
    assert s.frames_decoded >= N_A + N_B  # every frame is in some clip
    assert s.decoded_per_delivered == pytest.approx(s.frames_decoded / s.frames_delivered)
    assert s.decoded_per_delivered < 1.0  # each GOP decoded once for all its clips
    assert s.decode_rate > 0
    assert s.wait_time >= s.wait_time_after_first >= 0.0
    assert s.queue_depth == 3 and 0 <= s.queue_fill <= 3
    assert s.lookahead == 64 and s.decode_threads == 2
    sample_bytes = SEQ * 3 * H * W
    assert s.memory_bound_bytes == 64 * sample_bytes
    assert sample_bytes <= s.peak_buffer_bytes <= s.memory_bound_bytes
    assert s.samples_skipped == 0 and s.skipped == [] and s.dropped_files == []
    assert s.elapsed > 0

    with make(files, lookahead=1, decode_threads=1) as it:
        list(it)
        s1 = it.stats()
    assert s1.samples_delivered == N_SAMPLES
    assert s1.decoded_per_delivered >= 1.0 > s.decoded_per_delivered
    assert s1.peak_buffer_bytes <= s1.memory_bound_bytes == sample_bytes

    budget = make(files, memory_budget=5 * sample_bytes + 7)
    assert budget.lookahead == 5 and budget.stats().lookahead == 5


# ------------------------------------------------------------------------------ errors


@pytest.mark.timeout(30)
def test_decode_error_reaches_the_consumer_in_place(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    fail_on(monkeypatch, files[0], 9)  # in samples 7, 8 and 9 of a.mp4
    got: list[Batch] = []
    with make(files, shuffle=False) as it, pytest.raises(Boom) as info:
        for b in it:
            got.append(b)
    assert type(info.value) is Boom
    assert "cannot decode frame 9" in str(info.value)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert files[0] in notes and "[7, 8, 9]" in notes and "sample 7" in notes
    # samples 0..3 form the first batch; the second holds sample 7
    assert ids(got) == [0, 1, 2, 3]
    assert clip_indices(got[0]["default"]) == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    assert it.closed
    with pytest.raises(PrefetcherClosedError):
        next(it)


@pytest.mark.timeout(30)
def test_decode_error_with_shuffle_arrives_after_the_batches_before_it(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    clean = run(files, seed=0)
    bad = {7, 8, 9}
    first_bad = next(k for k, b in enumerate(clean) if bad & set(b.sample_ids.tolist()))
    assert first_bad > 0
    fail_on(monkeypatch, files[0], 9)
    got: list[Batch] = []
    with pytest.raises(Boom), make(files, seed=0) as it:
        got.extend(it)
    _same(got, clean[:first_bad])


@pytest.mark.timeout(30)
def test_file_corrupted_after_indexing(
    vdir: Path, files: list[str], tmp_path: Path, no_new_threads: None
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((vdir / "a.mp4").read_bytes())
    it = make([files[1], str(broken)], shuffle=False)
    broken.write_bytes(b"\0garbage" * 100)  # the index was built before this
    got: list[Batch] = []
    with pytest.raises(TvlAsyncError) as info, it:
        got.extend(it)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert str(broken) in notes and "frames [0, 1, 2]" in notes
    assert ids(got) == [0, 1, 2, 3, 4, 5, 6, 7]  # b.mkv's 11 samples; the partial batch is lost
    for b in got:
        check_exact(b, it.dataset)


@pytest.mark.timeout(30)
def test_get_label_error_arrives_in_its_place(files: list[str], no_new_threads: None) -> None:
    def get_label(path: str) -> int:
        if path.endswith("b.mkv"):
            raise KeyError(f"no label for {path}")
        return 1

    got: list[Batch] = []
    # the whole epoch is planned (and labelled) at once: the error must still wait its turn
    with (
        pytest.raises(KeyError) as info,
        make(files, shuffle=False, lookahead=64, get_label=get_label) as it,
    ):
        got.extend(it)
    assert ids(got) == list(range(16))  # a.mp4's samples 0..15; 16, 17 share a batch with 18
    assert all(b.labels.tolist() == [1] * 4 for b in got)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert files[1] in notes and "sample 18" in notes

    with make(
        files, shuffle=False, get_label=get_label, on_error="skip", max_file_failures=100
    ) as it:
        got = list(it)
        s = it.stats()
    assert ids(got) == list(range(SAMPLES_A))
    assert s.samples_skipped == SAMPLES_B
    assert all("KeyError" in x.error and x.file == files[1] for x in s.skipped)


@pytest.mark.timeout(30)
def test_on_error_skip(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    clean = run(files, seed=3)
    fail_on(monkeypatch, files[0], 0)  # only in sample 0
    with make(files, seed=3, on_error="skip") as it:
        got = list(it)
        s = it.stats()
        dataset = it.dataset
    assert ids(got) == [i for i in ids(clean) if i != 0]
    assert all(b.batch_size == 4 for b in got)  # 28 samples: batches are refilled
    for b in got:
        check_exact(b, dataset)
    assert s.samples_skipped == 1
    assert len(s.skipped) == 1
    skipped = s.skipped[0]
    assert (skipped.epoch, skipped.sample_id, skipped.file, skipped.frames) == (
        0,
        0,
        files[0],
        [0, 1, 2],
    )
    assert "Boom" in skipped.error and "frame 0" in skipped.error
    assert s.samples_delivered == N_SAMPLES - 1
    assert s.dropped_files == []


@pytest.mark.timeout(30)
def test_on_error_skip_gives_up_a_file_after_repeated_failures(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    order = ids(run(files, seed=3))
    fail_on(monkeypatch, files[0], 9)  # samples 7, 8, 9 fail: max_file_failures=3
    with make(files, seed=3, on_error="skip") as it:
        got = ids(list(it))
        s = it.stats()
    third = max(order.index(i) for i in (7, 8, 9))
    expected = [
        i for k, i in enumerate(order) if i not in (7, 8, 9) and (i >= SAMPLES_A or k < third)
    ]
    assert got == expected
    assert s.dropped_files == [files[0]]
    assert s.samples_skipped == N_SAMPLES - len(expected)
    assert {x.sample_id for x in s.skipped} == set(order) - set(expected)


@pytest.mark.timeout(30)
def test_timeout_names_the_file(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    release = threading.Event()
    patch_decode(monkeypatch, lambda index, frames: release.wait(20))
    it = make(files[:1], decode_threads=1, timeout=0.5)
    t0 = time.perf_counter()
    try:
        with pytest.raises(TimeoutError) as info, it:
            next(it)
        elapsed = time.perf_counter() - t0
    finally:
        release.set()
    assert 0.5 <= elapsed < 2.5
    assert "0.5 s" in str(info.value) and files[0] in str(info.value)
    assert it.closed


@pytest.mark.timeout(30)
def test_slow_decoding_within_the_timeout_is_fine(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    patch_decode(monkeypatch, lambda index, frames: time.sleep(0.01))
    with make(files, timeout=5.0, lookahead=2, decode_threads=1) as it:
        batches = list(it)
        dataset = it.dataset
    assert sorted(ids(batches)) == list(range(N_SAMPLES))
    for b in batches:
        check_exact(b, dataset)


# ------------------------------------------------------------------------------ lifecycle


@pytest.mark.timeout(30)
def test_no_thread_after_close(files: list[str], no_new_threads: None) -> None:
    it = make(files, queue_depth=1)
    assert service_threads() == []  # nothing runs before start
    it.start()
    assert "tvl-async-service" in service_threads()
    next(it)
    it.close()
    assert service_threads() == []
    it.close()  # twice is fine
    assert it.closed


@pytest.mark.timeout(30)
def test_break_out_of_the_loop(files: list[str], no_new_threads: None) -> None:
    with make(files, queue_depth=1) as it:
        for _ in it:
            break
    assert it.closed and service_threads() == []

    for b in make(files, queue_depth=1):  # a temporary Prefetcher, never closed explicitly
        assert b.batch_size == 4
        break
    gc.collect()
    assert service_threads() == []

    held = make(files, queue_depth=1)
    for _ in held:
        break
    assert "tvl-async-service" in service_threads()  # still usable: it goes on where it was
    assert next(held).batch_size == 4
    del held
    gc.collect()
    assert service_threads() == []


@pytest.mark.timeout(30)
def test_exception_in_the_loop_body(files: list[str], no_new_threads: None) -> None:
    with pytest.raises(KeyError), make(files, queue_depth=1) as it:
        for _ in it:
            raise KeyError("user bug")
    assert it.closed and service_threads() == []


@pytest.mark.timeout(30)
def test_garbage_collection_without_close(files: list[str], no_new_threads: None) -> None:
    it = make(files, queue_depth=1)
    next(it)
    assert "tvl-async-service" in service_threads()
    del it
    gc.collect()
    assert service_threads() == []


@pytest.mark.timeout(60)
def test_interpreter_exit_without_close(files: list[str], tmp_path: Path) -> None:
    code = (
        "from tvl_async._prefetcher import Prefetcher\n"
        f"it = Prefetcher({files!r}, seq_len=3, batch_size=1, queue_depth=1)\n"
        "print(next(it).frame_indices.tolist())\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=50,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert len(json.loads(done.stdout)[0]) == 3
    assert time.perf_counter() - t0 < 30


@pytest.mark.timeout(30)
def test_iteration_after_close_raises(files: list[str], no_new_threads: None) -> None:
    never_started = make(files)
    never_started.close()
    with pytest.raises(PrefetcherClosedError):
        iter(never_started)
    it = make(files)
    with it:
        next(it)
    with pytest.raises(PrefetcherClosedError):
        next(it)
    with pytest.raises(PrefetcherClosedError):
        iter(it)
    with pytest.raises(PrefetcherClosedError), it:
        pass
    assert isinstance(PrefetcherClosedError("x"), RuntimeError)
    # a finished loop leaves it running, ready for the next epoch (the DataLoader idiom)
    done = make(files, batch_size=32)
    assert len(list(done)) == 1
    assert not done.closed
    done.close()
    assert done.closed and service_threads() == []


@pytest.mark.timeout(30)
def test_close_from_another_thread_wakes_the_consumer(
    files: list[str], monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    release = threading.Event()
    patch_decode(monkeypatch, lambda index, frames: release.wait(20))
    it = make(files, decode_threads=1)
    closer = threading.Timer(0.3, it.close)
    closer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(PrefetcherClosedError):
            next(it)
    finally:
        release.set()
        closer.join()
    assert time.perf_counter() - t0 < 15


# ------------------------------------------------------------------------------ GPU


@pytest.mark.cuda
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_cuda_batches_are_exact(files: list[str], backend: str, no_new_threads: None) -> None:
    descs = {
        "rgb": ProcessDesc(),
        "f": ProcessDesc(dtype=torch.float16, normalized=True, scale_width=32, scale_height=24),
    }
    with make(files, device="cuda", backend=backend, processing=descs) as it:
        batches = list(it)
        dataset = it.dataset
    assert sorted(ids(batches)) == list(range(N_SAMPLES))
    for b in batches:
        assert b["rgb"].device.type == "cuda" and b["f"].device.type == "cuda"
        check_exact(b, dataset, "rgb")
        assert clip_indices(b["f"]) == b.frame_indices.tolist()


# ------------------------------------------------------------------------------ audit fixes


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("k", "failed"), [(2, 1), (5, 2)])
def test_resume_keeps_the_failures_per_file(
    files: list[str], monkeypatch: pytest.MonkeyPatch, k: int, failed: int, no_new_threads: None
) -> None:
    """on_error="skip": the state carries the failures per file, so a file given up before
    the state was taken stays given up in the resumed run, and one that failed less often
    keeps its count; either way the resumed run equals the rest of the uninterrupted one."""
    fail_on(monkeypatch, files[1], 9)  # 3 clips of b.mkv hold frame 9
    opts: dict[str, Any] = {
        "seed": 5,
        "epochs": 2,
        "on_error": "skip",
        "max_file_failures": 2,
        "lookahead": 8,
    }
    full = run(files, **opts)
    with make(files, **opts) as it:
        for _ in range(k):
            next(it)
        time.sleep(0.2)  # the service reads ahead; the state must not follow it
        state = json.loads(json.dumps(it.state_dict()))
    assert state["file_failures"] == {files[1]: failed}  # 2: given up before the state
    resumed = make(files, **opts)
    resumed.load_state_dict(state)
    with resumed:
        rest = list(resumed)
        s = resumed.stats()
    _same(rest, full[k:])
    assert s.dropped_files == [files[1]]
    if failed == 2:
        assert all(f != files[1] for b in rest for f in b.files)


@pytest.mark.timeout(30)
def test_transform_returning_a_new_batch_keeps_the_resume_point(
    files: list[str], no_new_threads: None
) -> None:
    def rebuild(b: Batch) -> Batch:
        return Batch(
            {"default": b["default"].clone()},
            sample_ids=b.sample_ids,
            files=b.files,
            frame_indices=b.frame_indices,
            timestamps=b.timestamps,
            labels=b.labels,
            epoch=b.epoch,
            augment=b.augment,
        )

    full = run(files, seed=5)
    with make(files, seed=5, transform=rebuild) as it:
        for _ in range(3):
            next(it)
        state = it.state_dict()
    assert state["sampler"]["position"] == 12
    resumed = make(files, seed=5)
    resumed.load_state_dict(state)
    with resumed:
        assert ids(list(resumed)) == ids(full[3:])


@pytest.mark.timeout(60)
def test_random_draws_follow_the_global_position(files: list[str], no_new_threads: None) -> None:
    """Each rank draws its own crops and flips: the sample at global position p gets the same
    draw whatever the number of ranks, so two ranks never repeat each other's draws."""
    desc = {"crop": AUGMENT["crop"]}
    one = [a for b in run(files, seed=7, processing=desc) for a in b.augment["crop"]]
    for contiguous, sampling in ((False, "uniform"), (True, "chunked")):
        single = (
            one
            if not contiguous
            else [
                a
                for b in run(files, seed=7, processing=desc, sampling=sampling)
                for a in b.augment["crop"]
            ]
        )
        ranks = [
            [
                a
                for b in run(
                    files, seed=7, processing=desc, sampling=sampling, rank=r, world_size=2
                )
                for a in b.augment["crop"]
            ]
            for r in (0, 1)
        ]
        n = len(ranks[0])
        for r in (0, 1):
            for p, draw in enumerate(ranks[r]):
                g = r * n + p if contiguous else p * 2 + r
                if g < len(single):  # the padding wraps past the end of the global order
                    assert draw == single[g], (sampling, r, p)
        assert ranks[0] != ranks[1]


@pytest.mark.timeout(30)
def test_next_after_the_end_is_stop_iteration(files: list[str], no_new_threads: None) -> None:
    it = make(files, batch_size=8)
    batches = list(it)
    assert len(batches) == 4 and not it.closed
    assert next(it, "end") == "end"  # next() stays at the end of the loop until iter()
    with pytest.raises(StopIteration):
        next(it)
    second = list(it)  # a second loop runs the next epoch (before: PrefetcherClosedError)
    assert [b.epoch for b in second] == [1] * 4
    assert sorted(ids(second)) == list(range(N_SAMPLES))
    it.close()

    async def again() -> list[Batch]:
        async with make(files, batch_size=8) as done:
            got = [b async for b in done]
            with pytest.raises(StopAsyncIteration):
                await done.__anext__()
            got += [b async for b in done]
        return got

    assert [b.epoch for b in asyncio.run(again())] == [0] * 4 + [1] * 4


def test_dataset_with_other_clip_options_is_refused(files: list[str]) -> None:
    ds = VideoDataset(files, SEQ, stride=2)
    for kw, name in (
        ({"stride": 3}, "stride"),
        ({"step": 2}, "step"),
        ({"seq_len": 5}, "seq_len"),
        ({"get_label": len}, "get_label"),
    ):
        with pytest.raises(ValueError, match=name):
            Prefetcher(ds, **kw)
    it = Prefetcher(ds, seq_len=SEQ, stride=2)  # the dataset's own values are fine
    assert it.config.stride == 2
    it.close()


@pytest.mark.timeout(30)
def test_batch_files_are_the_paths_as_given(
    vdir: Path, monkeypatch: pytest.MonkeyPatch, no_new_threads: None
) -> None:
    monkeypatch.chdir(vdir)
    with make(["a.mp4", "b.mkv"], batch_size=32, shuffle=False) as it:
        batch = next(it)
    assert set(batch.files) == {"a.mp4", "b.mkv"}
    assert batch.files == [it.dataset.file_of(int(i)) for i in batch.sample_ids]


@pytest.mark.timeout(30)
def test_timeout_in_the_transform_says_so(files: list[str], no_new_threads: None) -> None:
    release = threading.Event()

    def stuck(batch: Batch) -> None:
        release.wait(20)

    it = make(files, timeout=0.5, transform=stuck)
    try:
        with pytest.raises(TimeoutError, match=r"busy with: the transform, on samples \[") as e, it:
            next(it)
    finally:
        release.set()
    assert "epoch 0" in str(e.value)

"""Sample space, samplers, shards, resumable epochs, and the statistics of docs/sampling.md."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tvl_async._clips import VideoClipDataset
from tvl_async._index import load_index
from tvl_async._sampling import (
    SAMPLINGS,
    ChunkedSampler,
    EpochIterator,
    GopShuffleSampler,
    IntArray,
    SequentialSampler,
    UniformSampler,
    VideoDataset,
    distributed_rank,
    make_sampler,
    shuffle_buffer_order,
)
from tvl_async.cli.synthetic import frame_index_of, write_video

# ------------------------------------------------------------------------------ real videos


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small files: 40 frames (GOP 10), 6 frames (too short), 25 frames (GOP 8)."""
    d = tmp_path_factory.mktemp("sampling")
    return {
        "a": write_video(d / "a.mp4", n_frames=40, gop=10, width=64, height=48),
        "short": write_video(d / "short.mp4", n_frames=6, gop=10, width=64, height=48),
        "c": write_video(d / "c.mp4", n_frames=25, gop=8, width=64, height=48),
        "wide": write_video(d / "wide.mp4", n_frames=12, gop=6, width=96, height=48),
    }


def _dataset(clips: dict[str, Path], **kw: object) -> VideoDataset:
    files = [clips["a"], clips["short"], clips["c"]]
    with pytest.warns(UserWarning) as record:
        ds = VideoDataset(files, 4, stride=2, step=3, **kw)  # type: ignore[arg-type]
    assert len(record) == 1
    return ds


def test_short_file_skipped_with_one_warning_and_exact_offsets(clips: dict[str, Path]) -> None:
    files = [clips["a"], clips["short"], clips["c"]]
    with pytest.warns(UserWarning) as record:
        ds = VideoDataset(files, 4, stride=2, step=3)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "short.mp4" in msg and "6 frames" in msg and "spans 7 frames" in msg
    assert ds.skipped_files == [str(clips["short"])]
    assert ds.files == [str(f) for f in files]
    # a: starts 0,3,…,33 (12 clips); short: none; c: starts 0,3,…,18 (7 clips)
    assert len(ds) == 19
    assert list(ds.samples_per_file) == [12, 0, 7]
    assert ds.locate(0) == (0, 0)
    assert ds.locate(11) == (0, 33)
    assert ds.locate(12) == (2, 0)
    assert ds.locate(18) == (2, 18)
    assert ds.locate(-1) == (2, 18)
    assert ds.locate(-19) == (0, 0)
    for bad in (19, -20):
        with pytest.raises(IndexError, match=rf"{bad}.*0\.\.18"):
            ds.locate(bad)
    assert ds.clip_frames(12) == [0, 2, 4, 6]
    assert ds.clip_frames(11) == [33, 35, 37, 39]
    assert ds.file_of(12) == str(clips["c"])
    c_index = ds.indexes[2]
    assert ds.gop_of(15) == int(c_index.seek_key[9]) == 1
    assert ds.gop_of(3) == int(ds.indexes[0].seek_key[9]) == 0
    files_idx, starts = ds.sample_arrays()
    assert list(files_idx) == [0] * 12 + [2] * 7
    assert list(starts) == list(range(0, 34, 3)) + list(range(0, 19, 3))
    f, s = ds.locate_many([0, 12, -1])
    assert list(f) == [0, 2, 2] and list(s) == [0, 0, 18]


def test_clip_dataset_decodes_the_clip_frames(clips: dict[str, Path]) -> None:
    ds = _dataset(clips, get_label=lambda p: Path(p).stem)
    assert not hasattr(ds, "__getitem__")  # the sample space does not decode
    clip_ds = VideoClipDataset(ds)
    assert len(clip_ds) == len(ds) == 19
    item = clip_ds[13]
    assert item["frames"].shape == (4, 3, 48, 64) and item["frames"].dtype == torch.uint8
    assert [frame_index_of(x) for x in item["frames"]] == [3, 5, 7, 9]
    assert item["file"] == str(clips["c"]) and item["label"] == "c" == ds.label(13)
    assert item["frame_indices"].tolist() == [3, 5, 7, 9]
    assert [frame_index_of(x) for x in clip_ds[-8]["frames"]] == [33, 35, 37, 39]
    assert clip_ds[-8]["sample_id"] == 11
    clip_ds.close()
    clip_ds.close()
    with pytest.raises(ValueError, match="come from the given VideoDataset"):
        VideoClipDataset(ds, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = VideoClipDataset(
            [clips["a"], clips["short"], clips["c"]],
            4,
            stride=2,
            step=3,
            get_label=lambda p: Path(p).stem,
        )
    loader = torch.utils.data.DataLoader(direct, batch_size=2, shuffle=False)
    first = next(iter(loader))
    assert first["frame_indices"].tolist() == [[0, 2, 4, 6], [3, 5, 7, 9]]
    assert [[frame_index_of(x) for x in clip] for clip in first["frames"]] == [
        [0, 2, 4, 6],
        [3, 5, 7, 9],
    ]


def test_prebuilt_indexes_and_uniform_size(clips: dict[str, Path]) -> None:
    files = [clips["a"], clips["c"]]
    idx = [load_index(f) for f in files]
    ds = VideoDataset(files, 1, indexes=idx)
    assert ds.indexes[0] is idx[0] and len(ds) == 65
    assert ds.check_uniform_size() == (48, 64)
    assert ds.label(0) is None
    with pytest.raises(ValueError, match="1 entries for 2 files"):
        VideoDataset(files, 1, indexes=idx[:1])
    mixed = VideoDataset([clips["a"], clips["wide"]], 2)
    with pytest.raises(ValueError, match=r"a\.mp4.*64x48.*wide\.mp4.*96x48"):
        mixed.check_uniform_size()


def test_single_path_and_bad_arguments(clips: dict[str, Path]) -> None:
    assert len(VideoDataset(str(clips["c"]), 5, step=5)) == 5
    with pytest.raises(ValueError, match="empty"):
        VideoDataset([], 1)
    with pytest.raises(ValueError, match=r"Invalid seq_len \(0\)\. Supported values are int"):
        VideoDataset.from_frame_counts([10], 0)
    with pytest.raises(TypeError, match=r"Invalid stride \(1\.5\)\. Supported values are integers"):
        VideoDataset.from_frame_counts([10], 1, stride=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no file holds a clip"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        VideoDataset.from_frame_counts([3, 4], 5)
    fake = VideoDataset.from_frame_counts([10], 2)
    with pytest.raises(RuntimeError, match="frame counts"):
        fake.indexes  # noqa: B018
    with pytest.raises(RuntimeError, match="frame counts"):
        VideoClipDataset(fake)[0]
    with pytest.raises(TypeError):
        fake.locate(1.0)  # type: ignore[arg-type]


def test_many_skipped_files_make_one_warning() -> None:
    with pytest.warns(UserWarning) as record:
        ds = VideoDataset.from_frame_counts([2] * 30 + [50], 3, gop_size=5)
    assert len(record) == 1 and "30 file(s)" in str(record[0].message)
    assert "and 20 more" in str(record[0].message)
    assert ds.locate(0) == (30, 0) and len(ds) == 48


# ------------------------------------------------------------------------------ sample space


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    seq_len=st.integers(1, 5),
    stride=st.integers(1, 3),
    step=st.integers(1, 4),
)
def test_len_formula_and_lookups(counts: list[int], seq_len: int, stride: int, step: int) -> None:
    span = (seq_len - 1) * stride + 1
    expected = [max(0, (n - span) // step + 1) if n >= span else 0 for n in counts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sum(expected) == 0:
            with pytest.raises(ValueError):
                VideoDataset.from_frame_counts(counts, seq_len, stride=stride, step=step)
            return
        ds = VideoDataset.from_frame_counts(counts, seq_len, stride=stride, step=step, gop_size=4)
    assert len(ds) == sum(expected)
    files, starts = ds.sample_arrays()
    walk = [(f, k * step) for f, c in enumerate(expected) for k in range(c)]
    assert list(zip(files.tolist(), starts.tolist(), strict=True)) == walk
    for i, (f, s) in enumerate(walk):
        assert ds.locate(i) == (f, s)
        frames = ds.clip_frames(i)
        assert frames == [s + j * stride for j in range(seq_len)] and frames[-1] < counts[f]
        assert ds.gop_of(i) == s // 4 == ds.sample_gops()[i]
    lf, ls = ds.locate_many(np.arange(len(ds)))
    assert lf.tolist() == files.tolist() and ls.tolist() == starts.tolist()


def _fake(counts: list[int], gop: int = 4) -> VideoDataset:
    return VideoDataset.from_frame_counts(counts, 1, gop_size=gop)


# ---------------------------------------------------------------------------------- samplers


def test_sequential_and_shuffle_false() -> None:
    ds = _fake([5, 7])
    for name in SAMPLINGS:
        s = make_sampler(ds, name, shuffle=False)
        assert isinstance(s, SequentialSampler)
        assert s.epoch_order(3).tolist() == list(range(12))
    assert len(make_sampler(ds, "sequential")) == 12


def test_uniform_permutation_reproducible_and_varied() -> None:
    ds = _fake([30, 20, 50])
    s = make_sampler(ds, "uniform", seed=7)
    assert isinstance(s, UniformSampler)
    e0, e1 = s.epoch_order(0), s.epoch_order(1)
    assert sorted(e0.tolist()) == list(range(100)) and sorted(e1.tolist()) == list(range(100))
    assert e0.tolist() != e1.tolist()
    assert UniformSampler(ds, seed=7).epoch_order(1).tolist() == e1.tolist()  # no history
    assert UniformSampler(ds, seed=8).epoch_order(0).tolist() != e0.tolist()
    assert e0.tolist() == np.random.default_rng([7, 0]).permutation(100).tolist()


def test_uniform_with_replacement() -> None:
    ds = _fake([30, 20, 50])
    s = make_sampler(ds, "uniform", replacement=True, seed=3)
    o = s.epoch_order(0)
    assert len(o) == len(s) == 100 and o.min() >= 0 and o.max() < 100
    assert len(set(o.tolist())) < 100
    again = make_sampler(ds, "uniform", replacement=True, seed=3)
    assert o.tolist() == again.epoch_order(0).tolist()
    assert o.tolist() != s.epoch_order(1).tolist()


def _chunks_of(ds: VideoDataset, k: int) -> list[list[int]]:
    out, off = [], 0
    for c in ds.samples_per_file.tolist():
        out += [list(range(off + j, off + min(j + k, c))) for j in range(0, c, k)]
        off += c
    return out


@pytest.mark.parametrize("k", [1, 3, 8])
def test_chunked_each_sample_once_chunks_contiguous(k: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = VideoDataset.from_frame_counts([10, 0, 7, 16, 1], 1, gop_size=4)
    s = make_sampler(ds, "chunked", chunk_size=k, seed=1)
    assert isinstance(s, ChunkedSampler)
    chunks = _chunks_of(ds, k)
    for epoch in range(4):
        o = s.epoch_order(epoch).tolist()
        assert sorted(o) == list(range(len(ds)))
        got, pos = [], 0
        while pos < len(o):  # each chunk appears whole, ascending, where its first sample is
            chunk = next(c for c in chunks if c[0] == o[pos])
            assert o[pos : pos + len(chunk)] == chunk
            got.append(chunk)
            pos += len(chunk)
        assert sorted(got) == sorted(chunks)
    if k > 1:
        assert s.epoch_order(0).tolist() != s.epoch_order(1).tolist()


def test_gop_shuffle_each_sample_once() -> None:
    ds = _fake([23, 40, 9], gop=5)
    s = make_sampler(ds, "gop_shuffle", shuffle_buffer=6, seed=2)
    assert isinstance(s, GopShuffleSampler) and s.n_groups == 5 + 8 + 2
    for epoch in range(5):
        assert sorted(s.epoch_order(epoch).tolist()) == list(range(len(ds)))
    assert (
        s.epoch_order(2).tolist()
        == GopShuffleSampler(ds, shuffle_buffer=6, seed=2).epoch_order(2).tolist()
    )
    # a buffer of one slot passes the group stream through: groups appear whole and ascending
    gops = ds.sample_gops()
    files, _ = ds.sample_arrays()
    o = make_sampler(ds, "gop_shuffle", shuffle_buffer=1).epoch_order(0)
    key = (files * 100 + gops)[o]
    runs = np.flatnonzero(np.diff(key)) + 1
    assert len(runs) + 1 == 15 and np.all(np.diff(o)[np.diff(key) == 0] == 1)


class _Space:
    """A SampleSpace whose GOP ids are not sorted inside a file (exercises the sorting path)."""

    def __init__(self) -> None:
        self.samples_per_file = np.array([6, 4], dtype=np.int64)

    def __len__(self) -> int:
        return 10

    def sample_arrays(self) -> tuple[IntArray, IntArray]:
        return np.array([0] * 6 + [1] * 4), np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3])

    def sample_gops(self) -> IntArray:
        return np.array([1, 0, 1, 0, 2, 2, 0, 0, 1, 1])


def test_gop_shuffle_groups_unsorted_gops() -> None:
    s = GopShuffleSampler(_Space(), shuffle_buffer=1)
    assert s.n_groups == 5
    o = s.global_order(0).tolist()
    runs = {tuple(o[i : i + 2]) for i in range(0, 10, 2)}
    assert runs == {(0, 2), (1, 3), (4, 5), (6, 7), (8, 9)}


def _reference_buffer(stream: list[int], size: int, rng: np.random.Generator) -> list[int]:
    if len(stream) <= size:
        return [stream[i] for i in rng.permutation(len(stream))]
    slots = rng.integers(0, size, size=len(stream) - size, dtype=np.int64)
    drain = rng.permutation(size)
    buf, out = list(stream[:size]), []
    for x, j in zip(stream[size:], slots.tolist(), strict=True):
        out.append(buf[j])
        buf[j] = x
    return out + [buf[d] for d in drain.tolist()]


@pytest.mark.parametrize(("n", "size"), [(50, 7), (7, 7), (5, 9), (200, 1), (300, 64)])
def test_shuffle_buffer_matches_the_classic_loop(n: int, size: int) -> None:
    stream = (np.arange(n, dtype=np.int64) * 7919) % 100003
    fast = shuffle_buffer_order(stream, size, np.random.default_rng(5))
    slow = _reference_buffer(stream.tolist(), size, np.random.default_rng(5))
    assert fast.tolist() == slow


def test_make_sampler_errors() -> None:
    ds = _fake([10])
    with pytest.raises(ValueError, match=r"Invalid sampling \('random'\).*uniform.*gop_"):
        make_sampler(ds, "random")
    with pytest.raises(ValueError, match="replacement"):
        make_sampler(ds, "chunked", replacement=True)
    with pytest.raises(ValueError, match="replacement"):
        make_sampler(ds, "uniform", replacement=True, shuffle=False)
    with pytest.raises(ValueError, match=r"Invalid chunk_size \(0\)"):
        make_sampler(ds, "chunked", chunk_size=0)
    with pytest.raises(ValueError, match=r"Invalid seed \(-1\)"):
        make_sampler(ds, seed=-1)
    with pytest.raises(ValueError, match=r"Invalid rank \(2\) for world_size=2.*0\.\.1"):
        make_sampler(ds, rank=2, world_size=2)
    with pytest.raises(ValueError, match="together"):
        make_sampler(ds, world_size=2)
    assert distributed_rank() == (0, 1)
    with pytest.raises(ValueError, match=r"Invalid epoch \(-1\)"):
        make_sampler(ds).epoch_order(-1)


# ------------------------------------------------------------------------------------ shards


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 60),
    world=st.integers(1, 7),
    drop_last=st.booleans(),
    sampling=st.sampled_from(SAMPLINGS),
    replacement=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_shards_disjoint_cover_equal(
    n: int, world: int, drop_last: bool, sampling: str, replacement: bool, epoch: int
) -> None:
    replacement = replacement and sampling == "uniform"
    ds = _fake([n], gop=3)
    samplers = [
        make_sampler(
            ds,
            sampling,
            replacement=replacement,
            seed=11,
            chunk_size=4,
            shuffle_buffer=5,
            rank=r,
            world_size=world,
            drop_last=drop_last,
        )
        for r in range(world)
    ]
    shards = [s.epoch_order(epoch) for s in samplers]
    full = samplers[0].global_order(epoch)
    per_rank = n // world if drop_last else math.ceil(n / world)
    assert all(len(x) == len(s) == per_rank for x, s in zip(shards, samplers, strict=True))
    total = per_rank * world
    padded = np.tile(full, math.ceil(total / n))[:total] if total > n else full[:total]
    if samplers[0].contiguous_shards:
        assert np.concatenate(shards).tolist() == padded.tolist()
    else:
        assert all(shards[r].tolist() == padded[r::world].tolist() for r in range(world))
    if not replacement:
        got = np.concatenate(shards).tolist()
        if drop_last:
            assert len(set(got)) == len(got) == total  # disjoint
        else:
            assert set(got) == set(range(n))  # covers the epoch
            assert len(got) - len(set(got)) == total - n  # only the padding repeats


# -------------------------------------------------------------------------------- epochs, state


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_resume_mid_epoch_equals_uninterrupted(sampling: str) -> None:
    ds = _fake([13, 20, 8], gop=4)

    def sampler() -> object:
        return make_sampler(
            ds, sampling, seed=5, chunk_size=3, shuffle_buffer=6, rank=1, world_size=2
        )

    full = list(EpochIterator(sampler(), epochs=3))  # type: ignore[arg-type]
    assert len(full) == 3 * 21
    assert [e for e, _, _ in full] == [0] * 21 + [1] * 21 + [2] * 21
    assert [p for _, p, _ in full] == list(range(21)) * 3
    for cut in (0, 7, 21, 30, 62):
        it = EpochIterator(sampler(), epochs=3)  # type: ignore[arg-type]
        head = [next(it) for _ in range(cut)]
        state = json.loads(json.dumps(it.state_dict()))
        again = make_sampler(
            ds, sampling, seed=99, chunk_size=3, shuffle_buffer=6, rank=1, world_size=2
        )
        resumed = EpochIterator(again, epochs=3)
        resumed.load_state_dict(state)
        assert again.seed == 5
        assert head + list(resumed) == full


def test_state_dict_fields_at_and_epoch_control() -> None:
    ds = _fake([10])
    s = make_sampler(ds, "uniform", seed=4)
    it = EpochIterator(s, epochs=None, start_epoch=2)
    for _ in range(10):
        next(it)
    st_ = it.state_dict()
    assert {
        k: st_[k]
        for k in ("epoch", "position", "seed", "sampler", "dataset_len", "rank", "world_size")
    } == {
        "epoch": 3,
        "position": 0,
        "seed": 4,
        "sampler": "uniform",
        "dataset_len": 10,
        "rank": 0,
        "world_size": 1,
    }
    assert it.state_dict(at=(2, 4))["position"] == 4
    assert next(it)[:2] == (3, 0)
    it.set_epoch(7)
    assert next(it) == (7, 0, int(s.epoch_order(7)[0]))
    forever = [next(it) for _ in range(25)]
    assert forever[-1][0] == 9  # endless with epochs=None
    done = EpochIterator(s, epochs=1)
    assert len(list(done)) == 10 and list(done) == []
    assert done.state_dict()["epoch"] == 1
    done.set_epoch(5)  # a new run of `epochs` epochs from epoch 5
    assert [e for e, _, _ in done] == [5] * 10
    assert list(EpochIterator(s, epochs=0)) == []


def test_load_state_dict_rejects_other_setups() -> None:
    ds = _fake([10, 6])
    state = EpochIterator(make_sampler(ds, "chunked", chunk_size=4)).state_dict()
    cases = [
        (make_sampler(_fake([10, 7]), "chunked", chunk_size=4), "dataset_len: saved 16, now 17"),
        (make_sampler(ds, "uniform"), "sampler: saved 'chunked', now 'uniform'"),
        (make_sampler(ds, "chunked", chunk_size=2), "chunk_size"),
        (make_sampler(ds, "chunked", chunk_size=4, rank=0, world_size=2), "world_size: saved 1"),
    ]
    for sampler, match in cases:
        with pytest.raises(ValueError, match=match):
            EpochIterator(sampler).load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        EpochIterator(make_sampler(ds)).load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="past the epoch"):
        EpochIterator(make_sampler(ds, "chunked", chunk_size=4)).load_state_dict(
            {**state, "position": 17}
        )
    with pytest.raises(ValueError, match="no samples"):
        EpochIterator(make_sampler(_fake([1]), rank=1, world_size=2, drop_last=True))


# ------------------------------------------------- statistics against docs/sampling.md formulas

F_FILES, N_PER_FILE, GOP, BATCH = 24, 96, 8, 16
N_ALL = F_FILES * N_PER_FILE
PAIRS = BATCH * (BATCH - 1) / 2


def _pairs_per_batch(order: IntArray, key: IntArray) -> IntArray:
    nb = len(order) // BATCH
    k = key[order[: nb * BATCH]].reshape(nb, BATCH)
    same = (k[:, :, None] == k[:, None, :]).sum(axis=(1, 2)) - BATCH
    return np.asarray(same // 2, dtype=np.int64)


def _measure(sampling: str, epochs: int, trim: int = 0, **kw: object) -> dict[str, float]:
    """Mean same-GOP / same-file pairs per batch and inclusion rate over ``epochs`` epochs."""
    ds = _fake([N_PER_FILE] * F_FILES, gop=GOP)
    s = make_sampler(ds, sampling, seed=123, **kw)  # type: ignore[arg-type]
    files, _ = ds.sample_arrays()
    gop_key = files * 1000 + ds.sample_gops()
    gop_means, file_means, incl = [], [], []
    for epoch in range(epochs):
        o = s.epoch_order(epoch)
        incl.append(len(np.unique(o)) / N_ALL)
        if trim:
            o = o[trim : len(o) - trim]
        gop_means.append(_pairs_per_batch(o, gop_key).mean())
        file_means.append(_pairs_per_batch(o, files).mean())
    return {
        "gop": float(np.mean(gop_means)),
        "gop_se": float(np.std(gop_means) / epochs**0.5),
        "file": float(np.mean(file_means)),
        "file_se": float(np.std(file_means) / epochs**0.5),
        "incl": float(np.mean(incl)),
    }


def _close(measured: float, se: float, formula: float, rel: float) -> bool:
    return abs(measured - formula) <= 4 * se + rel * formula


def test_iid_statistics_uniform_with_replacement() -> None:
    m = _measure("uniform", 150, replacement=True)
    assert m["incl"] == pytest.approx(1 - (1 - 1 / N_ALL) ** N_ALL, abs=0.003)
    assert _close(m["gop"], m["gop_se"], PAIRS * GOP / N_ALL, 0.02)
    assert _close(m["file"], m["file_se"], PAIRS / F_FILES, 0.02)


def test_uniform_permutation_statistics() -> None:
    m = _measure("uniform", 150)
    assert m["incl"] == 1.0
    assert _close(m["gop"], m["gop_se"], PAIRS * (GOP - 1) / (N_ALL - 1), 0.02)
    assert _close(m["file"], m["file_se"], PAIRS * (N_PER_FILE - 1) / (N_ALL - 1), 0.02)


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_chunked_statistics(k: int) -> None:
    m = _measure("chunked", 100, chunk_size=k)
    a_k = k * (min(k, GOP) - 1) / 2
    gop = BATCH / k * a_k + BATCH * (BATCH - k) / 2 * max(GOP - k, 0) / (N_ALL - k)
    file = BATCH * (k - 1) / 2 + BATCH * (BATCH - k) / 2 * (N_PER_FILE - k) / (N_ALL - k)
    assert m["incl"] == 1.0
    assert _close(m["gop"], m["gop_se"], gop, 0.02)
    assert _close(m["file"], m["file_se"], file, 0.02)


@pytest.mark.parametrize("size", [64, 128])
def test_gop_shuffle_statistics(size: int) -> None:
    m = _measure("gop_shuffle", 150, trim=3 * size, shuffle_buffer=size)  # steady state only
    gop = PAIRS * (GOP - 1) / (2 * size) * (1 - (BATCH - 2) / (3 * size))
    file = gop + (PAIRS - gop) * (N_PER_FILE - GOP) / (N_ALL - GOP)
    assert m["incl"] == 1.0
    assert _close(m["gop"], m["gop_se"], gop, 0.04)
    assert _close(m["file"], m["file_se"], file, 0.04)
    # far from i.i.d.: about N(G-1)/(2SG) times its same-GOP pairs
    assert m["gop"] > 5 * PAIRS * GOP / N_ALL


def test_rank_and_world_size_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before init_process_group, torchrun's RANK/WORLD_SIZE give the shard; arguments win."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed_rank() == (1, 3)
    assert distributed_rank(0, 2) == (0, 2)
    ds = VideoDataset.from_frame_counts([30], 1)
    shards = [UniformSampler(ds, seed=0, rank=r, world_size=3).epoch_order(0) for r in range(3)]
    assert np.array_equal(UniformSampler(ds, seed=0).epoch_order(0), shards[1])
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match=r"RANK \('x'\)"):
        distributed_rank()


def test_world_size_without_a_rank_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORLD_SIZE=2 with no RANK: refuse, never read the whole epoch on every rank."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="rank is unknown"):
        distributed_rank()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_rank() == (0, 1)

"""The DataLoader loops of ``tvl-async bench``: the baseline a user would write (workers that
open, seek and decode with PyAV, ``thread_type="AUTO"``) and its peers (TorchCodec, decord: one
cached decoder per file and worker), each with the reference processing per item.

Each ``run_*`` function blocks, calls ``on_batch()`` after every batch and returns a
:class:`~tvl_async.cli.bench.workloads.RunResult`. The peers are run only when their package
imports (:func:`peer_unavailable` says why not).
"""

from __future__ import annotations

import importlib
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from tvl_async import load_index
from tvl_async.cli.bench.workloads import RunResult, _touch, color_jitter, random_resized_crop

PEERS = ("torchcodec", "decord")
CACHED_DECODERS = 8  # open decoders each peer worker keeps (least recently used closed first)


class SeekDataset(torch.utils.data.Dataset[torch.Tensor]):
    """The usual video Dataset: each item opens its file with PyAV, seeks to the keyframe at or
    before the frame, decodes up to the frame, converts it to RGB, crops and jitters it."""

    def __init__(self, items: list[tuple[str, int]], crop: int, seed: int) -> None:
        self.items = items  # (path, pts of the frame)
        self.crop = crop
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        import av

        path, pts = self.items[i]
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg frame threading, as a user would set it
            container.seek(pts, stream=stream, backward=True, any_frame=False)
            found = None
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= pts:
                    found = frame
                    break
            if found is None:
                raise RuntimeError(f"{path}: no frame at pts {pts}")
            img = torch.from_numpy(found.to_ndarray(format="rgb24")).permute(2, 0, 1)
        rng = random.Random(self.seed * 1_000_003 + i)
        img = random_resized_crop(img, self.crop, rng)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return color_jitter(img[None], gen)[0]


def uniform_items(files: list[str], n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` uniformly random frames (without replacement while the set lasts) as (path, pts)."""
    import numpy as np

    indexes = [load_index(f) for f in files]
    counts = np.array([ix.n_frames for ix in indexes])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(seed)
    total = int(offsets[-1])
    ids = np.concatenate([rng.permutation(total) for _ in range(-(-n // total))])[:n]
    out = []
    for s in ids.tolist():
        k = int(np.searchsorted(offsets, s, side="right")) - 1
        out.append((indexes[k].path, int(indexes[k].pts[s - offsets[k]])))
    return out


def run_baseline(
    files: list[str],
    *,
    batch_size: int,
    n_batches: int,
    crop: int,
    seed: int,
    workers: int,
    device: str,
    on_batch: Callable[[], None],
) -> RunResult:
    """torch DataLoader, ``workers`` worker processes, the SeekDataset above."""
    started = time.perf_counter()
    items = uniform_items(files, n_batches * batch_size, seed)
    return _run_loader(
        SeekDataset(items, crop, seed), batch_size, n_batches, workers, device, on_batch, started
    )


# ----------------------------------------------------------------------------- peers


def peer_unavailable(peer: str) -> str | None:
    """None if ``peer`` (``"torchcodec"`` or ``"decord"``) imports here, else why not (one line)."""
    try:
        _module(peer)
    except Exception as e:  # ImportError, or OSError from a wheel built for other libraries
        return f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return None


def _module(peer: str) -> Any:
    """The peer's decoder module, imported (``torchcodec.decoders`` or ``decord``)."""
    return importlib.import_module("torchcodec.decoders" if peer == "torchcodec" else "decord")


class PeerDataset(torch.utils.data.Dataset[torch.Tensor]):
    """Frames by index with a peer decoder, one per file cached in each worker; then the same
    crop and jitter as the baseline."""

    def __init__(self, peer: str, items: list[tuple[str, int]], crop: int, seed: int) -> None:
        self.peer, self.items, self.crop, self.seed = peer, items, crop, seed
        self._open: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def _decoder(self, path: str) -> Any:
        dec = self._open.pop(path, None)
        if dec is None:
            mod = _module(self.peer)
            if self.peer == "torchcodec":
                dec = mod.VideoDecoder(path, seek_mode="approximate", num_ffmpeg_threads=0)
            else:
                dec = mod.VideoReader(path, ctx=mod.cpu(0), num_threads=0)
            while len(self._open) >= CACHED_DECODERS:
                self._open.popitem(last=False)
        self._open[path] = dec
        return dec

    def __getitem__(self, i: int) -> torch.Tensor:
        path, frame = self.items[i]
        dec = self._decoder(path)
        if self.peer == "torchcodec":
            img = dec[frame]  # [3, H, W] uint8
        else:
            img = torch.from_numpy(dec[frame].asnumpy()).permute(2, 0, 1)
            # decord goes on decoding after a random access and keeps every frame: one worker
            # grew to 13 GB and the OOM killer stopped the run. Seeking back to frame 0, the
            # fix its users give (dmlc/decord issues 197, 208), held a worker at 0.8 GB and
            # made it 4.6x faster (150 frames of the reference set).
            dec.seek(0)
        rng = random.Random(self.seed * 1_000_003 + i)
        img = random_resized_crop(img, self.crop, rng)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return color_jitter(img[None], gen)[0]


def run_peer(
    peer: str,
    files: list[str],
    *,
    batch_size: int,
    n_batches: int,
    crop: int,
    seed: int,
    workers: int,
    device: str,
    on_batch: Callable[[], None],
) -> RunResult:
    """torch DataLoader, ``workers`` worker processes, :class:`PeerDataset` over the same
    frames as the baseline."""
    started = time.perf_counter()
    indexes = {f: load_index(f) for f in files}
    items = []
    for path, pts in uniform_items(files, n_batches * batch_size, seed):
        items.append((path, int(indexes[path].frame_of_pts(pts) or 0)))
    ds = PeerDataset(peer, items, crop, seed)
    return _run_loader(ds, batch_size, n_batches, workers, device, on_batch, started)


def _run_loader(
    ds: torch.utils.data.Dataset[torch.Tensor],
    batch_size: int,
    n_batches: int,
    workers: int,
    device: str,
    on_batch: Callable[[], None],
    started: float,
) -> RunResult:
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        num_workers=workers,
        shuffle=False,
        pin_memory=device.startswith("cuda"),
    )
    arrivals = []
    it = iter(loader)
    for _ in range(n_batches):
        x = next(it)
        if device != "cpu":
            x = x.to(device, non_blocking=True)
        _touch(x)
        arrivals.append(time.perf_counter())
        on_batch()
    del it  # joins the workers, so that their peak RSS counts in RUSAGE_CHILDREN
    return RunResult(arrivals=arrivals, started=started)

"""A map-style adapter for a plain ``torch.utils.data.DataLoader``: :class:`VideoClipDataset`.

Each ``dataset[i]`` decodes sample ``i`` of a :class:`~tvl_async._dataset.VideoDataset` on the
spot with a :class:`~tvl_async._loader.VideoLoader`: one seek and one GOP decode per sample, no
planning, no lookahead. It is slow next to the Prefetcher (which decodes each GOP once for all
the samples it holds) and is meant for debugging and for code that must stay on a DataLoader.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch

from tvl_async._dataset import VideoDataset
from tvl_async._loader import VideoLoader

#: Files each calling thread keeps open (loaders, with their decoders).
OPEN_FILES_PER_THREAD = 4


class VideoClipDataset:
    """``dataset[i]``: the decoded clip of sample ``i``, synchronously, on the CPU.

    Args:
        files_or_dataset: a :class:`VideoDataset`, or files (as for it) with the options below.
        seq_len, stride, step, get_label: as for :class:`VideoDataset` (with files only).

    Items are ``{"frames": [seq_len, 3, H, W] uint8 tensor, "file": path, "frame_indices":
    [seq_len] int64 tensor, "label": label or None, "sample_id": i}`` (``i`` made
    non-negative). ``__getitem__`` blocks while it decodes; each calling thread (or DataLoader
    worker process) opens its own loaders, up to :data:`OPEN_FILES_PER_THREAD` files, closed by
    :meth:`close` in that thread or at garbage collection. Nothing else is shared, so any
    thread may call it.

    Raises:
        ValueError: clip options given with a :class:`VideoDataset` (it has its own).
    """

    def __init__(
        self,
        files_or_dataset: VideoDataset | str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        seq_len: int = 1,
        *,
        stride: int = 1,
        step: int = 1,
        get_label: Callable[[str], Any] | None = None,
    ) -> None:
        if isinstance(files_or_dataset, VideoDataset):
            if (seq_len, stride, step, get_label) != (1, 1, 1, None):
                raise ValueError(
                    "seq_len, stride, step and get_label come from the given "
                    "VideoDataset; set them there instead"
                )
            self.dataset = files_or_dataset
        else:
            self.dataset = VideoDataset(
                files_or_dataset, seq_len, stride=stride, step=step, get_label=get_label
            )
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ds = self.dataset
        file_index, _ = ds.locate(i)
        frames = ds.clip_frames(i)
        clip = self._loader(ds.indexes[file_index].path).read_frames_at(frames)
        return {
            "frames": clip,
            "file": ds.files[file_index],
            "frame_indices": torch.tensor(frames, dtype=torch.int64),
            "label": ds.label(i),
            "sample_id": int(i) % len(ds),
        }

    def _loader(self, path: str) -> VideoLoader:
        """The calling thread's loader for ``path`` (the least recently used one is closed)."""
        open_: OrderedDict[str, VideoLoader] | None = getattr(self._local, "loaders", None)
        if open_ is None:
            open_ = self._local.loaders = OrderedDict()
        loader = open_.get(path)
        if loader is None:
            loader = open_[path] = VideoLoader(path)
            if len(open_) > OPEN_FILES_PER_THREAD:
                open_.popitem(last=False)[1].close()
        open_.move_to_end(path)
        return loader

    def close(self) -> None:
        """Close the calling thread's loaders; safe to call twice."""
        open_: OrderedDict[str, VideoLoader] | None = getattr(self._local, "loaders", None)
        while open_:
            open_.popitem()[1].close()

    def __getstate__(self) -> dict[str, Any]:
        return {"dataset": self.dataset}  # decoders never travel to another process

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dataset = state["dataset"]
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"VideoClipDataset({self.dataset!r})"

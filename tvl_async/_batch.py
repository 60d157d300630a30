"""What the consumer receives: :class:`Batch`, and the :class:`PrefetchStats` snapshot.

Both are plain data, built by the service thread (``tvl_async._service``) and read by the
consumer; nothing here blocks or touches a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch


class Batch(Mapping[str, torch.Tensor]):
    """A ready batch: output tensors by name (``"default"`` without processing) plus metadata.

    Attributes:
        sample_ids: ``[B]`` int64 dataset indices of the clips.
        files: ``B`` file paths.
        frame_indices: ``[B, F]`` int64 frame indices of each clip (F = ``seq_len``).
        timestamps: ``[B, F]`` float64 presentation times in seconds.
        labels: ``B`` labels (a tensor when they are all numbers, else a list; None without
            ``get_label``).
        epoch: the epoch the samples belong to.
        augment: per output name, the random crop/flip drawn for each clip.
    """

    def __init__(self, outputs: dict[str, torch.Tensor], *, sample_ids: torch.Tensor,
                 files: list[str], frame_indices: torch.Tensor, timestamps: torch.Tensor,
                 labels: Any, epoch: int, augment: dict[str, list[dict[str, Any]]]) -> None:
        self.outputs = outputs
        self.sample_ids = sample_ids
        self.files = files
        self.frame_indices = frame_indices
        self.timestamps = timestamps
        self.labels = labels
        self.epoch = epoch
        self.augment = augment
        self.event: Any = None  # CUDA event recorded after the batch was produced
        # where a run resumes after this batch: (epoch, position) of the next sample, and the
        # failures per file so far (on_error="skip"), set by the service thread
        self.resume_at: tuple[int, int] = (epoch, 0)
        self.resume_failures: dict[str, int] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def batch_size(self) -> int:
        """Number of clips."""
        return len(self.files)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype} {v.device}"
                           for k, v in self.outputs.items())
        return f"Batch(epoch={self.epoch}, samples={self.sample_ids.tolist()}, {shapes})"


@dataclass(frozen=True)
class SkippedSample:
    """A sample dropped with ``on_error="skip"``."""

    epoch: int
    sample_id: int
    file: str
    frames: list[int]
    error: str


@dataclass(frozen=True)
class PrefetchStats:
    """A snapshot of the service's counters (see :meth:`Prefetcher.stats`). Times in seconds.

    Attributes:
        batches_delivered, samples_delivered, frames_delivered: handed to the consumer.
        frames_decoded: frames the decoders produced.
        decoded_per_delivered: frames decoded per frame delivered (1.0 = no wasted decoding).
        decode_rate: frames decoded per second of decoder busy time (all decode threads).
        wait_time: total time the consumer waited for batches.
        wait_time_after_first: the same, not counting the first batch.
        queue_fill: batches ready in the queue now; queue_depth: its capacity.
        samples_skipped: samples dropped (``on_error="skip"``); skipped: the first 1000 of them.
        dropped_files: files given up after repeated failures.
        fallback_files: files the GPU decoder could not handle, decoded on the CPU instead.
        lookahead: samples planned ahead; memory_bound_bytes: lookahead × output bytes per sample;
        peak_buffer_bytes: most bytes the reorder buffer held.
        elapsed: seconds since the service started.
        unindexed_files: files left out at construction because they could not be indexed
            (``on_error="skip"``; the warning gave each one's cause).
    """

    batches_delivered: int
    samples_delivered: int
    frames_delivered: int
    frames_decoded: int
    decoded_per_delivered: float
    decode_rate: float
    wait_time: float
    wait_time_after_first: float
    queue_fill: int
    queue_depth: int
    samples_skipped: int
    skipped: list[SkippedSample]
    dropped_files: list[str]
    fallback_files: list[str]
    lookahead: int
    memory_bound_bytes: int
    peak_buffer_bytes: int
    elapsed: float
    decode_threads: int
    unindexed_files: list[str] = field(default_factory=list)

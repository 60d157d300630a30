"""What the consumer receives: :class:`Batch`, and the :class:`PrefetchStats` snapshot.

Both are plain data, built by the service thread (``tvl_async._service``) and read by the
consumer; nothing here blocks or touches a thread.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tvl_async._checks import invalid_type


@dataclass(init=False, repr=False, eq=False)
class Batch(Mapping[str, torch.Tensor]):
    """A ready batch: output tensors by name (``"default"`` without processing) plus metadata.

    ``Batch`` is a mapping (``batch["default"]``, ``len``, iteration over the output names) and a
    dataclass, so that the collection utilities of trainers rebuild it whole:
    ``lightning_utilities``' ``apply_to_collection`` (used by Lightning's batch transfer,
    ``move_data_to_device`` and its precision plugins) maps the function over the output
    tensors and ``labels`` (the training targets follow the data to the model's device) and
    keeps the identifying metadata as it came (``sample_ids``, ``files``, ``frame_indices``,
    ``timestamps``, ``epoch``, ``augment``): they stay on the CPU, where ``.tolist()`` costs no
    device sync, and a half-precision cast never rounds the float64 timestamps.

    Attributes:
        outputs: the output tensors by name.
        labels: ``B`` labels (a tensor when they are all numbers, else a list; None without
            ``get_label``).
        sample_ids: ``[B]`` int64 dataset indices of the clips.
        files: ``B`` file paths.
        frame_indices: ``[B, F]`` int64 frame indices of each clip (F = ``seq_len``).
        timestamps: ``[B, F]`` float64 presentation times in seconds.
        epoch: the epoch the samples belong to.
        augment: per output name, the random crop/flip drawn for each clip.
    """

    # init=True fields: what apply_to_collection maps its function over
    outputs: dict[str, torch.Tensor]
    labels: Any
    # init=False fields: kept as they are by apply_to_collection
    sample_ids: torch.Tensor = field(init=False)
    files: list[str] = field(init=False)
    frame_indices: torch.Tensor = field(init=False)
    timestamps: torch.Tensor = field(init=False)
    epoch: int = field(init=False)
    augment: dict[str, list[dict[str, Any]]] = field(init=False)

    def __init__(
        self,
        outputs: Mapping[str, torch.Tensor],
        *,
        sample_ids: torch.Tensor,
        files: list[str],
        frame_indices: torch.Tensor,
        timestamps: torch.Tensor,
        labels: Any = None,
        epoch: int,
        augment: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        if not isinstance(outputs, Mapping):
            raise invalid_type(
                "Batch outputs",
                outputs,
                "a mapping from output name to tensor",
                shown=type(outputs).__name__,
            )
        self.outputs = dict(outputs)
        self.sample_ids = sample_ids
        self.files = files
        self.frame_indices = frame_indices
        self.timestamps = timestamps
        self.labels = labels
        self.epoch = epoch
        self.augment = {} if augment is None else augment

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Batch:
        """A deep copy; a CUDA event (a synchronisation handle, which cannot be copied) is
        shared. ``apply_to_collection`` deep-copies a dataclass with its fields in ``memo``."""
        new = object.__new__(type(self))
        memo[id(self)] = new
        for name, value in vars(self).items():
            shared = isinstance(value, torch.cuda.Event)
            new.__dict__[name] = value if shared else copy.deepcopy(value, memo)
        return new

    @property
    def batch_size(self) -> int:
        """Number of clips."""
        return len(self.files)

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{k}: {tuple(v.shape)} {v.dtype} {v.device}" for k, v in self.outputs.items()
        )
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
        frames_decoded: frames decoded for the samples taken so far (delivered, skipped or
            dropped with ``drop_last``): each decode job counts at its earliest sample, so the
            service's decoding ahead (into the next epoch) shows up once it is delivered.
        decoded_per_delivered: frames decoded per frame delivered (1.0 = no wasted decoding).
        decode_rate: frames decoded per second of decoder busy time (all decode threads).
        wait_time: total time the consumer waited for batches.
        wait_time_after_first: the same, not counting the first batch.
        queue_fill: batches ready in the queue now; queue_depth: its capacity.
        samples_skipped: samples dropped (``on_error="skip"``); skipped: the first 1000 of them.
        dropped_files: files given up after repeated failures.
        fallback_files: files the GPU decoder could not handle, decoded on the CPU instead.
        lookahead: samples planned ahead; memory_bound_bytes: lookahead × bytes per held sample
            (``sample_bytes``); peak_buffer_bytes: most bytes the reorder buffer held.
        elapsed: seconds since the service started.
        decode_threads: CPU decode threads.
        epoch_start_waits: seconds the consumer waited for the first batch of each epoch it
            started, in order (the first entry includes the service's start-up).
        unindexed_files: files left out at construction because they could not be indexed
            (``on_error="skip"``; the warning gave each one's cause).
        bytes_read: bytes fetched from remote (URL) sources since the service started, index
            reads included (counted per process: Prefetchers running together share it).
        bytes_read_per_sample: ``bytes_read`` per sample delivered.
        held_samples, held_bytes: finished samples waiting in the reorder buffer, and their
            bytes, as of the last sample the service took (float outputs wait as uint8 and are
            converted per batch).
        sample_bytes: bytes of one finished sample as held (all outputs, largest file).
        memory_budget: the ``memory_budget`` option, or the default resolved at the start
            (bytes); the default lookahead holds at most this much.
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
    epoch_start_waits: list[float] = field(default_factory=list)
    unindexed_files: list[str] = field(default_factory=list)
    bytes_read: int = 0
    bytes_read_per_sample: float = 0.0
    held_samples: int = 0
    held_bytes: int = 0
    sample_bytes: int = 0
    memory_budget: int = 0

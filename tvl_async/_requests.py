"""What the service thread works from: its :class:`ServicePlan`, and the sample requests.

:func:`requests` turns the sampler's stream into :class:`SampleRequest` objects in sampler order,
each with its frames, its label and its random draws (made here, from a seed per place in the
epoch, so they do not depend on decoding order or on the number of ranks). It runs in the
service thread; the plan is built by the consumer's thread before the service starts and then
belongs to the service thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import janus
import numpy as np
import torch

from tvl_async._augment import AugmentParams, draw_augment
from tvl_async._batch import Batch
from tvl_async._channel import Control, Counters, Item
from tvl_async._config import PrefetchConfig, ProcessDesc
from tvl_async._dataset import VideoDataset
from tvl_async._decoding import DecodePool
from tvl_async._errors import DecodeError
from tvl_async._planning import SampleRequest
from tvl_async._sampling import EpochIterator

__all__ = ["ServicePlan", "dropped_files", "requests"]


@dataclass
class ServicePlan:
    """Everything the service thread uses; it gets no reference to the Prefetcher itself."""

    config: PrefetchConfig
    dataset: VideoDataset
    epochs: EpochIterator  # endless: the consumer decides where its loops end
    processing: dict[str, ProcessDesc]
    positions: list[int]
    device: torch.device
    backend: str
    decode_threads: int
    ffmpeg_threads: int
    lookahead: int
    transform: Callable[[Batch], Any] | None
    queue: janus.Queue[Item]
    stop: threading.Event
    counters: Counters
    control: Control
    pool_holder: list[DecodePool] = field(default_factory=list)
    # failures per file so far (service thread only; from the resumed state, if any)
    failures: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(init=False)  # files given up (service thread only)

    def __post_init__(self) -> None:
        self.dropped = dropped_files(self.failures, self.config.max_file_failures)


def dropped_files(failures: Mapping[str, int], max_failures: int) -> set[str]:
    """Files given up: those that failed ``max_failures`` times."""
    return {path for path, n in failures.items() if n >= max_failures}


def _sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of a sample's random draws from its place in the epoch's global order: every rank
    draws differently, and a sample gets the same crop whatever the number of ranks."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0] >> 1)


def requests(plan: ServicePlan, seqs: Iterator[int]) -> Iterator[SampleRequest]:
    """Sample requests in sampler order, with their random draws (made here, so they do not
    depend on the order in which samples finish decoding). Samples of files given up
    (``plan.dropped``) come as failed requests: they are skipped in their place, not decoded."""
    ds = plan.dataset
    indexes = ds.indexes
    for epoch, position, sample_id in plan.epochs:
        file_index, _ = ds.locate(sample_id)
        index = indexes[file_index]
        seed = plan.epochs.sampler.seed  # the resumed state's seed after load_state_dict
        where = plan.epochs.sampler.global_position(position)
        gen = torch.Generator().manual_seed(_sample_seed(seed, epoch, where))
        augment: dict[str, AugmentParams] = {}
        label: Any = None
        error: Exception | None = None
        try:  # a failure here (get_label, a draw) is this sample's, delivered in its place
            augment = {
                name: draw_augment(desc, index.height, index.width, gen)
                for name, desc in plan.processing.items()
            }
            label = ds.label(sample_id)
        except Exception as e:
            error = e
        if index.path in plan.dropped:
            error = DecodeError(f"{index.path}: file dropped after repeated failures")
        yield SampleRequest(
            seq=next(seqs),
            epoch=epoch,
            position=position,
            sample_id=sample_id,
            file_index=file_index,
            index=index,
            frames=ds.clip_frames(sample_id),
            positions=plan.positions,
            label=label,
            augment=augment,
            error=error,
        )

"""Batching: collate finished samples into a :class:`~tvl_async._batch.Batch` with its metadata.

Runs in the service thread, on the service's CUDA stream when there is one. Pure functions: no
threads, no waits. Samples held in their compact form (uint8 RGB, see
:func:`~tvl_async._processing.held_compact`) are finished here, once per stacked batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from tvl_async._batch import Batch
from tvl_async._checks import invalid_type
from tvl_async._planning import SampleResult
from tvl_async._process_desc import ProcessDesc
from tvl_async._processing import finish_values, held_compact


def collate(
    results: list[SampleResult], files: Sequence[str], processing: Mapping[str, ProcessDesc]
) -> Batch:
    """Stack the outputs of ``results`` (finished samples of one epoch) into a batch, finishing
    the outputs held compact (:func:`~tvl_async._processing.finish_values` on the stack, on its
    device).

    Args:
        results: finished samples, in batch order.
        files: the dataset's files as the user gave them (``file_index`` indexes them).
        processing: the outputs by name.

    Raises:
        ValueError: clips of different sizes for one output, naming the sizes and files.
    """
    reqs = [r.request for r in results]
    outputs: dict[str, torch.Tensor] = {}
    for name in list(results[0].outputs or {}):
        tensors = [r.outputs[name] for r in results if r.outputs is not None]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"output '{name}': clips of different sizes cannot share a batch ({sorted(shapes)} "
                f"from {sorted({r.index.path for r in reqs})}); add scale_width/scale_height or "
                f"width/height to the ProcessDesc"
            )
        stacked = torch.stack(tensors)
        desc = processing.get(name)
        if desc is not None and held_compact(desc):
            stacked = finish_values(stacked, desc)
        outputs[name] = stacked
    labels: Any = [r.label for r in reqs]
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in labels):
        labels = torch.tensor(labels)
    elif all(x is None for x in labels):
        labels = None
    return Batch(
        outputs,
        sample_ids=torch.tensor([r.sample_id for r in reqs], dtype=torch.int64),
        files=[files[r.file_index] for r in reqs],
        frame_indices=torch.tensor([r.frames for r in reqs], dtype=torch.int64),
        timestamps=torch.tensor(np.array([r.index.times[r.frames] for r in reqs])),
        labels=labels,
        epoch=reqs[0].epoch,
        augment={name: [r.augment[name].as_dict() for r in reqs] for name in processing},
    )


def apply_transform(transform: Callable[[Batch], Any], batch: Batch) -> Batch:
    """The user's transform applied to ``batch``: it may return a Batch, a mapping of tensors
    (the new outputs) or None (changed in place).

    Raises:
        TypeError: it returned something else.
    """
    out = transform(batch)
    if out is None or out is batch:
        return batch
    if isinstance(out, Batch):
        return out
    if isinstance(out, Mapping):
        batch.outputs = dict(out)
        return batch
    raise invalid_type(
        "transform result",
        out,
        "a Batch, a mapping of tensors or None",
        shown=type(out).__name__,
    )

"""The planner's memory arithmetic: bytes per held sample, the default ``memory_budget`` and
the default ``lookahead`` it gives.

Plain functions of their arguments (and, for the default budget, of the memory the system
reports); they block only on reading ``/proc`` and cgroup files. Called once, before the service
thread starts (``tvl_async._setup``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from tvl_async._index import VideoIndex

if TYPE_CHECKING:
    from tvl_async._config import ProcessDesc
    from tvl_async._dataset import VideoDataset

#: The default ``memory_budget``: this share of the memory available at the start, divided among
#: the ranks of the node, within [MIN, MAX] bytes. The planner's gain keeps growing with the
#: window (frames decoded per frame delivered in the exact uniform order, 200 files of 5 GOPs:
#: 10.0 at 4096 samples, 3.9 at 14266, 2.3 at 28532, 1.0 at a whole epoch; docs/benchmarks.md),
#: and the first batch does not wait for the window (``first_batch``), so memory is the bound.
MEMORY_SHARE = 0.25
MIN_DEFAULT_BUDGET = 1 << 30
MAX_DEFAULT_BUDGET = 16 << 30


def _largest_frame(indexes: Sequence[VideoIndex]) -> tuple[int, int]:
    return max(ix.height for ix in indexes), max(ix.width for ix in indexes)


def check_output_sizes(processing: Mapping[str, ProcessDesc], dataset: VideoDataset) -> None:
    """Fail early, naming the file, if an output does not fit some file's frames.

    Raises:
        ValueError: files of different sizes without a fixed output size, or a crop larger
            than some file's frames.
    """
    fixed = all(
        (d.width and d.height) or (d.scale_width and d.scale_height) for d in processing.values()
    )
    if not fixed:
        dataset.check_uniform_size()
    # A crop larger than some file's frames: fail now, naming the file (not later, in the
    # service thread, with a message that names no file).
    counts = dataset.samples_per_file
    sizes = {
        (ix.height, ix.width): ix.path for k, ix in enumerate(dataset.indexes) if counts[k] > 0
    }
    for (h, w), path in sizes.items():
        for name, desc in processing.items():
            try:
                desc.output_size(h, w)
            except ValueError as e:
                raise ValueError(
                    f"processing[{name!r}] does not fit '{path}' ({w}x{h}, width x height): {e}"
                ) from None


def sample_bytes(
    processing: Mapping[str, ProcessDesc],
    seq_len: int,
    indexes: Sequence[VideoIndex],
    bytes_per_pixel: Callable[[ProcessDesc], int] | None = None,
) -> int:
    """Bytes of one finished sample (all outputs) as the reorder buffer holds it, for the
    largest file. ``bytes_per_pixel(desc)``: bytes per output pixel (all channels) as held
    (the processing stage's ``held_bytes_per_pixel``); default: the output's own."""
    h, w = _largest_frame(indexes)
    total = 0
    for desc in processing.values():
        shape = desc.output_shape(seq_len, h, w)
        pixels = math.prod(shape) // desc.channels
        if bytes_per_pixel is None:
            per = desc.channels * torch.empty((), dtype=desc.dtype).element_size()
        else:
            per = bytes_per_pixel(desc)
        total += pixels * per
    return max(total, 1)


def available_memory() -> int | None:
    """Bytes of memory this process may still take: ``MemAvailable`` of ``/proc/meminfo``,
    lowered to the room left under a cgroup (v2 or v1) limit; None where neither is known."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge v1 value: no limit
            found.append(max(0, int(limit) - usage))
        break
    return min(found) if found else None


def local_ranks() -> int:
    """Processes of this job on this node (torchrun's ``LOCAL_WORLD_SIZE``; 1 without it)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_memory_budget(available: int | None = None, ranks: int | None = None) -> int:
    """The ``memory_budget`` used when none is given, in bytes: :data:`MEMORY_SHARE` of
    ``available`` (default :func:`available_memory`) divided by ``ranks`` (default
    :func:`local_ranks`), within :data:`MIN_DEFAULT_BUDGET`..:data:`MAX_DEFAULT_BUDGET`;
    the minimum where the available memory is unknown."""
    free = available_memory() if available is None else available
    if free is None:
        return MIN_DEFAULT_BUDGET
    share = int(free * MEMORY_SHARE) // (ranks or local_ranks())
    return min(MAX_DEFAULT_BUDGET, max(MIN_DEFAULT_BUDGET, share))


def default_lookahead(
    memory_budget: int, held_bytes: int, samples_per_epoch: int, batch_size: int
) -> int:
    """As many samples as ``memory_budget`` bytes hold (``held_bytes`` each: the reorder buffer
    holds finished samples in their compact form, :func:`sample_bytes`), at most one epoch
    (more would only hold the next epoch's samples longer)."""
    by_memory = memory_budget // max(held_bytes, 1)
    epoch = max(samples_per_epoch, batch_size)
    return int(max(1, min(by_memory, epoch)))

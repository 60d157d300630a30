"""What a Prefetcher runs, worked out from its options before any thread starts.

:func:`prepare` resolves the device and backend, indexes the files into a :class:`VideoDataset`
(or checks the one given), builds the sampler and derives the sizes the service needs (frames
decoded per sample, bytes held per sample, lookahead, thread counts). It blocks on indexing; it
starts no thread of its own (indexing uses a short-lived pool) and runs in the caller's thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from tvl_async._backends import resolve_backend
from tvl_async._budget import (
    check_output_sizes,
    default_lookahead,
    default_memory_budget,
    sample_bytes,
)
from tvl_async._checks import invalid_value
from tvl_async._config import PrefetchConfig
from tvl_async._dataset import VideoDataset
from tvl_async._decoding import default_decode_threads, default_ffmpeg_threads
from tvl_async._distributed import resolve_device
from tvl_async._errors import BackendUnavailableError
from tvl_async._process_desc import ProcessDesc
from tvl_async._processing import held_bytes_per_pixel, needed_frames
from tvl_async._samplers import Sampler
from tvl_async._sampling import make_sampler

Files = VideoDataset | str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


@dataclass(frozen=True)
class Setup:
    """A Prefetcher's resolved plan (immutable; read by the consumer and service threads).

    Attributes:
        config: the options, with a given dataset's clip options.
        device: where batches are delivered (``"cuda"`` resolved to an index).
        backend: ``"pyav"`` or ``"nvdec"``.
        dataset: the sample space.
        outputs: output name → its processing.
        positions: clip positions decoded (sorted), the union over the outputs.
        sampler: this rank's sample order.
        sample_bytes: bytes one finished sample holds while it waits for its batch.
        memory_budget: the ``memory_budget`` option, or its default resolved now (bytes).
        lookahead: samples planned ahead of the consumer.
        decode_threads: CPU decode threads (0 with NVDEC: the service thread decodes).
        ffmpeg_threads: FFmpeg threads per CPU decoder.
    """

    config: PrefetchConfig
    device: torch.device
    backend: str
    dataset: VideoDataset
    outputs: dict[str, ProcessDesc]
    positions: list[int]
    sampler: Sampler
    sample_bytes: int
    memory_budget: int
    lookahead: int
    decode_threads: int
    ffmpeg_threads: int


def prepare(files_or_dataset: Files, config: PrefetchConfig) -> Setup:
    """Resolve everything a Prefetcher over ``files_or_dataset`` needs; blocks on indexing.

    Raises:
        BackendUnavailableError: a CUDA device asked for where PyTorch sees none.
        ValueError: clip options that contradict a given dataset's, or outputs that do not fit.
    """
    given = files_or_dataset if isinstance(files_or_dataset, VideoDataset) else None
    cfg = config if given is None else _dataset_config(given, config)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device '{cfg.device}' asked for, but PyTorch sees no CUDA device "
            f"(torch.cuda.is_available() is False; torch {torch.__version__})"
        )
    backend = resolve_backend(cfg.backend, device)
    dataset = given or _index_dataset(files_or_dataset, cfg)  # type: ignore[arg-type]
    outputs = cfg.outputs
    check_output_sizes(outputs, dataset)
    positions = sorted({p for d in outputs.values() for p in needed_frames(d, cfg.seq_len)})
    sampler = make_sampler(
        dataset,
        cfg.sampling,
        shuffle=cfg.shuffle,
        seed=cfg.seed,
        replacement=cfg.replacement,
        chunk_size=cfg.chunk_size,
        shuffle_buffer=cfg.shuffle_buffer,
        rank=cfg.rank,
        world_size=cfg.world_size,
        drop_last=cfg.drop_last,
    )
    held = sample_bytes(outputs, cfg.seq_len, dataset.indexes, held_bytes_per_pixel)
    budget = cfg.memory_budget or default_memory_budget()
    lookahead = cfg.lookahead or default_lookahead(budget, held, len(sampler), cfg.batch_size)
    threads = cfg.decode_threads or default_decode_threads(backend)
    decode_threads = 0 if backend == "nvdec" else threads
    return Setup(
        config=cfg,
        device=device,
        backend=backend,
        dataset=dataset,
        outputs=outputs,
        positions=positions,
        sampler=sampler,
        sample_bytes=held,
        memory_budget=budget,
        lookahead=lookahead,
        decode_threads=decode_threads,
        ffmpeg_threads=cfg.ffmpeg_threads or default_ffmpeg_threads(decode_threads),
    )


def _index_dataset(
    files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], cfg: PrefetchConfig
) -> VideoDataset:
    """Index ``files`` (a folder is listed) into the dataset ``cfg`` describes; blocks."""
    return VideoDataset(
        files,  # VideoDataset lists folders (find_sources) itself
        cfg.seq_len,
        stride=cfg.stride,
        step=cfg.step,
        get_label=cfg.get_label,
        frame_rate=cfg.frame_rate,
        stream_index=cfg.stream_index,
        autorotate=cfg.autorotate,
        on_error=cfg.on_error,
        progress=cfg.progress,
        index_timeout=cfg.index_timeout,
        storage_options=cfg.storage_options,
    )


def _dataset_config(dataset: VideoDataset, config: PrefetchConfig) -> PrefetchConfig:
    """``config`` with the clip options of ``dataset``, which brings its own: refuse different
    ones given explicitly (``config.model_fields_set``), which would otherwise be ignored."""
    own = {
        "seq_len": dataset.seq_len,
        "stride": dataset.stride,
        "step": dataset.step,
        "frame_rate": dataset.frame_rate,
    }
    for name, value in own.items():
        given = getattr(config, name)
        if name in config.model_fields_set and given != value:
            raise invalid_value(
                name,
                given,
                f"the dataset's own ({value}), or leave it out and set {name} on the VideoDataset",
                context="given with a VideoDataset",
            )
    if config.get_label is not None:
        raise invalid_value(
            "get_label",
            config.get_label,
            "None: pass it to VideoDataset(files, seq_len, get_label=...) instead",
            context="given with a VideoDataset",
        )
    return config.replace(**own)

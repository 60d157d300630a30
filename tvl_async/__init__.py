"""tvl_async: frame-exact video batches for PyTorch, decoded by a background service thread.

Public API (see DESIGN.md): the names in ``__all__`` (sorted; ``tests/test_public_api.py`` holds
it complete): :class:`VideoLoader` for one file; :class:`VideoDataset`, :class:`ProcessDesc`,
:class:`PrefetchConfig` and :class:`Prefetcher` for training; the exceptions. Every other module
is private (``_name``). The applications (the ``tvl-async`` command, bench, player, transcode)
are the subpackage :mod:`tvl_async.cli`, built on this API; ``import tvl_async`` never imports
them.
"""

from __future__ import annotations

from tvl_async._backends import nvdec_available
from tvl_async._batch import Batch, PrefetchStats, SkippedSample
from tvl_async._clips import VideoClipDataset
from tvl_async._config import PrefetchConfig, ProcessDesc
from tvl_async._dataset import VideoDataset
from tvl_async._errors import (
    BackendUnavailableError,
    DecodeError,
    NoVideoStreamError,
    PrefetcherClosedError,
    RemoteReadError,
    ServiceError,
    TvlAsyncError,
    UnsupportedCodecError,
    VideoOpenError,
)
from tvl_async._index import VideoIndex, cache_dir, find_videos, load_index
from tvl_async._loader import VideoLoader
from tvl_async._prefetcher import Prefetcher

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Batch",
    "DecodeError",
    "NoVideoStreamError",
    "PrefetchConfig",
    "PrefetchStats",
    "Prefetcher",
    "PrefetcherClosedError",
    "ProcessDesc",
    "RemoteReadError",
    "ServiceError",
    "SkippedSample",
    "TvlAsyncError",
    "UnsupportedCodecError",
    "VideoClipDataset",
    "VideoDataset",
    "VideoIndex",
    "VideoLoader",
    "VideoOpenError",
    "__version__",
    "cache_dir",
    "find_videos",
    "load_index",
    "nvdec_available",
]

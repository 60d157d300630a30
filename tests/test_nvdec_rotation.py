"""Rotated files (a display matrix) go to the CPU under backend="nvdec", where the rotation is
applied; unrotated ones, and rotated ones read with ``autorotate=False``, stay on NVDEC."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tvl_async import load_index
from tvl_async._backends.nvdec_support import static_unsupported_reason
from tvl_async.cli.synthetic import write_video


def test_rotated_files_fall_back_to_the_cpu(tmp_path: Path) -> None:
    path = write_video(tmp_path / "r.mp4", n_frames=4, width=64, height=48, codec="libx264")
    index = load_index(path)
    assert static_unsupported_reason(index) is None
    turned = dataclasses.replace(index, rotation=90)
    reason = static_unsupported_reason(turned)
    assert reason is not None and "90 degrees" in reason and "CPU" in reason
    mirrored = dataclasses.replace(index, mirrored=True)
    assert "mirrors" in (static_unsupported_reason(mirrored) or "")
    stored = dataclasses.replace(index, rotation=270, autorotate=False)
    assert static_unsupported_reason(stored) is None

"""The benchmark's reference video set, written once into a cache folder (``tvl-async bench``).

The reference set is 200 files of 1920x1080 H.264 at 30 fps, 10 s each, a keyframe every 60
frames. Encoding 200 such files would take an hour on a small machine, so a few distinct videos
are encoded (different x264 presets and B-frame counts, textured content so that decoding costs
what real video costs) and the other files are hard links to them (copies where the file system
has no hard links). Decoding cost does not depend on which name a file is opened under.

Everything here runs in the calling thread and blocks while it encodes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tvl_async import cache_dir

#: x264 settings of the distinct videos (cycled): preset, B-frames.
_MASTER_SETTINGS: tuple[tuple[str, int], ...] = (
    ("veryfast", 2),
    ("fast", 2),
    ("veryfast", 3),
    ("fast", 3),
)
#: Noise amplitude and constant rate factor: about 12-15 Mbit/s at 1080p (measured), in the
#: range of camera footage; flat synthetic frames would decode several times faster than real
#: video, and pure noise several times slower.
TEXTURE = 0.5
CRF = "24.5"


@dataclass(frozen=True)
class VideoSetSpec:
    """What the bench's video set holds.

    Attributes:
        files: number of files. seconds: duration of each. width, height: pixels.
        fps: frames per second. gop: keyframe interval in frames. distinct: videos actually
        encoded (the others are hard links to them).
    """

    files: int = 200
    seconds: float = 10.0
    width: int = 1920
    height: int = 1080
    fps: int = 30
    gop: int = 60
    distinct: int = 4

    @property
    def n_frames(self) -> int:
        """Frames per file."""
        return max(1, round(self.seconds * self.fps))

    @property
    def tag(self) -> str:
        """Folder name that identifies the content (file count excluded: links are cheap)."""
        return (
            f"{self.width}x{self.height}_{self.fps}fps_{self.n_frames}f_g{self.gop}"
            f"_d{self.distinct}"
        )


def default_bench_dir() -> Path:
    """``<index cache>/bench-videos`` (``~/.cache/tvl_async/bench-videos`` by default)."""
    return (cache_dir() or Path.home() / ".cache" / "tvl_async") / "bench-videos"


def make_bench_videos(
    spec: VideoSetSpec,
    root: str | os.PathLike[str] | None = None,
    *,
    on_encode: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write (or reuse) the video set of ``spec`` under ``root``; returns the file paths.

    Blocks while encoding (minutes at 1080p on two cores; ``on_encode(k, n)`` is called before
    encoding distinct video ``k`` of ``n``). Reuses whatever a previous call wrote.
    """
    from tvl_async.cli.synthetic import VideoSpec, write_video

    folder = Path(root) if root is not None else default_bench_dir()
    folder = folder / spec.tag
    masters_dir = folder / "masters"
    videos_dir = folder / "videos"
    masters_dir.mkdir(parents=True, exist_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)
    distinct = max(1, min(spec.distinct, spec.files))
    masters = []
    for k in range(distinct):
        path = masters_dir / f"master_{k}.mp4"
        if not path.exists():
            if on_encode is not None:
                on_encode(k, distinct)
            preset, bframes = _MASTER_SETTINGS[k % len(_MASTER_SETTINGS)]
            tmp = masters_dir / f".master_{k}.{os.getpid()}.tmp.mp4"
            write_video(
                tmp,
                VideoSpec(
                    n_frames=spec.n_frames,
                    width=spec.width,
                    height=spec.height,
                    fps=spec.fps,
                    gop=spec.gop,
                    bframes=bframes,
                    texture=TEXTURE,
                    options={"preset": preset, "crf": CRF, "threads": "0"},
                ),
            )
            tmp.replace(path)
        masters.append(path)
    files = []
    for i in range(spec.files):
        path = videos_dir / f"video_{i:04d}.mp4"
        if not path.exists():
            src = masters[i % distinct]
            tmp = videos_dir / f".video_{i:04d}.{os.getpid()}.tmp.mp4"
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            tmp.replace(path)
        files.append(path)
    (folder / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return files

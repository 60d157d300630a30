"""The measured loops of ``tvl-async bench``: the DataLoader + PyAV-seek baseline, tvl_async, and
the sequential ceiling, each taking batches of the reference workload.

Reference workload: uniformly random single frames, batches of 128, a RandomResizedCrop to
224x224 and a ColorJitter (brightness, contrast, saturation) written with plain torch ops, so
that no configuration depends on torchvision. The baseline does both per item in its worker
processes, as a typical ``Dataset.__getitem__`` does; tvl_async crops in its decode threads
(``ProcessDesc(random_resized_crop=...)``) and jitters the collated batch (``transform=``); the
ceiling decodes every frame of the files in order with the same processing (crop and resize
of uint8 frames with the torch ops ``ProcessDesc`` uses, then the jitter).

Each ``run_*`` function blocks, calls ``on_batch()`` after every batch and returns the wall-clock
arrival time (``time.perf_counter()``) of each batch plus what else it measured.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tvl_async import Prefetcher, ProcessDesc

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.4  # brightness, contrast and saturation factors drawn in [1 - 0.4, 1 + 0.4]


@dataclass
class RunResult:
    """What one measured loop returns."""

    arrivals: list[float]
    frames_decoded: float | None = None  # None where the loop cannot count them
    frames_decoded_at: list[float] = field(default_factory=list)  # cumulative, per batch
    wait_after_first: float | None = None
    lookahead: int | None = None
    started: float = 0.0  # perf_counter() before the loader was built
    memory_bound_bytes: int | None = None
    peak_buffer_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- processing


def color_jitter(
    x: torch.Tensor, generator: torch.Generator, strength: float = JITTER
) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of uint8 ``[N, 3, H, W]`` images.

    Plain torch ops (torchvision's ColorJitter formulas, fixed order); one factor of each kind
    per image, uniform in ``[1 - strength, 1 + strength]``. Also takes float images in [0, 1]
    (changed in place). Returns float32 in [0, 1].
    """
    n = x.shape[0]
    # uint8 is scaled to [0, 1] here; float input (ProcessDesc(normalized=True)) is already
    v = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
    f = torch.empty(3, n, dtype=torch.float32).uniform_(
        1 - strength, 1 + strength, generator=generator
    )
    f = f.view(3, n, 1, 1, 1)
    v.mul_(f[0]).clamp_(0.0, 1.0)
    gray = _gray(v)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    v.sub_(mean).mul_(f[1]).add_(mean).clamp_(0.0, 1.0)
    gray = _gray(v)
    v.sub_(gray).mul_(f[2]).add_(gray).clamp_(0.0, 1.0)
    return v


def _gray(v: torch.Tensor) -> torch.Tensor:
    return 0.299 * v[:, 0:1] + 0.587 * v[:, 1:2] + 0.114 * v[:, 2:3]


def random_resized_crop(img: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    """torchvision's RandomResizedCrop of one uint8 ``[3, H, W]`` image to ``size x size``
    (bilinear, antialiased), with plain torch ops."""
    h, w = img.shape[-2:]
    area = h * w
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        cw = round(math.sqrt(target * ratio))
        ch = round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
            break
    else:
        ch, cw = min(h, w), min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[None, :, top : top + ch, left : left + cw]
    return F.interpolate(
        crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]


class JitterTransform:
    """``transform=`` for the Prefetcher: ColorJitter on the collated batch (service thread)."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        x = batch["default"]  # [B, 1, 3, H, W] uint8, or float32 in [0, 1]
        b, f = x.shape[:2]
        out = color_jitter(x.reshape(b * f, *x.shape[2:]), self.generator)
        return {"default": out.view(b, f, *out.shape[1:])}


def output_desc(crop: int, output: str) -> ProcessDesc:
    """The tvl_async ProcessDesc of the reference workload: a RandomResizedCrop to ``crop``,
    float32 normalised to [0, 1] (``output="float32"``, what training code asks for) or uint8."""
    if output == "uint8":
        return ProcessDesc(width=crop, height=crop, random_resized_crop=CROP_SCALE)
    return ProcessDesc(
        width=crop,
        height=crop,
        random_resized_crop=CROP_SCALE,
        dtype=torch.float32,
        normalized=True,
    )


def _touch(x: torch.Tensor) -> None:
    """What the bench's consumer does with a batch: read one element (cheap, forces nothing)."""
    float(x.reshape(-1)[0])


# ----------------------------------------------------------------------------- tvl_async


def run_tvl(
    files: list[str],
    *,
    batch_size: int,
    n_batches: int,
    crop: int,
    seed: int,
    sampling: str,
    lookahead: int | None,
    chunk_size: int,
    decode_threads: int | None,
    ffmpeg_threads: int | None,
    memory_budget: int | None,
    device: str,
    consumer_seconds: float,
    on_batch: Callable[[], None],
    output: str = "float32",
    epochs: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> RunResult:
    """A Prefetcher over ``files`` with the reference workload; ``consumer_seconds`` of sleep
    per batch stands for a training step (0: take batches as fast as they come). ``output``:
    ``"float32"`` (normalised to [0, 1] in the ProcessDesc) or ``"uint8"``; ``epochs=1``: one
    whole epoch (``n_batches`` should be its length). ``storage_options``: for URL files."""
    started = time.perf_counter()
    desc = output_desc(crop, output)
    kwargs: dict[str, Any] = {}
    if memory_budget is not None:
        kwargs["memory_budget"] = memory_budget
    arrivals: list[float] = []
    decoded: list[float] = []
    waits: list[float] = []
    with Prefetcher(
        files,
        seq_len=1,
        batch_size=batch_size,
        sampling=sampling,
        lookahead=lookahead,
        chunk_size=chunk_size,
        seed=seed,
        epochs=epochs,
        drop_last=True,
        processing=desc,
        transform=JitterTransform(seed),
        device=device,
        decode_threads=decode_threads,
        ffmpeg_threads=ffmpeg_threads,
        storage_options=storage_options,
        **kwargs,
    ) as it:
        for _ in range(n_batches):
            t0 = time.perf_counter()
            batch = next(it)
            _touch(batch["default"])
            arrivals.append(time.perf_counter())
            waits.append(arrivals[-1] - t0)
            decoded.append(float(it.stats().frames_decoded))
            on_batch()
            if consumer_seconds:
                time.sleep(consumer_seconds)
        s = it.stats()
    return RunResult(
        arrivals=arrivals,
        started=started,
        frames_decoded=float(s.frames_decoded),
        frames_decoded_at=decoded,
        wait_after_first=s.wait_time_after_first,
        lookahead=s.lookahead,
        memory_bound_bytes=s.memory_bound_bytes,
        peak_buffer_bytes=s.peak_buffer_bytes,
        extra={
            "sample_bytes": s.sample_bytes,
            "memory_budget": s.memory_budget,
            "decode_threads": s.decode_threads,
            "wait_time": s.wait_time,
            "waits_s": [round(w, 3) for w in waits],
            # remote sources: bytes fetched (index reads after the start included) per sample,
            # over the whole run, and the frames decoded per sample over the same samples
            "bytes_read_per_sample": s.bytes_read_per_sample,
            "frames_decoded_per_sample": s.frames_decoded / max(s.samples_delivered, 1),
        },
    )


# ----------------------------------------------------------------------------- ceiling


def _ceiling_worker(
    files: list[str],
    k: int,
    n_threads: int,
    ffmpeg_threads: int,
    crop: int,
    seed: int,
    out: queue.Queue[torch.Tensor | BaseException],
    stop: threading.Event,
    decoded: list[int],
) -> None:
    import av

    rng = random.Random(seed * 7919 + k)
    i = k
    try:
        while not stop.is_set():
            with av.open(files[i % len(files)]) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = ffmpeg_threads
                for frame in container.decode(stream):
                    decoded[k] += 1
                    img = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                    y = random_resized_crop(img, crop, rng)[None]  # as ProcessDesc does it
                    while not stop.is_set():
                        try:
                            out.put(y, timeout=0.05)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            i += n_threads
    except BaseException as e:  # reaches the consumer
        out.put(e)


def run_ceiling(
    files: list[str],
    *,
    batch_size: int,
    n_batches: int,
    crop: int,
    seed: int,
    decode_threads: int,
    ffmpeg_threads: int,
    device: str,
    on_batch: Callable[[], None],
) -> RunResult:
    """Every frame of the files in order (``decode_threads`` threads, each reading its own
    files), the same crop and jitter, no planner: what the decoder can do at best."""
    started = time.perf_counter()
    out: queue.Queue[torch.Tensor | BaseException] = queue.Queue(maxsize=4 * batch_size)
    stop = threading.Event()
    decoded = [0] * decode_threads
    threads = [
        threading.Thread(
            target=_ceiling_worker,
            daemon=True,
            name=f"ceiling-{k}",
            args=(files, k, decode_threads, ffmpeg_threads, crop, seed, out, stop, decoded),
        )
        for k in range(decode_threads)
    ]
    for t in threads:
        t.start()
    jitter = JitterTransform(seed)
    arrivals: list[float] = []
    counts: list[float] = []
    try:
        for _ in range(n_batches):
            items: list[torch.Tensor] = []
            while len(items) < batch_size:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                items.append(item)
            x = jitter({"default": torch.stack(items)})["default"]
            if device != "cpu":
                x = x.to(device, non_blocking=True)
            _touch(x)
            arrivals.append(time.perf_counter())
            counts.append(float(sum(decoded)))
            on_batch()
    finally:
        stop.set()
        for t in threads:
            t.join(5.0)
    return RunResult(
        arrivals=arrivals,
        started=started,
        frames_decoded=float(sum(decoded)),
        frames_decoded_at=counts,
    )

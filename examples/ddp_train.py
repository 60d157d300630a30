"""Train with DistributedDataParallel on Prefetcher batches, one shard per rank; resume per rank.

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --quick
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --quick --stop-after 3 --out D
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --quick --resume --out D
    python examples/ddp_train.py --quick        # one process: the whole epoch

Each rank builds its Prefetcher *before* ``init_process_group`` (data set up first, the common
order): the rank and world size then come from torchrun's ``RANK``/``WORLD_SIZE`` environment
variables, so each rank reads its own shard from the first batch (with ``device="cuda"``, the
GPU is ``cuda:LOCAL_RANK``). The shards are disjoint, equal in length and together they are the
epoch; the samples of an epoch are the same whatever the number of ranks (rank ``r`` takes
positions ``r, r + world_size, ...`` of the epoch's global order).

``--stop-after K`` saves, on every rank, its Prefetcher's ``state_dict()`` (and the model and
optimizer) after K batches and exits, as a preempted job would; ``--resume`` restarts from those
files and each rank reads exactly the rest of its shard. With ``--out DIR`` each rank writes what
it trained on to ``DIR/rank{r}.json`` (the tests compare them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import tvl_async as tvl
from tvl_async.cli.synthetic import make_video_set

SIZE = (32, 24)  # width, height the Prefetcher scales clips to


class TinyVideoRegressor(nn.Module):
    """A 3-D convolution and a linear head: predicts where in its video a clip lies (0..1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4, 1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(clips.permute(0, 2, 1, 3, 4)))  # [B, C, F, H, W]
        return self.head(x.mean(dim=(2, 3, 4))).squeeze(1)


def example_videos(quick: bool) -> list[str]:
    """Small synthetic videos, written once (rank 0 writes, the others wait for the files)."""
    from tvl_async import cache_dir

    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    folder = base / ("examples-ddp-quick" if quick else "examples-ddp")
    n_files, frames = (2, 24) if quick else (6, 96)
    done = folder / ".complete"
    if int(os.environ.get("RANK", "0")) == 0:
        paths = make_video_set(folder, n_files=n_files, n_frames=frames, width=64, height=48, gop=8)
        done.touch()
        return [str(p) for p in paths]
    import time

    deadline = time.monotonic() + 120
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write the example videos to {folder}")
        time.sleep(0.1)
    return [str(folder / f"clip_{k:03d}.mp4") for k in range(n_files)]


def make_prefetcher(files: list[str], args: argparse.Namespace) -> tvl.Prefetcher:
    """The Prefetcher; rank and world size from the environment (torchrun) when not told."""
    processing = tvl.ProcessDesc(
        scale_width=SIZE[0], scale_height=SIZE[1], dtype=torch.float32, normalized=True
    )
    return tvl.Prefetcher(
        files,
        seq_len=4,
        step=2,
        batch_size=args.batch_size,
        seed=args.seed,
        epochs=args.epochs,
        device=args.device,
        processing=processing,
        decode_threads=1,
        timeout=60.0,
    )


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun (gloo on the CPU, nccl on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=120))
    return True


def train(args: argparse.Namespace) -> dict[str, Any]:
    files = args.paths or example_videos(args.quick)
    prefetcher = make_prefetcher(files, args)  # before init_process_group: rank from the env
    rank, world = prefetcher.sampler.rank, prefetcher.sampler.world_size
    distributed = init_distributed(prefetcher.device)
    if distributed:
        assert (rank, world) == (dist.get_rank(), dist.get_world_size())
    out = Path(args.out) if args.out else None
    ckpt = out / f"checkpoint_rank{rank}.pt" if out else None
    torch.manual_seed(args.seed)
    model: nn.Module = TinyVideoRegressor().to(prefetcher.device)
    if distributed:
        model = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if args.resume:
        assert ckpt is not None, "--resume needs --out (where --stop-after saved)"
        saved = torch.load(ckpt, weights_only=True)
        prefetcher.load_state_dict(saved["prefetcher"])  # the rest of this rank's shard
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optim"])
    trained: list[list[Any]] = []
    stopped = False
    ds = prefetcher.dataset
    n_frames = {f: ix.n_frames for f, ix in zip(ds.files, ds.indexes, strict=True)}
    with prefetcher:
        for batch in prefetcher:
            lengths = torch.tensor([n_frames[f] for f in batch.files], dtype=torch.float32)
            target = (batch.frame_indices.float().mean(1) / lengths).to(prefetcher.device)
            loss = F.mse_loss(model(batch["default"]), target)
            opt.zero_grad()
            loss.backward()  # DDP averages the gradients over the ranks here
            opt.step()
            trained.append([batch.epoch, batch.sample_ids.tolist()])
            if args.stop_after is not None and len(trained) == args.stop_after:
                assert ckpt is not None, "--stop-after needs --out (where to save)"
                torch.save(
                    {
                        "prefetcher": prefetcher.state_dict(),
                        "model": model.state_dict(),
                        "optim": opt.state_dict(),
                    },
                    ckpt,
                )
                stopped = True
                break
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    sums: list[Any] = [checksum]
    if distributed:
        sums = [None] * world
        dist.all_gather_object(sums, checksum)
        dist.destroy_process_group()
    report = {
        "rank": rank,
        "world_size": world,
        "samples_per_epoch": len(prefetcher.sampler),
        "epoch_orders": [prefetcher.sampler.epoch_order(e).tolist() for e in range(args.epochs)],
        "trained": trained,
        "stopped": stopped,
        "checksums": sums,
    }
    if out is not None:
        (out / f"rank{rank}.json").write_text(json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="video files or folders (default: generated)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank)")
    p.add_argument("--out", default=None, help="folder for rank{r}.json and checkpoints")
    p.add_argument("--stop-after", type=int, default=None, help="save and stop after K batches")
    p.add_argument("--resume", action="store_true", help="resume from --out's checkpoints")
    args = p.parse_args(argv)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    r = train(args)
    n = sum(len(ids) for _, ids in r["trained"])
    print(
        f"rank {r['rank']}/{r['world_size']}: {len(r['trained'])} batches, {n} samples "
        f"({r['samples_per_epoch']} per epoch)" + (", stopped and saved" if r["stopped"] else "")
    )
    if r["rank"] == 0:
        same = len(set(r["checksums"])) == 1
        print(f"parameters identical on all {r['world_size']} ranks: {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a small video classifier with PyTorch Lightning on Prefetcher batches; resume mid-epoch.

    python examples/lightning_train.py            # makes its own small videos (two classes)
    python examples/lightning_train.py --quick    # a few seconds (what the tests run)
    python examples/lightning_train.py DIR ...    # your videos; label = the parent folder's name

What it shows:

1. A ``LightningDataModule`` whose ``train_dataloader``/``val_dataloader`` return Prefetchers.
   The videos are indexed once (``setup``); each Prefetcher is an ordinary Lightning loader:
   ``len()`` is its batches per epoch, and Lightning iterates it again every epoch (the
   DataLoader idiom: each new ``for`` runs the next epoch, in a new reproducible order).
2. ``Trainer(max_epochs=2).fit`` then ``.validate`` on the CPU. Lightning moves each
   :class:`tvl_async.Batch` to the model's device with ``apply_to_collection``, which rebuilds it
   whole: ``training_step`` still reads ``batch.sample_ids``, ``batch.labels``, ``batch.epoch``.
3. A checkpoint taken mid-epoch resumes at the exact next sample. Lightning saves the state of
   every loader with ``state_dict``/``load_state_dict`` into the checkpoint (the fit loop's
   ``combined_loader`` entry) and restores it before iterating, so ``fit(ckpt_path=...)`` goes on
   from the sample after the last one trained on. Here a callback saves a checkpoint after
   batch k and the run is interrupted (as a preempted job would be); the resumed run's samples
   are checked against the sampler's order.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

import tvl_async as tvl
from tvl_async.cli.synthetic import make_video_set

SIZE = (32, 24)  # width, height the Prefetcher scales clips to


class Interrupted(Exception):
    """Raised by :class:`InterruptAfter` to stop a run the way a preempted job stops."""


def label_from_parent(path: str) -> str:
    """The class of a video: the name of its folder."""
    return Path(path).parent.name


class VideoDataModule(L.LightningDataModule):
    """Train and validation Prefetchers over two lists of videos.

    Args:
        train_files, val_files: video paths; their parent folder names are the classes.
        seq_len: frames per clip; step: frames between clip starts.
        batch_size: clips per batch.
        seed: the training order's seed (each epoch has its own order from it).
        decode_threads: CPU decode threads per Prefetcher.
    """

    def __init__(
        self,
        train_files: Sequence[str],
        val_files: Sequence[str],
        *,
        seq_len: int = 4,
        step: int = 4,
        batch_size: int = 4,
        seed: int = 0,
        decode_threads: int = 1,
    ) -> None:
        super().__init__()
        self.train_files, self.val_files = list(train_files), list(val_files)
        self.classes = sorted({label_from_parent(f) for f in self.train_files + self.val_files})
        self.seq_len, self.step, self.batch_size = seq_len, step, batch_size
        self.seed, self.decode_threads = seed, decode_threads
        self.train_set: tvl.VideoDataset | None = None
        self.val_set: tvl.VideoDataset | None = None
        self.loaders: list[tvl.Prefetcher] = []

    def class_of(self, path: str) -> int:
        return self.classes.index(label_from_parent(path))

    def setup(self, stage: str) -> None:
        """Index the videos once (Lightning calls this for fit, validate, ...)."""
        if self.train_set is None:
            self.train_set = tvl.VideoDataset(
                self.train_files, self.seq_len, step=self.step, get_label=self.class_of
            )
            self.val_set = tvl.VideoDataset(
                self.val_files, self.seq_len, step=self.step, get_label=self.class_of
            )

    def _prefetcher(self, dataset: tvl.VideoDataset | None, shuffle: bool) -> tvl.Prefetcher:
        assert dataset is not None, "setup() runs before the dataloaders are asked for"
        processing = tvl.ProcessDesc(
            scale_width=SIZE[0], scale_height=SIZE[1], dtype=torch.float32, normalized=True
        )
        p = tvl.Prefetcher(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            processing=processing,
            decode_threads=self.decode_threads,
            timeout=60.0,
        )
        self.loaders.append(p)
        return p

    def train_dataloader(self) -> tvl.Prefetcher:
        return self._prefetcher(self.train_set, shuffle=True)

    def val_dataloader(self) -> tvl.Prefetcher:
        return self._prefetcher(self.val_set, shuffle=False)

    def teardown(self, stage: str) -> None:
        self.close()

    def close(self) -> None:
        """Stop every Prefetcher handed out (idempotent)."""
        for p in self.loaders:
            p.close()
        self.loaders.clear()


class TinyVideoNet(L.LightningModule):
    """A 3-D convolution, global pooling and a linear classifier; records the samples it sees.

    Attributes:
        trained: ``(epoch, sample_ids)`` of every training batch, in order.
        validated: the sample ids of every validation batch, in order.
    """

    def __init__(self, n_classes: int = 2, lr: float = 0.05) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.head = nn.Linear(8, n_classes)
        self.lr = lr
        self.trained: list[tuple[int, list[int]]] = []
        self.validated: list[list[int]] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.permute(0, 2, 1, 3, 4)  # [B, F, C, H, W] -> [B, C, F, H, W]
        x = F.relu(self.conv(x))
        return self.head(x.mean(dim=(2, 3, 4)))

    def _loss(self, batch: tvl.Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, tvl.Batch):  # Lightning's transfer rebuilt it whole
            raise TypeError(f"expected a tvl_async.Batch, got {type(batch).__name__}")
        logits = self(batch["default"])
        return F.cross_entropy(logits, batch.labels), logits

    def training_step(self, batch: tvl.Batch, batch_idx: int) -> torch.Tensor:
        self.trained.append((batch.epoch, batch.sample_ids.tolist()))
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: tvl.Batch, batch_idx: int) -> None:
        self.validated.append(batch.sample_ids.tolist())
        loss, logits = self._loss(batch)
        acc = (logits.argmax(1) == batch.labels).float().mean()
        self.log_dict({"val_loss": loss, "val_acc": acc}, batch_size=batch.batch_size)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class InterruptAfter(L.Callback):
    """Save a checkpoint after training batch ``k`` (counted from 1 over all epochs), then
    raise :class:`Interrupted`."""

    def __init__(self, k: int, path: Path) -> None:
        self.k, self.path, self.seen = k, path, 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.seen += 1
        if self.seen == self.k:
            trainer.save_checkpoint(self.path, weights_only=False)  # loops and loaders too
            raise Interrupted(f"stopped after batch {self.k}")


def make_trainer(
    root: Path, max_epochs: int, callbacks: list[L.Callback] | None = None, progress: bool = False
) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        default_root_dir=str(root),
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        callbacks=callbacks or [],
    )


def fit(
    files: tuple[list[str], list[str]],
    root: Path,
    *,
    max_epochs: int = 2,
    seed: int = 0,
    interrupt_after: int | None = None,
    ckpt_path: Path | None = None,
    progress: bool = False,
    **dm_options: Any,
) -> tuple[TinyVideoNet, VideoDataModule]:
    """One ``Trainer.fit``: interrupted after batch ``interrupt_after`` (its checkpoint at
    ``root/interrupted.ckpt``), or resumed from ``ckpt_path``. Returns the model (with what it
    saw) and the data module."""
    torch.manual_seed(seed)
    dm = VideoDataModule(*files, seed=seed, **dm_options)
    model = TinyVideoNet(n_classes=len(dm.classes))
    callbacks: list[L.Callback] = []
    if interrupt_after is not None:
        callbacks.append(InterruptAfter(interrupt_after, root / "interrupted.ckpt"))
    trainer = make_trainer(root, max_epochs, callbacks, progress)
    try:
        # weights_only: the Prefetcher's state is plain ints and strings
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except Interrupted:
        pass
    finally:
        dm.close()
    return model, dm


def expected_order(dm: VideoDataModule, epochs: int) -> list[tuple[int, list[int]]]:
    """``(epoch, sample_ids)`` per training batch as the sampler orders them."""
    assert dm.train_set is not None
    probe = tvl.Prefetcher(dm.train_set, batch_size=dm.batch_size, seed=dm.seed)
    out = []
    for epoch in range(epochs):
        order = probe.sampler.epoch_order(epoch).tolist()
        out += [(epoch, order[i : i + dm.batch_size]) for i in range(0, len(order), dm.batch_size)]
    probe.close()
    return out


def expected_val_order(dm: VideoDataModule) -> list[list[int]]:
    """The sample ids of each validation batch (sequential order)."""
    assert dm.val_set is not None
    ids = list(range(len(dm.val_set)))
    return [ids[i : i + dm.batch_size] for i in range(0, len(ids), dm.batch_size)]


def example_videos(quick: bool) -> tuple[list[str], list[str]]:
    """Two classes of small synthetic videos (``cats/``, ``dogs/``): train and val files."""
    from tvl_async import cache_dir

    base = cache_dir() or Path(tempfile.gettempdir()) / "tvl_async"
    root = base / ("examples-lightning-quick" if quick else "examples-lightning")
    n, frames = (3, 24) if quick else (6, 96)
    train: list[str] = []
    val: list[str] = []
    for k, name in enumerate(("cats", "dogs")):
        paths = make_video_set(
            root / name,
            n_files=n,
            n_frames=frames,
            width=64,
            height=48,
            gop=8,
            texture=0.1 + 0.4 * k,
        )
        train += [str(p) for p in paths[:-1]]
        val.append(str(paths[-1]))
    return train, val


def user_videos(paths: list[str]) -> tuple[list[str], list[str]]:
    """The user's videos: every fifth file (per name order) goes to validation."""
    from tvl_async import find_videos

    files = [str(f) for f in find_videos(paths)]
    val = files[4::5] or files[-1:]
    train = [f for f in files if f not in val] or files
    return train, val


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="*", help="video files or folders (default: generated)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--epochs", type=int, default=2, help="max_epochs (default 2)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    files = user_videos(args.paths) if args.paths else example_videos(args.quick)
    opts = {"batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 1-2. fit for --epochs epochs, then validate
        model, dm = fit(
            files, root, max_epochs=args.epochs, seed=args.seed, progress=not args.quick, **opts
        )
        order = expected_order(dm, args.epochs)
        per_epoch = len(order) // args.epochs
        print(
            f"fit: {args.epochs} epochs x {per_epoch} batches of {args.batch_size} clips "
            f"({len(files[0])} train files, {len(files[1])} val files)"
        )
        in_order = model.trained == order
        print(
            f"training batches in the sampler's order, epoch by epoch: "
            f"{'yes' if in_order else 'NO'}"
        )
        firsts = {tuple(ids) for _, ids in order[::per_epoch]}
        print(f"each epoch in its own order: {'yes' if len(firsts) == args.epochs else 'NO'}")
        val_order = expected_val_order(dm) * args.epochs
        val_in_order = model.validated == val_order  # before validate() adds its own
        print(f"validation after each epoch, in order: {'yes' if val_in_order else 'NO'}")
        trainer = make_trainer(root, args.epochs)
        metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
        dm.close()
        print(f"validate: val_loss {metrics['val_loss']:.3f}, val_acc {metrics['val_acc']:.2f}")
        # 3. interrupt mid-epoch, resume from the checkpoint
        k = per_epoch + per_epoch // 2 if args.epochs > 1 else per_epoch // 2
        k = max(k, 1)
        before, _ = fit(
            files, root, max_epochs=args.epochs, seed=args.seed, interrupt_after=k, **opts
        )
        if not (root / "interrupted.ckpt").exists():
            print(
                f"interrupted after batch {k}: NO, the run ended after "
                f"{len(before.trained)} batches"
            )
            return 1
        after, _ = fit(
            files,
            root,
            max_epochs=args.epochs,
            seed=args.seed,
            ckpt_path=root / "interrupted.ckpt",
            **opts,
        )
        print(
            f"interrupted after batch {k} (epoch {before.trained[-1][0]}), resumed from its "
            f"checkpoint: {len(after.trained)} batches more"
        )
        exact = before.trained + after.trained == order and after.trained[:1] == order[k : k + 1]
        print(
            f"resumed at the exact next sample: {'yes' if exact else 'NO'} (last before: "
            f"{before.trained[-1][1][-1]}, first after: "
            f"{after.trained[0][1][0] if after.trained else None})"
        )
        ok = in_order and val_in_order and len(firsts) == args.epochs and exact
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

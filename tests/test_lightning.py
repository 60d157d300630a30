"""Prefetcher batches and loaders in PyTorch Lightning (the real package).

``Batch`` survives Lightning's collection utilities with its metadata; a Prefetcher is a Lightning
loader: ``Trainer(max_epochs=2)`` fits and validates on it, and a checkpoint taken mid-epoch
resumes at the exact next sample (``examples/lightning_train.py``).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from types import ModuleType

import pytest
import torch

import tvl_async as tvl
from tvl_async.cli.synthetic import write_video

lightning_utilities = pytest.importorskip("lightning_utilities")
pytest.importorskip("lightning")

from lightning.fabric.utilities import move_data_to_device  # noqa: E402
from lightning.pytorch.plugins.precision import HalfPrecision  # noqa: E402
from lightning_utilities.core.apply_func import apply_to_collection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
META = ("sample_ids", "files", "frame_indices", "timestamps", "epoch", "augment")


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("lightning_videos")
    return [
        str(write_video(root / f"v{k}.mp4", n_frames=20, width=64, height=48, gop=6))
        for k in range(2)
    ]


@pytest.fixture(scope="module")
def batch(two_files: list[str]) -> tvl.Batch:
    """A real batch, with numeric labels and a crop/flip record, taken from the second epoch."""
    desc = tvl.ProcessDesc(random_flip=True, dtype=torch.float32, normalized=True)
    with tvl.Prefetcher(
        two_files,
        seq_len=3,
        batch_size=3,
        seed=4,
        epochs=2,
        get_label=lambda f: int(Path(f).stem[1:]) + 10,
        processing=desc,
        decode_threads=1,
    ) as it:
        batches = list(it)
    b = batches[-1]
    assert b.epoch == 1 and isinstance(b.labels, torch.Tensor)
    return b


def _same_metadata(new: tvl.Batch, old: tvl.Batch) -> None:
    assert type(new) is tvl.Batch
    for name in META:
        got, want = getattr(new, name), getattr(old, name)
        if isinstance(want, torch.Tensor):
            assert got.dtype == want.dtype and got.device == want.device, name
            assert torch.equal(got, want), name
        else:
            assert got == want, name
    assert new.batch_size == old.batch_size == len(old.files) == 3
    assert list(new) == list(old) == ["default"]


def test_apply_to_collection_maps_outputs_and_labels_keeps_metadata(batch: tvl.Batch) -> None:
    out = apply_to_collection(batch, torch.Tensor, lambda t: (t * 2).to(torch.float64))
    _same_metadata(out, batch)
    assert out is not batch and out["default"].dtype == torch.float64
    assert torch.equal(out["default"], batch["default"].double() * 2)
    assert torch.equal(out.labels, (batch.labels * 2).double())
    assert batch["default"].dtype == torch.float32  # the original is untouched
    # inside the collections trainers build around a batch too
    nested = apply_to_collection({"x": [batch]}, torch.Tensor, lambda t: t + 1)
    _same_metadata(nested["x"][0], batch)
    assert torch.equal(nested["x"][0]["default"], batch["default"] + 1)


def test_move_data_to_device_and_half_precision_keep_metadata(batch: tvl.Batch) -> None:
    for device in ("cpu", torch.device("cpu")):
        moved = move_data_to_device(batch, device)
        _same_metadata(moved, batch)
        assert torch.equal(moved["default"], batch["default"])
        assert torch.equal(moved.labels, batch.labels)
    # Lightning's "16-true" precision casts floating inputs; the float64 timestamps stay exact
    half = HalfPrecision("16-true").convert_input(batch)
    _same_metadata(half, batch)
    assert half["default"].dtype == torch.float16
    assert half.timestamps.dtype == torch.float64


def test_pytorch_lightning_transfer_keeps_metadata(batch: tvl.Batch) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    module = pl.LightningModule()
    moved = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    _same_metadata(moved, batch)
    assert torch.equal(moved["default"], batch["default"])


def test_batch_copies_and_refuses_to_drop_metadata(batch: tvl.Batch) -> None:
    deep = copy.deepcopy(batch)
    _same_metadata(deep, batch)
    assert deep["default"].data_ptr() != batch["default"].data_ptr()
    # a rebuild from the tensors alone would lose the metadata: it is an error, not a silent drop
    with pytest.raises(TypeError, match="sample_ids"):
        tvl.Batch(OrderedDict(batch.items()))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="mapping from output name"):
        tvl.Batch(
            [batch["default"]],
            sample_ids=batch.sample_ids,  # type: ignore[arg-type]
            files=batch.files,
            frame_indices=batch.frame_indices,
            timestamps=batch.timestamps,
            epoch=0,
        )


def test_iter_then_load_state_dict_resumes(two_files: list[str]) -> None:
    """Lightning's order of calls: iter() (to check the loader), load_state_dict (the
    checkpoint's loader state), then iteration."""

    def ids(bs: list[tvl.Batch]) -> list[int]:
        return [i for b in bs for i in b.sample_ids.tolist()]

    full = ids(list(tvl.Prefetcher(two_files, seq_len=3, batch_size=4, seed=2, decode_threads=1)))
    with tvl.Prefetcher(two_files, seq_len=3, batch_size=4, seed=2, decode_threads=1) as first:
        it = iter(first)
        next(it), next(it)
        state = first.state_dict()
    resumed = tvl.Prefetcher(two_files, seq_len=3, batch_size=4, seed=2, decode_threads=1)
    iter(resumed)
    resumed.load_state_dict(state)
    with resumed:
        assert ids(list(resumed)) == full[8:]


# ------------------------------------------------------------------- the Lightning example


def _example() -> ModuleType:
    name = "lightning_train_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "lightning_train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_lightning_example_fits_validates_and_resumes(capsys: pytest.CaptureFixture[str]) -> None:
    """``Trainer(max_epochs=2)``: each epoch in the sampler's order (a new one per epoch),
    validation after each epoch, ``validate``; interrupted mid-epoch 1 and resumed."""
    assert _example().main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "fit: 2 epochs x 6 batches of 4 clips (4 train files, 2 val files)" in out, out
    for line in (
        "training batches in the sampler's order, epoch by epoch: yes",
        "each epoch in its own order: yes",
        "validation after each epoch, in order: yes",
        "interrupted after batch 9 (epoch 1), resumed from its checkpoint: 3 batches",
        "resumed at the exact next sample: yes",
    ):
        assert line in out, out
    assert "validate: val_loss " in out


@pytest.mark.timeout(120)
def test_lightning_resume_in_the_first_epoch(tmp_path: Path) -> None:
    """Interrupted after batch 2 of 6: the resumed fit trains on the 4 batches left of epoch 0
    and then all of epoch 1, exactly as the sampler orders them."""
    ex = _example()
    files = ex.example_videos(quick=True)
    before, dm = ex.fit(files, tmp_path, max_epochs=2, interrupt_after=2)
    after, _ = ex.fit(files, tmp_path, max_epochs=2, ckpt_path=tmp_path / "interrupted.ckpt")
    order: list[tuple[int, list[int]]] = ex.expected_order(dm, 2)
    assert len(order) == 12
    assert before.trained == order[:2]
    assert after.trained == order[2:]
    assert [t for t in threading.enumerate() if t.name == "tvl-async-service"] == []

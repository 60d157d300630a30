"""``examples/ddp_train.py`` under real ``torchrun`` (2 processes, gloo on the CPU).

The Prefetcher is built before ``init_process_group``, so each rank learns its shard from
torchrun's environment. Checked: shards disjoint and covering each epoch, the same samples (in
the same global order) as a one-process run, DDP keeping the parameters equal, and a per-rank
resume from a mid-epoch ``state_dict`` reading exactly the rest of each rank's shard.
``--standalone`` makes torchrun pick a free port for its rendezvous.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ddp_train.py"
LAUNCH_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "TORCHELASTIC_RUN_ID",
)

pytestmark = pytest.mark.timeout(240)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _check(r: subprocess.CompletedProcess[str], what: str) -> str:
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    return r.stdout


def torchrun(nproc: int, out: Path, *args: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(EXAMPLE),
        "--quick",
        "--out",
        str(out),
        *args,
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=200)
    return _check(r, " ".join(cmd[2:]))


def reports(out: Path, world: int) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def per_epoch(report: dict[str, Any]) -> list[list[int]]:
    """The sample ids the rank trained on, epoch by epoch (from each batch's ``epoch``)."""
    epochs: list[list[int]] = [[] for _ in report["epoch_orders"]]
    for epoch, ids in report["trained"]:
        epochs[epoch] += ids
    return epochs


@pytest.fixture(scope="module")
def full_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two epochs on 2 ranks (torchrun) and on 1 process (plain python)."""
    two = tmp_path_factory.mktemp("ddp2")
    out = torchrun(2, two)
    assert "rank 0/2: 8 batches, 22 samples (11 per epoch)" in out, out
    assert "rank 1/2: 8 batches, 22 samples (11 per epoch)" in out, out
    assert "parameters identical on all 2 ranks: yes" in out, out
    one = tmp_path_factory.mktemp("ddp1")
    r = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--out", str(one)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert "rank 0/1: 16 batches, 44 samples (22 per epoch)" in _check(r, "one process")
    return reports(two, 2), reports(one, 1)[0]


def test_shards_are_disjoint_cover_the_epoch_and_match_one_process(
    full_runs: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    ranks, single = full_runs
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    n = single["samples_per_epoch"]
    assert n == 22 and all(r["samples_per_epoch"] == n // 2 for r in ranks)
    one = per_epoch(single)
    assert one == single["epoch_orders"] and one[0] != one[1]  # a new order each epoch
    for epoch in range(2):
        shards = [per_epoch(r)[epoch] for r in ranks]
        assert shards == [r["epoch_orders"][epoch] for r in ranks]  # each in its sampler order
        assert set(shards[0]).isdisjoint(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(n))
        # the same samples as one process: rank r takes positions r, r + 2, ... of its order
        interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
        assert interleaved == one[epoch]
    assert len(set(ranks[0]["checksums"])) == 1 and ranks[0]["checksums"] == ranks[1]["checksums"]


def test_resume_per_rank_reads_the_rest_of_each_shard(
    tmp_path: Path, full_runs: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    ranks, _ = full_runs
    out = torchrun(2, tmp_path, "--stop-after", "5")  # epoch 0 is 4 batches: stop in epoch 1
    assert "stopped and saved" in out
    before = reports(tmp_path, 2)
    assert all(len(r["trained"]) == 5 and r["trained"][-1][0] == 1 for r in before)
    assert [(tmp_path / f"checkpoint_rank{r}.pt").exists() for r in range(2)] == [True, True]
    torchrun(2, tmp_path, "--resume")
    after = reports(tmp_path, 2)
    for full, b, a in zip(ranks, before, after, strict=True):
        assert b["trained"] + a["trained"] == full["trained"], full["rank"]
        assert a["trained"][0][1][0] == full["trained"][5][1][0]  # the exact next sample
        # same batches, same restored weights and optimizer: the same model at the end
        assert a["checksums"] == pytest.approx(full["checksums"], rel=1e-6)

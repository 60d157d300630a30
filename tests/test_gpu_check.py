"""tools/gpu_check.sh, the one-call GPU verification, runs end to end on the CPU (its dry run),
so the script cannot rot while no GPU machine is at hand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["env", "pytest", "exact", "reconfig", "fallback", "demo", "bench"]


@pytest.mark.timeout(400)
def test_gpu_check_dry_run_passes_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "DRY_RUN": "1", "ONLY": "env,exact,reconfig,fallback,bench"}
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary) == ["env", "exact", "reconfig", "fallback", "bench"]
    assert all(r["ok"] for r in summary.values()), summary
    exact = summary["exact"]["cases"]
    assert len(exact) == 8 and all(
        c["max_diff"] == 0 and not c["wrong_frames"] for c in exact.values()
    )
    reconfig = summary["reconfig"]
    assert reconfig["size_switches"] >= 150 and reconfig["same_samples_in_order"]
    assert summary["fallback"]["delivered"] == 144
    assert summary["bench"]["tvl_async_cpu"]["images"] == 32
    assert "| exact | yes |" in (tmp_path / "summary.md").read_text()


def test_gpu_check_knows_every_step() -> None:
    done = subprocess.run(
        ["python3", str(ROOT / "tools" / "gpu_check.py"), "--out", "/tmp/x", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown step(s) ['nope']" in done.stderr
    assert all(s in done.stderr for s in STEPS)

"""2-process DDP on CPU (gloo): validation metrics are reduced across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_script.py")


@pytest.mark.slow  # ~20 s CPU, 70 s wall on the loaded shared 2-core machine
def test_ddp_metrics_are_reduced_across_processes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_PORT": "29517"}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    logged, full, rank0 = result["logged"], result["full"], result["rank0_only"]
    for key in ("iou_change", "f1", "precision", "recall", "oa", "kappa"):
        # What was logged covers both processes' shards: the whole validation set.
        assert logged[f"val/{key}"] == pytest.approx(full[key], abs=1e-6), key
    # ...and is not what rank 0 alone saw.
    assert any(abs(full[k] - rank0[k]) > 1e-4 for k in ("f1", "oa", "kappa"))
    # Metrics already reduced by compute() are logged as synced: no false sync_dist advice
    # (six warnings, one per metric, before).
    assert result["sync_dist_warnings"] == []

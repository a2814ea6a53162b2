"""``geochange predict --dask-local-workers / --dask-scheduler`` (geochange.predict.cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from geochange.cli import main as cli_main
from geochange.errors import ConfigurationError
from geochange.predict.cluster import dask_client
from tests.predict.helpers import read
from tests.predict.test_integration import write_checkpoint

distributed = pytest.importorskip("distributed")


def _predict(ckpt: Path, pre: Path, post: Path, out: Path, *extra: str) -> None:
    args = ["predict", "--checkpoint", str(ckpt), "--pre", str(pre), "--post", str(post)]
    args += ["--out-dir", str(out), "--precision", "fp32", "--value-range", "ignore", "--quiet"]
    assert cli_main([*args, *extra]) == 0


@pytest.mark.filterwarnings("ignore::UserWarning")  # no value range in the test checkpoint
def test_cli_scheduler_is_bit_identical_to_in_process(scene_pair, tmp_path: Path) -> None:
    pre, post, _, _ = scene_pair
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    _predict(ckpt, pre, post, tmp_path / "single")
    # Threads, not processes: quick to start; the processes of a local cluster are below.
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        _predict(ckpt, pre, post, tmp_path / "dask", "--dask-scheduler", cluster.scheduler_address)
    for name in ("probability.tif", "change.tif"):
        single, spread = read(tmp_path / "single" / name), read(tmp_path / "dask" / name)
        assert single.shape == (173, 251)
        np.testing.assert_array_equal(spread, single)


@pytest.mark.slow  # worker processes import torch: ~3 min on the loaded shared 2-core machine
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_local_cluster_is_bit_identical_to_in_process(scene_pair, tmp_path: Path) -> None:
    pre, post, _, _ = scene_pair
    ckpt = write_checkpoint(tmp_path / "model.ckpt")
    _predict(ckpt, pre, post, tmp_path / "single")
    _predict(ckpt, pre, post, tmp_path / "dask", "--dask-local-workers", "2")
    for name in ("probability.tif", "change.tif"):
        single, spread = read(tmp_path / "single" / name), read(tmp_path / "dask" / name)
        np.testing.assert_array_equal(spread, single)


def test_dask_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        with dask_client("tcp://127.0.0.1:1", 2):
            pass
    with pytest.raises(ConfigurationError, match=">= 1"):
        with dask_client(local_workers=0):
            pass
    with dask_client() as client:
        assert client is None


_HOLD = """
import os, sys, time
from geochange.predict.cluster import dask_client
with dask_client(local_workers=1) as client:
    pids = client.run(os.getpid)
    print(*pids.values(), flush=True)
    time.sleep(120)
"""


@pytest.mark.slow  # a worker process importing torch: ~2 min on the loaded 2-core machine
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_local_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, "-c", _HOLD], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)  # no clean-up code runs in the parent
        parent.wait(30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False

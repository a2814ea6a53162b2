"""SIGKILL at seeded random points of ``predict`` and ``vectorize``, then resume or rerun.

After each kill: no process of the killed run survives, nothing at the final output path looks
complete unless it is, and the resumed (predict) or repeated (vectorize) run gives exactly the
result of an uninterrupted run, reusing no stale file.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest

from tests.reliability.corpus import Corpus, build

KILL_POINTS = 2  # per command; seeded, spread over the uninterrupted run time


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build(tmp_path_factory.mktemp("kill_corpus"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "geochange", *args]


def _predict_argv(c: Corpus, out: Path, *extra: str) -> list[str]:
    return _cli("predict", "--checkpoint", str(c.ckpt), "--pre", str(c.plain_tiled), "--post",
                str(c.plain_tiled), "--out-dir", str(out), "--tile-size", "128", "--overlap", "32",
                "--quiet", *extra)  # fmt: skip


def _vectorize_argv(c: Corpus, out: Path, *extra: str) -> list[str]:
    return _cli("vectorize", str(c.change_big), "--out", str(out), "--block-size", "16",
                "--workers", "2", "--quiet", *extra)  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _timed(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - began


def _processes_tagged(tag: str) -> list[int]:
    """PIDs of live processes whose environment holds ``GEOCHANGE_TEST_RUN_TAG=tag``.

    Children inherit the environment, so this finds pool workers and helper processes too.
    """
    needle = f"GEOCHANGE_TEST_RUN_TAG={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in status and needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _kill_after(argv: list[str], delay: float, tag: str, *, after_children: bool = False) -> None:
    """Start ``argv``, SIGKILL it after ``delay`` s, and check nothing of it survives.

    With ``after_children`` the delay counts from the moment the run has child processes (its
    worker pool), so the kill lands while workers are busy.
    """
    env = {**os.environ, "GEOCHANGE_TEST_RUN_TAG": tag}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if after_children:
        deadline = time.monotonic() + 120
        while len(_processes_tagged(tag)) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run started no worker"
            time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    # The pipes reach EOF only when no child of the run holds them any more.
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in _processes_tagged(tag):  # clean up before failing
            os.kill(pid, signal.SIGKILL)
        pytest.fail("children of the killed run still hold its stdout/stderr after 30 s")
    deadline = time.monotonic() + 10
    while _processes_tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_tagged(tag), "processes of the killed run survive"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look for orphans")
def test_predict_killed_then_resumed_equals_uninterrupted(corpus: Corpus, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    duration = _timed(_predict_argv(corpus, reference))
    want = {name: _sha(reference / name) for name in ("change.tif", "probability.tif")}
    rng = random.Random(17)
    for k in range(KILL_POINTS):
        out = tmp_path / f"killed{k}"
        delay = rng.uniform(0.4, 0.95) * duration
        _kill_after(_predict_argv(corpus, out), delay, f"predict{k}-{os.getpid()}")
        for name in want:  # a final output present after the kill must be complete and right
            if (out / name).exists():
                assert _sha(out / name) == want[name], f"{name} incomplete after a kill"
        subprocess.run(_predict_argv(corpus, out, "--resume"), check=True, capture_output=True)
        got = {name: _sha(out / name) for name in want}
        assert got == want, f"resume after a kill at {delay:.1f} s differs"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look for orphans")
def test_vectorize_killed_then_rerun_equals_uninterrupted(corpus: Corpus, tmp_path: Path) -> None:
    reference = tmp_path / "reference.gpkg"
    duration = _timed(_vectorize_argv(corpus, reference))
    want = gpd.read_file(reference)
    rng = random.Random(23)
    for k in range(KILL_POINTS):
        out = tmp_path / f"killed{k}.gpkg"
        delay = rng.uniform(0.0, 0.3) * duration
        tag = f"vectorize{k}-{os.getpid()}"
        _kill_after(_vectorize_argv(corpus, out), delay, tag, after_children=True)
        if out.exists():  # present means complete
            got = gpd.read_file(out)
            assert len(got) == len(want)
        subprocess.run(_vectorize_argv(corpus, out), check=True, capture_output=True)
        got = gpd.read_file(out)
        assert len(got) == len(want)
        assert got.geometry.area.sum() == pytest.approx(want.geometry.area.sum())
        assert sorted(got.columns) == sorted(want.columns)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".killed{k}")]
        assert not leftovers, f"stale partial files left after a successful rerun: {leftovers}"

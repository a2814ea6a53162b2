"""Worker processes of vectorize / evaluate / synth: any calling script works, none outlives it.

Each call runs in a fresh interpreter started the way a user would start it (unguarded or
guarded script, standard input, ``python -c``, a Jupyter kernel) with more than one block and
two workers; its results must equal an in-process run (``workers=1``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from geochange.errors import ConfigurationError
from geochange.parallel import BrokenProcessPool, RemoteTraceback, WorkerPool

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.6, 0, 500_000.0, 0, -0.6, 4_000_000.0)
MODES = ["script", "guarded", "stdin", "dash_c"]
SEED = 7  # a 512 x 512 scene with new buildings
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def write_mask(path: Path, size: int, seed: int, density: float = 0.1) -> Path:
    array = (np.random.default_rng(seed).random((size, size)) < density).astype(np.uint8)
    profile = dict(driver="GTiff", height=size, width=size, count=1, dtype="uint8", nodata=255)
    with rasterio.open(path, "w", crs="EPSG:32650", transform=TRANSFORM, **profile) as ds:
        ds.write(array, 1)
    return path


def child_env() -> dict[str, str]:
    # The children import geochange from this checkout, whatever is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("parallel")
    write_mask(root / "change.tif", 64, seed=1)  # 16 blocks of 16 px
    write_mask(root / "reference.tif", 64, seed=2)
    return root


# Each snippet is plain top-level code, as in a notebook or a quick script; it prints one
# RESULT line and writes into OUT.
SNIPPETS = {
    "vectorize": """
        import json
        from geochange import vectorize_changes
        frame = vectorize_changes(DATA + "/change.tif", OUT + "/changes.gpkg", block_size=16,
                                  workers=2)
        print("RESULT " + json.dumps(len(frame)))
    """,
    "evaluate": """
        import json
        from geochange import evaluate_scene
        report = evaluate_scene(DATA + "/change.tif", DATA + "/reference.tif", block_size=16,
                                vectorize_block_size=16, workers=2)
        print("RESULT " + json.dumps(report.objects))
    """,
    "synth": """
        import json
        from geochange import make_scene
        scene = make_scene(OUT + "/scene", 512, 512, seed=SEED, block_size=256, workers=2)
        print("RESULT " + json.dumps(scene.stats["changed_pixels"]))
    """,
}


def snippet(name: str, data: Path, out: Path) -> str:
    header = f"DATA = {str(data)!r}\nOUT = {str(out)!r}\nSEED = {SEED}\n"
    return header + textwrap.dedent(SNIPPETS[name]).strip() + "\n"


def guarded(code: str) -> str:
    return (
        "def main():\n"
        + textwrap.indent(code, "    ")
        + '\nif __name__ == "__main__":\n    main()\n'
    )


def run_python(code: str, mode: str, cwd: Path) -> str:
    """Run ``code`` the way ``mode`` says; return its standard output."""
    script = cwd / "user_script.py"
    stdin = None
    if mode == "script":
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    elif mode == "guarded":
        script.write_text(guarded(code))
        cmd = [sys.executable, str(script)]
    elif mode == "stdin":
        cmd, stdin = [sys.executable, "-"], code
    else:
        cmd = [sys.executable, "-c", code]
    done = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, cwd=cwd, env=child_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def result(stdout: str) -> object:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0][len("RESULT ") :])


def check(name: str, value: object, data: Path, out: Path, expected: dict[str, object]) -> None:
    """``value`` and the files in ``out`` equal the in-process run's."""
    assert value == expected[name]
    if name == "vectorize":
        written = pyogrio.read_dataframe(out / "changes.gpkg")
        serial = pyogrio.read_dataframe(Path(str(expected["gpkg"])))
        assert len(written) > 100
        assert written.drop(columns="geometry").equals(serial.drop(columns="geometry"))
        assert shapely.equals_exact(written.geometry.values, serial.geometry.values).all()
    elif name == "synth":
        serial = Path(str(expected["dir"]))
        for file in ("change.tif", "post.tif"):
            with rasterio.open(out / "scene" / file) as a, rasterio.open(serial / file) as b:
                np.testing.assert_array_equal(a.read(), b.read())


@pytest.fixture(scope="module")
def expected(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Results of the snippets' calls in this process, with ``workers=1``."""
    from geochange import evaluate_scene, make_scene, vectorize_changes

    serial = tmp_path_factory.mktemp("serial")
    change = data / "change.tif"
    frame = vectorize_changes(change, serial / "changes.gpkg", block_size=16, workers=1)
    report = evaluate_scene(
        data / "change.tif",
        data / "reference.tif",
        block_size=16,
        vectorize_block_size=16,
        workers=1,
    )
    scene = make_scene(serial / "scene", 512, 512, seed=SEED, block_size=256, workers=1)
    return {
        "vectorize": len(frame),
        "evaluate": json.loads(json.dumps(report.objects)),
        "synth": scene.stats["changed_pixels"],
        "gpkg": serial / "changes.gpkg",
        "dir": serial / "scene",
    }


def case(name: str, mode: str) -> object:
    # Unguarded scripts and standard input broke all three; guarded scripts and -c worked
    # already: those run for vectorize by default, for evaluate and synth under -m slow.
    slow = name != "vectorize" and mode in ("guarded", "dash_c")
    return pytest.param(name, mode, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("name", "mode"), [case(n, m) for n in sorted(SNIPPETS) for m in MODES])
def test_workers_from_any_kind_of_script(
    name: str, mode: str, data: Path, expected: dict[str, object], tmp_path: Path
) -> None:
    # Unguarded scripts and standard input used to die with BrokenProcessPool: spawn workers
    # re-ran (or failed to re-import) the calling script.
    stdout = run_python(snippet(name, data, tmp_path), mode, tmp_path)
    check(name, result(stdout), data, tmp_path, expected)


def test_workers_from_a_jupyter_kernel(
    data: Path, expected: dict[str, object], tmp_path: Path
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    cells = [f"import sys; sys.path.insert(0, {str(ROOT)!r})"]
    cells += [snippet(name, data, tmp_path / name) for name in sorted(SNIPPETS)]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    for name in SNIPPETS:
        (tmp_path / name).mkdir()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(tmp_path))
    for name, cell in zip(sorted(SNIPPETS), notebook.cells[1:], strict=True):
        stdout = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        check(name, result(stdout), data, tmp_path / name, expected)


def test_threads_give_the_same_polygons(data: Path) -> None:
    from geochange.vectorize import vectorize_changes

    serial = vectorize_changes(data / "change.tif", block_size=16, workers=1)
    threads = vectorize_changes(data / "change.tif", block_size=16, workers=2, parallel="threads")
    assert threads.drop(columns="geometry").equals(serial.drop(columns="geometry"))
    assert shapely.equals_exact(threads.geometry.values, serial.geometry.values).all()
    with pytest.raises(ConfigurationError, match="parallel must be"):
        vectorize_changes(data / "change.tif", workers=2, parallel="fork")  # type: ignore[arg-type]


# ---------------------------------------------------------------- WorkerPool itself


def test_pool_returns_results_and_worker_errors_with_their_traceback() -> None:
    with WorkerPool(2) as pool:
        assert list(pool.map(abs, range(-200, 0))) == list(range(200, 0, -1))
        assert len(set(pool.pids)) == 2
        with pytest.raises(ValueError, match="invalid literal") as caught:
            pool.submit(int, "x").result()
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "Traceback" in str(caught.value.__cause__)


def test_pool_crash_breaks_the_pool_with_the_exit_status() -> None:
    with WorkerPool(1) as pool:
        with pytest.raises(BrokenProcessPool, match="exit code 3"):
            pool.submit(os._exit, 3).result(timeout=60)
        with pytest.raises(BrokenProcessPool):
            pool.submit(abs, 1)


def test_pool_initializer_failure_breaks_the_pool() -> None:
    with WorkerPool(1, initializer=int, initargs=("x",)) as pool:
        with pytest.raises(BrokenProcessPool, match=r"(?s)initializer failed.*invalid literal"):
            pool.submit(abs, -1).result(timeout=60)


def test_pool_rejects_main_functions_and_bad_sizes() -> None:
    def local() -> None:
        pass

    local.__module__ = "__main__"
    with pytest.raises(ValueError, match="workers must be at least 1"):
        WorkerPool(0)
    with WorkerPool(1) as pool, pytest.raises(ValueError, match="__main__"):
        pool.submit(local)


def test_pool_exception_in_block_kills_workers() -> None:
    with pytest.raises(KeyError), WorkerPool(2) as pool:
        pids = pool.pids
        pool.submit(time.sleep, 60)
        raise KeyError("interrupted")
    assert not [pid for pid in pids if alive(pid)]


# ---------------------------------------------------------------- orphans


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Masks that take the CLI well over the few seconds before the kill."""
    root = tmp_path_factory.mktemp("orphans")
    write_mask(root / "change.tif", 2048, seed=4, density=0.2)
    write_mask(root / "reference.tif", 2048, seed=5, density=0.2)
    return root


def cli(name: str, big: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "geochange", name]
    if name == "vectorize":
        return [*command, str(big / "change.tif"), "-o", str(out / "c.gpkg"), "--block-size", "64"]
    if name == "evaluate":  # a script: the command line has no --vectorize-block-size
        code = (
            "import sys; from geochange import evaluate_scene; "
            "evaluate_scene(sys.argv[1], sys.argv[2], vectorize_block_size=64, workers=2)"
        )
        return [sys.executable, "-c", code, str(big / "change.tif"), str(big / "reference.tif")]
    return [*command, str(out / "scene"), "--size", "4096x4096"]


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test (so a failing run leaves no orphan behind)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@linux_only
@pytest.mark.parametrize(
    ("name", "signum"),
    [
        ("vectorize", signal.SIGKILL),
        ("vectorize", signal.SIGTERM),
        ("evaluate", signal.SIGKILL),
        ("synth", signal.SIGKILL),
        ("synth", signal.SIGTERM),
    ],
)
def test_workers_exit_with_a_killed_parent(
    name: str, signum: int, big: Path, tmp_path: Path, reaper: list[int]
) -> None:
    command = cli(name, big, tmp_path)
    if name != "evaluate":
        command += ["--workers", "2", "--quiet"]
    parent = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    reaper.append(parent.pid)
    deadline = time.monotonic() + 120
    while len(descendants(parent.pid)) < 2 and parent.poll() is None:
        assert time.monotonic() < deadline, "no workers started"
        time.sleep(0.05)
    time.sleep(1.0)  # workers past start-up, at work
    workers = descendants(parent.pid)
    reaper.extend(workers)
    assert len(workers) >= 2 and parent.poll() is None, parent.communicate()
    parent.send_signal(signum)
    # The pipes reach end-of-file: no worker holds the caller's stdout/stderr any more.
    parent.communicate(timeout=10)
    assert parent.returncode == -signum
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


@linux_only
def test_worker_output_goes_to_stderr_not_the_callers_stdout(tmp_path: Path) -> None:
    code = (
        "from geochange.parallel import WorkerPool\n"
        "with WorkerPool(1) as pool:\n"
        "    pool.submit(print, 'from the worker', flush=True).result()\n"
        "print('from the parent')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "from the parent\n"
    assert "from the worker" in done.stderr

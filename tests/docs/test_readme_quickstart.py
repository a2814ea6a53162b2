"""The README's Python quickstart as a user runs it: an unguarded script file, and via stdin.

The quickstart calls ``vectorize_changes`` at module level with no ``if __name__ ==
"__main__":`` guard; with worker processes that re-imported ``__main__`` this died with
``BrokenProcessPool`` (script) or ``FileNotFoundError: '<stdin>'`` (stdin). Here the vectorize
call is given a block size that cuts the scene into several blocks and two workers, so the
worker pool really runs; everything else is the README's text.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest

from tests.docs.docs_blocks import REPO, parse, prepare_workdir, run_environment

VECTORIZE_CALL = 'vectorize_changes(result, "out/changes.gpkg", min_area=20)'


def quickstart_with_blocks() -> str:
    """The README's python block, its vectorize call cut into 4 blocks on 2 workers."""
    (block,) = [b for b in parse(REPO / "README.md") if b.kind == "python"]
    assert VECTORIZE_CALL in block.code, "the README quickstart changed: update this test"
    return block.code.replace(VECTORIZE_CALL, VECTORIZE_CALL[:-1] + ", block_size=1024, workers=2)")


@pytest.mark.parametrize("how", ["script", "stdin"])
def test_readme_quickstart_unguarded(how: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    prepare_workdir(work)
    code = quickstart_with_blocks()
    script = work / "quickstart.py"
    script.write_text(code)
    argv = [sys.executable, str(script)] if how == "script" else [sys.executable, "-"]
    done = subprocess.run(
        argv,
        input=code if how == "stdin" else None,
        cwd=work,
        env=run_environment(),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    changes = gpd.read_file(work / "out" / "changes.gpkg")
    assert changes.crs is not None and changes.crs.to_epsg() == 32650
    assert (changes.geometry.area >= 20 - 1e-6).all()

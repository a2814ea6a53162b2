"""The README's main job: ``geochange demo`` end to end (slow; run with ``-m slow``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    import pyogrio
    import rasterio

    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "geochange.cli",
            "demo",
            "--out-dir",
            str(out),
            "--size",
            "1280x1280",
            "--epochs",
            "1",
            "--samples-per-epoch",
            "16",
            "--batch-size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    assert 0.0 <= summary["pixel"]["iou_change"] <= 1.0
    with (
        rasterio.open(out / "scene_test" / "pre.tif") as src,
        rasterio.open(out / "prediction" / "change.tif") as change,
    ):
        assert change.crs == src.crs and change.transform == src.transform
        assert change.shape == src.shape
    info = pyogrio.read_info(out / "changes.gpkg", layer="changes")
    assert info["features"] == summary["polygons"]
    assert (out / "report" / "report.json").exists()


@pytest.mark.parametrize("flag", ["--out-dir", "--out"])
def test_demo_output_directory_flag_and_its_old_spelling(flag: str, capsys, tmp_path) -> None:
    """``--out-dir`` (docs/glossary.md); ``--out`` still works for one release, with a warning."""
    from geochange.cli import build_parser

    args = build_parser().parse_args(["demo", flag, str(tmp_path / "d")])
    assert args.out_dir == tmp_path / "d" and not hasattr(args, "out")
    err = capsys.readouterr().err
    if flag == "--out":
        assert err == (
            "geochange demo: warning: --out is deprecated and will be removed in the next "
            "release; use --out-dir\n"
        )
    else:
        assert err == ""
    assert build_parser().parse_args(["demo"]).out_dir == Path("demo_output")

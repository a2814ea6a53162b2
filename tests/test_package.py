import subprocess
import sys

import pytest

import geochange
from geochange.cli import build_parser, main
from geochange.errors import DataError, GeochangeError, OutputError
from geochange.io import atomic_output, check_writable_dir


def test_version_and_lazy_names():
    assert geochange.__version__
    with pytest.raises(AttributeError):
        _ = geochange.does_not_exist


def test_cli_help_lists_commands(capsys):
    parser = build_parser()
    assert parser.prog == "geochange"
    assert main([]) == 2
    assert "usage: geochange" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "geochange", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"geochange {geochange.__version__}"


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    dst = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(dst) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_output(dst) as tmp:
        tmp.write_text("done")
    assert dst.read_text() == "done"


def test_unwritable_dir_is_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        check_writable_dir(blocker / "sub")
    assert issubclass(DataError, GeochangeError) and issubclass(DataError, ValueError)


def test_cli_reports_an_unnamed_io_error_without_traceback(tmp_path, monkeypatch, capsys):
    """Safety net: a GDAL error no boundary wrapped still ends in one line and exit code 1."""
    import rasterio
    import rasterio.errors

    import geochange.cli.synth as synth

    def failing_run(args):
        with rasterio.open(tmp_path / "missing.tif"):
            pass

    monkeypatch.setattr(synth, "run", failing_run)
    assert main(["synth", str(tmp_path / "scene")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange synth: error: ") and "missing.tif" in err
    assert err.count("\n") == 1
    assert issubclass(rasterio.errors.RasterioIOError, OSError)

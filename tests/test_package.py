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


# --- the front door: geochange/__init__.py -------------------------------------------------


def test_every_public_name_resolves_to_its_home_object():
    import importlib

    assert sorted(geochange.__all__) == sorted(geochange._LAZY)
    assert len(set(geochange.__all__)) == len(geochange.__all__)
    for name in geochange.__all__:
        home = importlib.import_module(geochange._LAZY[name])
        assert getattr(geochange, name) is getattr(home, name), name
        assert name in dir(geochange), name


@pytest.mark.parametrize(
    "name",
    [
        "BiTemporalRasterDataset",
        "spatial_split",
        "ChangeBalancedGeoSampler",
        "ChangeDataModule",
        "ChangeTrainer",
        "SemiSupervisedChangeTrainer",
        "ChangePredictor",
        "PredictionResult",
        "vectorize_changes",
        "evaluate_scene",
        "EvaluationReport",
        "generate_pseudo_labels",
        "change_event_generation",
        "make_scene",
        "Scene",
        "build_model",
        "register_model",
        "list_models",
        "build_change_loss",
        "BinaryChangeMetrics",
        "load_model",
    ],
)
def test_front_door_lists_the_entry_points(name):
    assert name in geochange.__all__


def test_front_door_exports_every_error_class():
    import inspect

    import geochange.errors as errors

    classes = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert classes and classes <= set(geochange.__all__)


def test_import_geochange_is_lazy():
    """``import geochange`` (and the CLI's parser) must not pull in torch or Lightning."""
    code = (
        "import sys, geochange; "
        "print(sorted(m for m in ('torch', 'lightning', 'torchgeo', 'rasterio')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_mypy_sees_the_real_types(tmp_path):
    """The ``TYPE_CHECKING`` block gives type checkers the real classes behind the lazy names.

    Without it mypy would see ``__getattr__ -> Any`` and accept any call.
    """
    import os
    from pathlib import Path

    pytest.importorskip("mypy")
    root = Path(geochange.__file__).resolve().parent.parent
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import geochange\n"
        "geochange.ChangePredictor(model='not a model')\n"
        "reveal_type(geochange.make_scene)\n"
    )
    # MYPYPATH: check this checkout's geochange (the editable install may point elsewhere).
    env = {**os.environ, "MYPYPATH": str(root)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--cache-dir",
            str(root / ".mypy_cache"),
            str(snippet),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert 'Argument "model" to "ChangePredictor" has incompatible type "str"' in out.stdout, (
        out.stdout
    )
    assert "Scene" in out.stdout, out.stdout

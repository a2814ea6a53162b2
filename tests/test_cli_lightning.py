"""Every example config runs a fast_dev_run through `geochange fit` (tiny fixture data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import geochange.cli.lightning as cli_lightning
from geochange.cli import main as geochange_main
from geochange.cli.lightning import main as lightning_main
from geochange.errors import ConfigurationError
from geochange.trainers import read_checkpoint_metadata

REPO = Path(__file__).parents[1]
CONFIGS = REPO / "examples" / "configs"
LEVIR = REPO / ".." / "shared" / "data" / "levircd-samples"
# The semantic and second binary folder configs take ~10-20 s each on a loaded 2-core CPU.
SLOW = pytest.mark.slow

# Small, fast settings shared by every run (the configs' model/loss/data classes are kept).
FAST = [
    "--trainer.fast_dev_run=true",
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.init_args.backbone=resnet18",
    "--model.init_args.weights=null",
    "--data.init_args.patch_size=64",
    "--data.init_args.batch_size=2",
    "--data.init_args.num_workers=0",
]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    # LightningCLI warns when sys.argv (pytest's) and args are both present.
    monkeypatch.setattr(sys, "argv", ["geochange"])


def _logger_args(tmp_path: Path) -> list[str]:
    # fast_dev_run disables the logger, so checkpoints fall back to default_root_dir: keep
    # them (and everything else) out of the working directory.
    return [
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        f"--trainer.default_root_dir={tmp_path}",
    ]


@pytest.fixture
def cli_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The LightningCLI objects ``lightning_main`` builds, to look at what each run did."""
    runs: list[Any] = []

    class RecordingCLI(cli_lightning._SafeCheckpointCLI):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # runs the subcommand
            runs.append(self)

    monkeypatch.setattr(cli_lightning, "_SafeCheckpointCLI", RecordingCLI)
    return runs


def _config_model(config: str) -> str:
    """The registry name of the model an example config trains."""
    return yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())["model"]["init_args"]["model"]


def _check_run(
    runs: list[Any], tmp_path: Path, command: str, *, model: str, task: str, datamodule: str
) -> None:
    """One finished ``command`` run: its classes, finite logged metrics, the fit checkpoint."""
    (run,) = runs
    state = run.trainer.state
    assert (state.fn.value, state.status.value) == (command, "finished")
    assert type(run.datamodule).__name__ == datamodule
    assert run.model.task == task
    stage = {"fit": "val", "validate": "val", "test": "test"}[command]
    metrics = run.trainer.callback_metrics
    assert f"{stage}/loss" in metrics, sorted(metrics)
    assert all(bool(torch.isfinite(value).all()) for value in metrics.values()), metrics
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    if command != "fit":
        assert not checkpoint.exists()
        return
    assert run.trainer.global_step == 1  # fast_dev_run: one optimizer step
    assert "train/loss" in metrics
    metadata = read_checkpoint_metadata(checkpoint)
    assert (metadata["model"], metadata["task"], metadata["patch_size"]) == (model, task, 64)
    assert metadata["in_channels"] == run.datamodule.in_channels


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _binary_folder(root: Path, rng: np.random.Generator) -> Path:
    for split in ("train", "val", "test"):
        for name in ("a", "b"):
            pre = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            post = pre.copy()
            post[10:30, 20:40] = 255 - post[10:30, 20:40]
            label = np.zeros((64, 64), dtype=np.uint8)
            label[10:30, 20:40] = 255
            _write_png(root / split / "A" / f"{name}.png", pre)
            _write_png(root / split / "B" / f"{name}.png", post)
            _write_png(root / split / "label" / f"{name}.png", label)
    return root


def _hiucd_folder(root: Path, rng: np.random.Generator) -> Path:
    for split in ("train", "val", "test"):
        for name in ("t1", "t2"):
            pre_cls = rng.integers(1, 10, (64, 64), dtype=np.uint8)  # code 0 = unlabeled
            post_cls = pre_cls.copy()
            post_cls[5:25, 5:25] = pre_cls[5:25, 5:25] % 9 + 1
            change = (pre_cls != post_cls).astype(np.uint8)
            _write_png(root / split / "image" / "2018" / f"{name}.png",
                       rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))  # fmt: skip
            _write_png(root / split / "image" / "2019" / f"{name}.png",
                       rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))  # fmt: skip
            _write_png(root / split / "mask" / "2018_2019" / f"{name}.png",
                       np.stack([pre_cls, post_cls, change], axis=-1))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from geochange.synthetic import make_scene

    root = tmp_path_factory.mktemp("scene")
    make_scene(root, 384, 384, seed=3)
    return root


def test_configs_are_valid_yaml_with_short_class_names() -> None:
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert names == [
        "hiucd_mini.yaml",
        "levircd.yaml",
        "lsscd_scene.yaml",
        "synthetic.yaml",
        "whucd.yaml",
    ]
    for path in CONFIGS.glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        assert config["model"]["class_path"] == "ChangeTrainer"
        assert "." not in config["data"]["class_path"]  # short names resolve


def _tiny_scene_args(root: Path) -> list[str]:
    # The tiny_scene fixture's own size and seed, so SyntheticSceneDataModule reuses it.
    return [f"--data.init_args.root={root}", "--data.init_args.height=384",
            "--data.init_args.width=384", "--data.init_args.scene_seed=3"]  # fmt: skip


def _console(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m geochange ARGS`` as a user would, with this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "geochange", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_synthetic_config(tmp_path: Path, tiny_scene: Path) -> None:
    # From the console, as `geochange fit --config ...`, with the config's default splits
    # (0.8, 0.1, 0.1) on a scene only 6 windows wide (blocks, not stripes).
    run = _console(
        ["fit", "--config", str(CONFIGS / "synthetic.yaml"), *FAST, *_logger_args(tmp_path),
         *_tiny_scene_args(tiny_scene)],
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "`Trainer.fit` stopped: `max_steps=1` reached" in run.stderr  # fast_dev_run
    # No warning about LightningCLI's args, no teardown noise from open rasters.
    assert "args parameter" not in run.stderr
    assert "Error in sys.excepthook" not in run.stderr
    assert "Traceback" not in run.stderr


def test_error_while_building_the_datamodule_is_one_line(tmp_path: Path, tiny_scene: Path) -> None:
    run = _console(
        ["fit", "--config", str(CONFIGS / "synthetic.yaml"), *FAST, *_logger_args(tmp_path),
         *_tiny_scene_args(tiny_scene), "--data.init_args.patch_size=512"],
        tmp_path,
    )  # fmt: skip
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and "Union" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "error" in line]
    assert lines == [
        f"geochange fit: error: the scene {str(tiny_scene / 'pre.tif')!r} is 384 x 384 pixels, "
        "0 x 0 windows of patch_size 512; the 3 non-empty splits (0.8, 0.1, 0.1) need at least "
        "one window each: the scene is smaller than one window: use patch_size <= 384"
    ]


def test_error_while_building_the_model_is_clean(
    tmp_path: Path, tiny_scene: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:  # through the top-level dispatcher
        geochange_main(
            ["fit", "--config", str(CONFIGS / "synthetic.yaml"), *FAST, *_logger_args(tmp_path),
             *_tiny_scene_args(tiny_scene), "--model.init_args.threshold=1.5"]
        )  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "geochange fit: error: threshold must be in (0, 1), got 1.5" in err


def test_synthetic_scene_is_regenerated_or_refused(tmp_path: Path) -> None:
    import rasterio

    from geochange.cli.lightning import SyntheticSceneDataModule

    root = tmp_path / "scene"
    SyntheticSceneDataModule(str(root), 96, 96, scene_seed=1, patch_size=32)
    manifest = json.loads((root / "scene.json").read_text())
    assert (manifest["height"], manifest["width"], manifest["seed"]) == (96, 96, 1)
    # Same request: reused as is.
    stamp = (root / "pre.tif").stat().st_mtime_ns
    SyntheticSceneDataModule(str(root), 96, 96, scene_seed=1, patch_size=32)
    assert (root / "pre.tif").stat().st_mtime_ns == stamp
    # Another size or seed: regenerated, since the folder holds only the generated scene.
    with pytest.warns(UserWarning, match="regenerating the synthetic scene"):
        dm = SyntheticSceneDataModule(str(root), 128, 96, scene_seed=2, patch_size=32)
    manifest = json.loads((root / "scene.json").read_text())
    assert (manifest["height"], manifest["width"], manifest["seed"]) == (128, 96, 2)
    with rasterio.open(root / "pre.tif") as src:
        assert (src.height, src.width) == (128, 96)
    assert sum(r.area for r in dm.rois.values()) == pytest.approx(128 * 96 * 0.6**2)
    # Bad arguments fail before anything is written: the old scene stays usable.
    with pytest.raises(ConfigurationError, match="height"):
        SyntheticSceneDataModule(str(root), 0, 96, scene_seed=2, patch_size=32)
    assert json.loads((root / "scene.json").read_text())["height"] == 128
    # A folder holding the user's own files too is never regenerated.
    (root / "notes.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match=r"other files too \(notes.txt\)"):
        SyntheticSceneDataModule(str(root), 96, 96, scene_seed=1, patch_size=32)
    assert (root / "notes.txt").read_text() == "mine"
    assert json.loads((root / "scene.json").read_text())["seed"] == 2
    # Scene file names without a manifest may be the user's: not overwritten.
    other = tmp_path / "own"
    other.mkdir()
    (other / "pre.tif").write_bytes(b"my image")
    with pytest.raises(ConfigurationError, match=r"holds pre\.tif but no scene\.json"):
        SyntheticSceneDataModule(str(other), 96, 96, patch_size=32)
    assert (other / "pre.tif").read_bytes() == b"my image"


@pytest.mark.skipif(not LEVIR.exists(), reason="shared LEVIR-CD samples not available")
@pytest.mark.parametrize(
    "command", ["fit", pytest.param("validate", marks=SLOW), pytest.param("test", marks=SLOW)]
)
def test_levircd_config(tmp_path: Path, command: str, cli_runs: list[Any]) -> None:
    splits = ["--data.init_args.train_split=demo", "--data.init_args.val_split=demo",
              "--data.init_args.test_split=demo"]  # fmt: skip
    lightning_main(
        [command, "--config", str(CONFIGS / "levircd.yaml"), *FAST, *_logger_args(tmp_path),
         f"--data.init_args.root={LEVIR}", *splits]
    )  # fmt: skip
    _check_run(cli_runs, tmp_path, command, model=_config_model("levircd"), task="binary",
               datamodule="FolderChangeDataModule")  # fmt: skip


@SLOW
def test_whucd_config(tmp_path: Path, cli_runs: list[Any]) -> None:
    root = _binary_folder(tmp_path / "whu", np.random.default_rng(0))
    lightning_main(
        ["fit", "--config", str(CONFIGS / "whucd.yaml"), *FAST, *_logger_args(tmp_path),
         f"--data.init_args.root={root}"]
    )  # fmt: skip
    _check_run(cli_runs, tmp_path, "fit", model=_config_model("whucd"), task="binary",
               datamodule="FolderChangeDataModule")  # fmt: skip


@SLOW
def test_hiucd_mini_config(tmp_path: Path, cli_runs: list[Any]) -> None:
    root = _hiucd_folder(tmp_path / "hiucd", np.random.default_rng(1))
    lightning_main(
        ["fit", "--config", str(CONFIGS / "hiucd_mini.yaml"), *FAST, *_logger_args(tmp_path),
         f"--data.init_args.root={root}", "--model.init_args.loss_kwargs.pixels_per_class=8"]
    )  # fmt: skip
    _check_run(cli_runs, tmp_path, "fit", model=_config_model("hiucd_mini"), task="semantic",
               datamodule="FolderChangeDataModule")  # fmt: skip


@SLOW
def test_lsscd_scene_config(tmp_path: Path, tiny_scene: Path, cli_runs: list[Any]) -> None:
    paths = [f"--data.init_args.{key}={tiny_scene / (key + '.tif')}"
             for key in ("pre", "post", "change", "semantic_pre", "semantic_post")]  # fmt: skip
    lightning_main(
        ["fit", "--config", str(CONFIGS / "lsscd_scene.yaml"), *FAST, *_logger_args(tmp_path),
         *paths, "--data.init_args.splits=[0.6,0.2,0.2]", "--data.init_args.samples_per_epoch=4",
         "--model.init_args.loss_kwargs.pixels_per_class=8"]
    )  # fmt: skip
    _check_run(cli_runs, tmp_path, "fit", model=_config_model("lsscd_scene"), task="semantic",
               datamodule="ChangeDataModule")  # fmt: skip


def test_geochange_error_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _binary_folder(tmp_path / "whu", np.random.default_rng(0))
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(
            ["fit", "--config", str(CONFIGS / "whucd.yaml"), *FAST, *_logger_args(tmp_path),
             f"--data.init_args.root={root}", "--model.init_args.in_channels=4"]
        )  # fmt: skip
    assert exit_info.value.code == 1
    assert "in_channels=4 but the data has 3 bands" in capsys.readouterr().err


def test_data_config_error_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A geochange error while LightningCLI builds the datamodule (here a dataset root that does
    # not exist) reaches main wrapped in jsonargparse's ValueError: still a clean message.
    missing = tmp_path / "LEVIR-CD"
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(
            ["fit", "--config", str(CONFIGS / "levircd.yaml"), *FAST, *_logger_args(tmp_path),
             f"--data.init_args.root={missing}"]
        )  # fmt: skip
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"geochange fit: error: dataset root '{missing}' does not exist")
    assert "Traceback" not in err and "Union subtypes" not in err


def test_synthetic_scene_realism_and_per_date_shift(tmp_path: Path) -> None:
    from geochange.cli.lightning import SyntheticSceneDataModule
    from geochange.synthetic import PRESETS

    root = tmp_path / "scene"
    dm = SyntheticSceneDataModule(
        str(root), 96, 96, scene_seed=1, patch_size=32, realism="levir", per_date_shift=2.5
    )
    manifest = json.loads((root / "scene.json").read_text())
    assert manifest["realism"] == PRESETS["levir"].to_dict()
    assert dm.augmentation is not None and dm.augmentation.per_date_shift == 2.5
    # Another realism is another scene: regenerated.
    with pytest.warns(UserWarning, match="regenerating the synthetic scene"):
        SyntheticSceneDataModule(str(root), 96, 96, scene_seed=1, patch_size=32)
    assert json.loads((root / "scene.json").read_text())["realism"] == {}


def test_cli_call_leaves_sidecars_readable(tiny_scene: Path) -> None:
    # A Lightning CLI call in this process (a notebook, a test worker) used to set
    # GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR for good: GDAL then ignored every .aux.xml
    # sidecar, so class rasters lost their names and the transparent "no change" colour.
    import rasterio

    from geochange.classes import CHANGE_PALETTE

    keys = [*cli_lightning._GDAL_SETTINGS, "GDAL_DISABLE_READDIR_ON_OPEN"]
    before = {key: os.environ.get(key) for key in keys}
    with pytest.raises(SystemExit) as exit_info:
        lightning_main(["fit", "--help"])
    assert exit_info.value.code == 0
    assert {key: os.environ.get(key) for key in keys} == before
    assert "GDAL_DISABLE_READDIR_ON_OPEN" not in cli_lightning._GDAL_SETTINGS
    change = next(tiny_scene.rglob("change.tif"))
    with rasterio.open(change) as ds:
        assert ds.colormap(1)[0] == CHANGE_PALETTE[0] == (255, 255, 255, 0)

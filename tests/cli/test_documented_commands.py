"""Every ``geochange`` command line that README.md and docs/**/*.md show runs, end to end.

The documented invocations are read from the Markdown (see ``docs_commands.py`` for the rules)
and reduced to combinations: a subcommand and the set of options it is given. ``CASES`` holds
one runnable case per combination, on small generated data, and asserts what the outputs
contain; :func:`test_every_documented_combination_has_a_case` fails when the docs show a
combination that no case runs, so a docs addition cannot escape. Option values differ from the
docs (small sizes, local paths); the options do not. LightningCLI cases may add ``extra``
overrides that only make them fast (one step, small patches): those are not part of the
combination a case covers.

The commands run in-process through :func:`geochange.cli.main` (the ``geochange`` entry point)
in a fresh working directory each; one scene, one training run and its checkpoint are shared
by the whole module.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
import scipy.ndimage as ndi
import shapely
import torch
import yaml

from geochange.cli import build_parser
from geochange.cli import main as geochange_main
from tests.builders import write_torchgeo_checkpoint
from tests.cli.docs_commands import (
    REPO,
    SUBCOMMAND_NAMES,
    combination,
    documented_combinations,
    documented_help,
    parse_invocations,
)

CONFIGS = REPO / "examples" / "configs"
LEVIR = REPO / ".." / "shared" / "data" / "levircd-samples"

# Run-time only overrides for LightningCLI cases: one optimizer step on 64-px patches of a
# 512-px scene (a fit stopped by max_steps does not validate), no figures, no progress bars.
FAST = (
    "--trainer.max_steps=1 --trainer.accelerator=cpu "
    "--trainer.enable_progress_bar=false --trainer.enable_model_summary=false "
    "--model.init_args.plot_every_n_epochs=0 "
    "--data.init_args.patch_size=64 --data.init_args.batch_size=2"
)
# The synthetic config's scene, small and with changed buildings (seed 12 has 10 at 512 px).
FAST_SYNTHETIC = (
    f"{FAST} --data.init_args.height=512 --data.init_args.width=512 "
    "--data.init_args.scene_seed=12 --data.init_args.splits=[0.6,0.2,0.2]"
)
FAST_LEVIRCD = f"{FAST} --data.init_args.num_workers=0 --data.init_args.stats_samples=4"


@dataclass
class Run:
    """Exit code and output of one command."""

    code: int
    out: str
    err: str
    cwd: Path


def run_cli(argv: list[str], cwd: Path) -> Run:
    """Run ``geochange ARGV`` in ``cwd`` in this process, as the entry point would."""
    out, err = io.StringIO(), io.StringIO()
    cwd.mkdir(parents=True, exist_ok=True)
    # LightningCLI warns when sys.argv (pytest's) and explicit args are both present.
    argv_before = sys.argv
    sys.argv = ["geochange"]
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = geochange_main(argv)
            except SystemExit as exit_:  # --help, --print_config, LightningCLI errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = argv_before
    return Run(code=code, out=out.getvalue(), err=err.getvalue(), cwd=cwd)


@dataclass(frozen=True)
class Case:
    """One documented combination: a command template and what its outputs must contain.

    ``command`` is formatted with ``e`` (the module's :class:`Env`) token by token, so
    ``{e.scene.change}`` builds that input on first use.
    """

    name: str
    command: str
    check: Callable[[Env, Run], None]
    extra: str = ""
    slow: bool = False
    setup: Callable[[Env, Path], None] | None = None  # prepares the run's folder first

    @property
    def key(self) -> tuple[str, frozenset[str]]:
        """The combination this case covers (``extra`` excluded)."""
        return combination(shlex.split(self.command))

    def argv(self, env: Env) -> list[str]:
        """The arguments to run, documented ones first."""
        tokens = shlex.split(self.command) + shlex.split(self.extra)
        return [token.format(e=env) for token in tokens]


def _write_like(path: Path, reference: Path, array: np.ndarray, nodata: float | None) -> Path:
    """Write ``array`` (bands, rows, cols) as a GeoTIFF on ``reference``'s grid."""
    with rasterio.open(reference) as ref:
        grid = {
            "crs": ref.crs,
            "transform": ref.transform,
            "height": ref.height,
            "width": ref.width,
        }
    with rasterio.open(
        path, "w", driver="GTiff", count=array.shape[0], dtype=array.dtype, nodata=nodata, **grid
    ) as ds:
        ds.write(array)
    return path


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


class Env:
    """Inputs shared by the cases, each built on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.configs = CONFIGS
        self._runs: dict[str, Run] = {}
        self._single: dict[tuple[str, ...], Run] = {}
        self._closing = contextlib.ExitStack()

    def close(self) -> None:
        """Stop what the cases started (the Dask scheduler)."""
        self._closing.close()

    def run(self, case: Case, cwd: Path) -> Run:
        """Run ``case`` in ``cwd`` (shared cases once per module, in the module's folder)."""
        if case.setup is not None:
            case.setup(self, cwd)
        if case.name in SHARED:
            if case.name not in self._runs:
                self._runs[case.name] = run_cli(case.argv(self), self.root / case.name)
            return self._runs[case.name]
        return run_cli(case.argv(self), cwd)

    @cached_property
    def scene(self) -> Any:
        """512 x 512 synthetic scene with 9 new and 1 demolished building."""
        from geochange.synthetic import make_scene

        return make_scene(self.root / "scene", 512, 512, seed=12)

    @cached_property
    def small_scene(self) -> Any:
        """192 x 192 scene pair to predict."""
        from geochange.synthetic import make_scene

        return make_scene(self.root / "small", 192, 192, seed=4)

    @cached_property
    def window(self) -> tuple[float, float, float, float]:
        """Pixel-aligned 96 x 64 px bounds (left, bottom, right, top) inside the small scene."""
        scene = self.small_scene
        left, top, res = scene.transform.c, scene.transform.f, scene.res
        return (left + 32 * res, top - 96 * res, left + 128 * res, top - 32 * res)

    @cached_property
    def probability(self) -> Path:
        """Float change probability on the scene's grid: 0.8 on changed pixels, 0.1 elsewhere."""
        change = _read(self.scene.change)
        prob = np.where(change == 1, 0.8, 0.1).astype(np.float32)[None]
        return _write_like(self.root / "probability.tif", self.scene.change, prob, nodata=None)

    @cached_property
    def building_change(self) -> Path:
        """Reference building change: building at exactly one of the two dates."""
        pre, post = _read(self.scene.semantic_pre), _read(self.scene.semantic_post)
        change = ((pre == 0) != (post == 0)).astype(np.uint8)[None]
        return _write_like(self.root / "building_change.tif", self.scene.change, change, 255)

    def _class_probabilities(self, semantic: Path, name: str) -> Path:
        classes = _read(semantic)
        k = len(self.scene.class_names)
        prob = np.zeros((k, *classes.shape), np.float32)
        np.put_along_axis(prob, classes[None].astype(np.int64), 1.0, axis=0)
        prob[:, :LOW_CONFIDENCE_ROWS] = 1.0 / k  # undecided: ignored by --confidence
        return _write_like(self.root / name, semantic, prob, nodata=None)

    @cached_property
    def prob_pre(self) -> Path:
        """Per-class probabilities of the pre date (one-hot; uniform in the top rows)."""
        return self._class_probabilities(self.scene.semantic_pre, "prob_pre.tif")

    @cached_property
    def prob_post(self) -> Path:
        """Per-class probabilities of the post date."""
        return self._class_probabilities(self.scene.semantic_post, "prob_post.tif")

    @cached_property
    def fit(self) -> Run:
        """The documented ``geochange fit --config examples/configs/synthetic.yaml`` run."""
        run = self.run(CASES_BY_NAME["fit-synthetic"], self.root)
        assert run.code == 0, run.err[-4000:]
        return run

    @cached_property
    def checkpoint(self) -> Path:
        """The ``last.ckpt`` the documented fit wrote."""
        return self.fit.cwd / "logs" / "synthetic" / "version_0" / "checkpoints" / "last.ckpt"

    @cached_property
    def synthetic_data(self) -> Path:
        """The scene the documented fit generated on first use (``data/synthetic``)."""
        return self.fit.cwd / "data" / "synthetic"

    @cached_property
    def steep_checkpoint(self) -> Path:
        """The fit's checkpoint with a 100x steeper change head.

        The one-step model's uint8 probabilities are one value (129) over the whole scene, so
        equal maps would say little; steepened, they vary over it (about 146 to 200).
        """
        checkpoint = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        checkpoint["state_dict"]["model.change_head.0.weight"] *= 100.0
        path = self.root / "steep.ckpt"
        torch.save(checkpoint, path)
        return path

    def in_process(self, argv: list[str]) -> Path:
        """Run ``argv`` without its Dask options (once per module); its output folder."""
        single = list(argv)
        for option in ("--dask-scheduler", "--dask-local-workers"):
            if option in single:
                del single[single.index(option) : single.index(option) + 2]
        key = tuple(single)
        if key not in self._single:
            self._single[key] = run_cli(single, self.root / f"in-process-{len(self._single)}")
        run = self._single[key]
        assert run.code == 0, run.err[-4000:]
        return run.cwd / single[single.index("--out-dir") + 1]

    @cached_property
    def dask_scheduler(self) -> str:
        """The tcp address of a one-worker Dask cluster in threads of this process."""
        distributed = pytest.importorskip("distributed")
        # Threads, not processes: a worker process importing torch takes minutes here.
        cluster = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            protocol="tcp",
            dashboard_address=None,
        )
        self._closing.enter_context(cluster)
        return str(cluster.scheduler_address)

    @cached_property
    def torchgeo_checkpoint(self) -> Path:
        """A randomly initialised TorchGeo ``ChangeDetection`` (unet, resnet18) checkpoint."""
        return write_torchgeo_checkpoint(self.root / "torchgeo.ckpt")

    @cached_property
    def torchgeo_probability(self) -> np.ndarray:
        """The TorchGeo checkpoint's probabilities on the small scene, from Python."""
        from geochange.predict import ChangePredictor

        predictor = ChangePredictor.from_checkpoint(
            self.torchgeo_checkpoint,
            normalization={"mean": [0.0] * 3, "std": [255.0] * 3},
            tile_size=128,
            overlap=32,
            progress=False,
        )
        result = predictor.predict(
            self.small_scene.pre, self.small_scene.post, self.root / "torchgeo-python"
        )
        return _read(result.probability)

    @cached_property
    def levircd(self) -> Path:
        """The shared LEVIR-CD crops in the config's ``{train,val,test}/{A,B,label}`` layout."""
        if not (LEVIR / "A").is_dir():
            pytest.skip("shared LEVIR-CD samples not available")
        root = self.root / "LEVIR-CD"
        names = sorted(p.name for p in (LEVIR / "A").glob("*.png"))
        splits = {"train": names[:-4], "val": names[-4:-2], "test": names[-2:]}
        for split, members in splits.items():
            for folder in ("A", "B", "label"):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                for name in members:
                    (root / split / folder / name).symlink_to((LEVIR / folder / name).resolve())
        return root


LOW_CONFIDENCE_ROWS = 64


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_help(command: str) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        assert run.out.startswith(f"usage: geochange {command}")
        assert "--help" in run.out

    return check


def check_synth(
    out_dir: str, size: tuple[int, int], *, crs: str = "EPSG:32650", res: float = 0.6, bands=3
) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        from geochange.synthetic import Scene

        scene = Scene.load(run.cwd / out_dir)
        assert (scene.height, scene.width) == size
        assert (scene.crs, scene.res, scene.bands) == (crs, res, bands)
        with rasterio.open(scene.pre) as pre, rasterio.open(scene.change) as change:
            assert pre.count == bands and pre.shape == size == change.shape
            assert pre.crs == rasterio.crs.CRS.from_user_input(crs)
            assert pre.res == (res, res)
            changed = int((change.read(1) == 1).sum())
        assert changed == scene.stats["changed_pixels"]
        info = pyogrio.read_info(scene.changed_buildings, layer="changed_buildings")
        assert info["features"] == (
            scene.stats["new_buildings"] + scene.stats["demolished_buildings"]
        )
        assert run.out.startswith(f"wrote {out_dir}:")

    return check


def check_fit(log_name: str, settings: dict[str, Any] | None = None) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        from geochange.trainers.checkpoint import read_checkpoint_metadata

        version = run.cwd / "logs" / log_name / "version_0"
        meta = read_checkpoint_metadata(version / "checkpoints" / "last.ckpt")
        assert meta["task"] == "binary" and meta["in_channels"] == 3
        assert meta["normalization"] is not None
        config = yaml.safe_load((version / "config.yaml").read_text())
        assert config["trainer"]["max_steps"] == 1  # the fast override was applied
        for dotted, value in (settings or {}).items():
            node = config
            for part in dotted.split("."):
                node = node[part]
            assert node == value, dotted

    return check


def check_evaluated(stage: str) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        # Lightning prints the logged metrics of the stage as a table.
        assert re.search(rf"{stage}/f1\s", run.out), run.out[-2000:]
        assert re.search(rf"{stage}/iou_change\s", run.out)

    return check


def check_print_config(env: Env, run: Run) -> None:
    config = yaml.safe_load(run.out)
    assert config["model"]["class_path"].endswith("ChangeTrainer")
    assert config["data"]["class_path"].endswith("FolderChangeDataModule")
    assert config["data"]["init_args"]["root"] == "data/LEVIR-CD"
    assert not (run.cwd / "logs").exists()  # printing the config runs nothing


def check_fit_help(env: Env, run: Run) -> None:
    assert "--config" in run.out and "--trainer" in run.out and "--print_config" in run.out


def foreign_change_tif(out: str) -> Callable[[Env, Path], None]:
    """Put a change.tif that geochange did not write (the scene's reference) into ``out``."""

    def setup(env: Env, cwd: Path) -> None:
        (cwd / out).mkdir(parents=True, exist_ok=True)
        shutil.copy(env.small_scene.change, cwd / out / "change.tif")

    return setup


def check_predict(
    out: str, *, vector: str | None = None, window: bool = False
) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        folder = run.cwd / out
        with rasterio.open(env.small_scene.pre) as pre:
            crs, transform, shape = pre.crs, pre.transform, pre.shape
        with rasterio.open(folder / "change.tif") as ds:
            change = ds.read(1)
            assert ds.crs == crs
            if window:
                assert ds.bounds == pytest.approx(env.window)
                assert ds.shape == (64, 96)
            else:
                assert ds.transform == transform and ds.shape == shape
        assert set(np.unique(change)) <= {0, 1}
        with rasterio.open(folder / "probability.tif") as ds:
            assert ds.shape == change.shape
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no leftovers
        assert f"change: {folder.relative_to(run.cwd) / 'change.tif'}" in run.out
        if vector is not None:
            info = pyogrio.read_info(run.cwd / vector)
            assert info["crs"] == env.small_scene.crs
            # One polygon per 4-connected region of the change map, covering its pixels.
            assert info["features"] == ndi.label(change == 1)[1]
            polygons = pyogrio.read_dataframe(run.cwd / vector)
            assert polygons["pixel_count"].sum() == (change == 1).sum()
            assert f"vector: {vector}" in run.out

    return check


def check_same_as_in_process(case: str, out: str) -> Callable[[Env, Run], None]:
    """The rasters of a Dask run equal those of the same command in one process, bit for bit."""

    def check(env: Env, run: Run) -> None:
        check_predict(out)(env, run)
        single = env.in_process(CASES_BY_NAME[case].argv(env))
        for name in ("change.tif", "probability.tif"):
            spread = _read(run.cwd / out / name)
            np.testing.assert_array_equal(spread, _read(single / name), err_msg=name)
        # Probabilities that vary over the scene: equal ones show every block was inferred.
        probability = _read(run.cwd / out / "probability.tif")
        assert probability.std() > 1 and len(np.unique(probability)) > 20

    return check


def check_torchgeo(out: str, *, layout: bool = False) -> Callable[[Env, Run], None]:
    """The TorchGeo checkpoint's maps, normalized by --mean/--std as from Python."""

    def check(env: Env, run: Run) -> None:
        check_predict(out)(env, run)
        probability = _read(run.cwd / out / "probability.tif")
        assert probability.dtype == np.uint8 and probability.std() > 0
        np.testing.assert_array_equal(probability, env.torchgeo_probability)
        if layout:
            # The checkpoint's network takes the dates stacked: the other layout is refused,
            # before anything is written.
            argv = CASES_BY_NAME["predict-torchgeo-input-layout"].argv(env)
            argv[argv.index("--input-layout") + 1] = "temporal"
            refused = run_cli(argv, run.cwd / "temporal")
            assert refused.code == 1
            assert "stacked layout; input_layout='temporal' does not match" in refused.err
            assert str(env.torchgeo_checkpoint) in refused.err
            assert not (run.cwd / "temporal" / out).exists()

    return check


def check_synth_realism(out_dir: str, size: tuple[int, int]) -> Callable[[Env, Run], None]:
    """A ``--realism levir`` scene: recorded in scene.json, its post image not the clean one."""

    def check(env: Env, run: Run) -> None:
        from geochange.synthetic import PRESETS, Scene

        check_synth(out_dir, size)(env, run)
        recorded = json.loads((run.cwd / out_dir / "scene.json").read_text())["realism"]
        assert recorded == PRESETS["levir"].to_dict() and recorded["lean"]["strength"] > 0
        assert Scene.load(run.cwd / out_dir).realism == recorded
        clean = run_cli(["synth", "clean", "--size", "256x256", "--realism", "none"], run.cwd)
        assert clean.code == 0 and Scene.load(run.cwd / "clean").realism == {}
        with rasterio.open(run.cwd / out_dir / "post.tif") as real:
            with rasterio.open(run.cwd / "clean" / "post.tif") as plain:
                assert real.shape == plain.shape and real.transform == plain.transform
                difference = np.abs(real.read().astype(int) - plain.read().astype(int))
        assert (difference > 0).mean() > 0.5, (difference > 0).mean()

    return check


def check_vectorize_change_classes(*, min_area: float) -> Callable[[Env, Run], None]:
    """Only building changes, typed from both dates, as the scene's own changed buildings."""

    def check(env: Env, run: Run) -> None:
        written = pyogrio.read_dataframe(run.cwd / "changes.gpkg", layer="changes")
        assert len(written) and (written["area_m2"] >= min_area).all()
        assert all("building" in value for value in written["change_type"])
        truth = pyogrio.read_dataframe(env.scene.changed_buildings, layer="changed_buildings")
        big = truth[truth.geometry.area >= min_area]
        assert written["change_type"].value_counts().to_dict() == (
            big["change_type"].value_counts().to_dict()
        )

    return check


def check_vectorize(
    *, min_area: float = 0.0, semantic: bool = False, layer_per_type: bool = False
) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        import geopandas as gpd
        import pandas as pd

        out = run.cwd / "changes.gpkg"
        # Feature layers (not QGIS's layer_styles table, which has no geometry).
        layers = [str(row[0]) for row in pyogrio.list_layers(out) if row[1] is not None]
        frames = [pyogrio.read_dataframe(out, layer=name) for name in layers]
        written = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
        assert written.crs == env.scene.crs
        geoms = np.asarray(written.geometry.values, dtype=object)
        assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
        np.testing.assert_allclose(written["area_m2"], shapely.area(geoms), rtol=1e-9)
        pixel_area = env.scene.res**2
        # One polygon per 4-connected changed region of at least min_area.
        labels, _ = ndi.label(_read(env.scene.change) == 1)
        sizes = np.bincount(labels.ravel())[1:]
        if not semantic:
            assert sorted(written["pixel_count"]) == sorted(
                s for s in sizes if s * pixel_area >= min_area
            )
        assert (written["pixel_count"] * pixel_area >= min_area).all()
        np.testing.assert_allclose(written["mean_prob"], 0.8, rtol=1e-6)
        assert f"wrote {len(written)} change polygons to changes.gpkg" in run.out
        if semantic:
            truth = pyogrio.read_dataframe(env.scene.changed_buildings, layer="changed_buildings")
            expected = truth["change_type"].value_counts().to_dict()
            assert written["change_type"].value_counts().to_dict() == expected
        if layer_per_type:
            assert sorted(layers) == ["changes_demolished_building", "changes_new_building"]
            for name, frame in zip(layers, frames, strict=True):
                assert set(frame["change_type"]) == {
                    name.removeprefix("changes_").replace("_", " ")
                }
        else:
            assert layers == ["changes"]

    return check


def check_evaluate(env: Env, run: Run) -> None:
    report = json.loads((run.cwd / "report" / "report.json").read_text())
    truth = pyogrio.read_info(env.scene.changed_buildings, layer="changed_buildings")["features"]
    # The scene's own change and class rasters as the prediction: a perfect score.
    assert report["pixel"]["iou_change"] == 1.0
    objects = report["objects"]
    assert objects["true_positives"] == objects["reference"] == objects["predicted"] == truth
    assert objects["precision"] == objects["recall"] == 1.0
    assert {"report.md", "objects.gpkg"} <= {p.name for p in (run.cwd / "report").iterdir()}
    assert "pixel: iou_change 1.0000" in run.out


def check_pseudo(
    out: str, *, reference: bool = False, low_confidence: bool = False
) -> Callable[[Env, Run], None]:
    def check(env: Env, run: Run) -> None:
        labels = _read(run.cwd / out)
        building = _read(env.building_change) == 1
        assert set(np.unique(labels)) <= {0, 1, 255}
        if low_confidence:
            assert (labels[:LOW_CONFIDENCE_ROWS] == 255).all()
            assert (labels[LOW_CONFIDENCE_ROWS:] != 255).all()
            labels, building = labels[LOW_CONFIDENCE_ROWS:], building[LOW_CONFIDENCE_ROWS:]
        change = labels == 1
        # Perfect class maps: the pseudo labels are building changes and find nearly all.
        assert change.any() and not (change & ~building).any()
        assert (change & building).sum() / building.sum() >= 0.9
        assert f"wrote {out} (mixed mode)" in run.out
        if reference:
            with rasterio.open(env.building_change) as ds:
                truth = ds.read(1) == 1
            iou = (change & truth).sum() / (change | truth).sum()
            assert f"IoU^c {iou:.4f}" in run.out

    return check


# --------------------------------------------------------------------------------------------
# The cases: one per documented combination
# --------------------------------------------------------------------------------------------

SYNTHETIC_YAML = "{e.configs}/synthetic.yaml"
LEVIRCD_YAML = "{e.configs}/levircd.yaml"
# test/validate read the scene the shared fit generated, with the fit's split settings, and
# evaluate one batch (--trainer.limit_*_batches=1 parses as 1.0, i.e. every batch).
ON_FIT_DATA = (
    f"{FAST_SYNTHETIC} --trainer.fast_dev_run=true --data.init_args.root={{e.synthetic_data}}"
)
PREDICT = (
    "predict --checkpoint {e.checkpoint} --pre {e.small_scene.pre} --post {e.small_scene.post}"
)
# The TorchGeo checkpoint records no normalization: --mean/--std give TorchGeo's default.
TORCHGEO_PREDICT = (
    "predict --checkpoint {e.torchgeo_checkpoint} --pre {e.small_scene.pre} "
    "--post {e.small_scene.post} --out-dir out_torchgeo_cli/ --tile-size 128 --overlap 32 "
    "--mean 0 0 0 --std 255 255 255 --quiet"
)

CASES: list[Case] = [
    # synth
    Case(
        "synth",
        "synth data/synthetic --size 256x320 --seed 7",
        check_synth("data/synthetic", (256, 320)),
    ),
    Case(
        "synth-crs",
        "synth data/lsscd --size 320x256 --crs EPSG:32633 --res 0.5 --bands 4",
        check_synth("data/lsscd", (320, 256), crs="EPSG:32633", res=0.5, bands=4),
    ),
    Case(
        "synth-workers",
        "synth data/lsscd --size 256x256 --res 0.5 --bands 4 --workers 2",
        check_synth("data/lsscd", (256, 256), res=0.5, bands=4),
    ),
    Case(
        "synth-realism",
        "synth data/levir-cli --size 256x256 --realism levir",
        check_synth_realism("data/levir-cli", (256, 256)),
    ),
    Case("synth-help", "synth --help", check_help("synth")),
    # fit / validate / test (LightningCLI)
    Case("fit-synthetic", f"fit --config {SYNTHETIC_YAML}", check_fit("synthetic"), FAST_SYNTHETIC),
    Case(
        "fit-max-epochs",
        f"fit --config {SYNTHETIC_YAML} --trainer.max_epochs 10",
        check_fit("synthetic", {"trainer.max_epochs": 10}),
        FAST_SYNTHETIC,
        slow=True,
    ),
    Case(
        "fit-levircd",
        f"fit --config {LEVIRCD_YAML} --data.init_args.root={{e.levircd}}",
        check_fit("levircd", {"data.init_args.layout": "binary"}),
        FAST_LEVIRCD,
        slow=True,
    ),
    Case(
        "fit-levircd-overrides",
        f"fit --config {LEVIRCD_YAML} --data.init_args.root={{e.levircd}} "
        "--data.init_args.batch_size=3 --trainer.max_epochs=50 --trainer.precision=32-true",
        check_fit(
            "levircd",
            {
                "data.init_args.batch_size": 3,
                "trainer.max_epochs": 50,
                "trainer.precision": "32-true",
            },
        ),
        # The documented batch size wins over FAST's (given after it).
        FAST_LEVIRCD.replace("--data.init_args.batch_size=2", ""),
        slow=True,
    ),
    Case("fit-print-config", f"fit --config {LEVIRCD_YAML} --print_config", check_print_config),
    Case("fit-help", "fit --help", check_fit_help),
    Case(
        "validate-checkpoint",
        f"validate --config {SYNTHETIC_YAML} --ckpt_path {{e.checkpoint}}",
        check_evaluated("val"),
        ON_FIT_DATA,
    ),
    Case("validate", f"validate --config {SYNTHETIC_YAML}", check_evaluated("val"), ON_FIT_DATA),
    Case(
        "test-checkpoint",
        f"test --config {SYNTHETIC_YAML} --ckpt_path {{e.checkpoint}}",
        check_evaluated("test"),
        ON_FIT_DATA,
    ),
    Case("test", f"test --config {SYNTHETIC_YAML}", check_evaluated("test"), ON_FIT_DATA),
    # predict
    Case("predict", f"{PREDICT} --out-dir out/", check_predict("out")),
    Case(
        "predict-vector",
        f"{PREDICT} --out-dir out/ --vector out/changes.gpkg",
        check_predict("out", vector="out/changes.gpkg"),
    ),
    Case(
        "predict-tiles",
        f"{PREDICT} --out-dir out/ --tile-size 96 --overlap 32 --vector out/changes.gpkg",
        check_predict("out", vector="out/changes.gpkg"),
    ),
    Case(
        "predict-resume",
        f"{PREDICT} --out-dir out/ --tile-size 96 --overlap 32 --vector out/changes.gpkg --resume",
        check_predict("out", vector="out/changes.gpkg"),
    ),
    Case(
        "predict-bounds",
        f"{PREDICT} --out-dir out/ --tile-size 96 --overlap 32 --vector out/changes.gpkg "
        "--bounds {e.window[0]} {e.window[1]} {e.window[2]} {e.window[3]}",
        check_predict("out", vector="out/changes.gpkg", window=True),
    ),
    Case(
        "predict-all-options",
        f"{PREDICT} --out-dir out/ --tile-size 64 --overlap 16 --batch-size 4 --device auto "
        "--precision auto --vector out/changes.gpkg --resume "
        "--bounds {e.window[0]} {e.window[1]} {e.window[2]} {e.window[3]}",
        check_predict("out", vector="out/changes.gpkg", window=True),
    ),
    Case(
        "predict-overwrite",
        f"{PREDICT} --out-dir out/ --tile-size 96 --overlap 32 --vector out/changes.gpkg "
        "--overwrite",
        check_predict("out", vector="out/changes.gpkg"),
        setup=foreign_change_tif("out"),
    ),
    Case(
        "predict-all-options-overwrite",
        f"{PREDICT} --out-dir out/ --tile-size 64 --overlap 16 --batch-size 4 --device auto "
        "--precision auto --vector out/changes.gpkg --resume --overwrite "
        "--bounds {e.window[0]} {e.window[1]} {e.window[2]} {e.window[3]}",
        check_predict("out", vector="out/changes.gpkg", window=True),
        setup=foreign_change_tif("out"),
    ),
    Case(
        "predict-torchgeo",
        TORCHGEO_PREDICT,
        check_torchgeo("out_torchgeo_cli"),
    ),
    Case(
        "predict-torchgeo-input-layout",
        f"{TORCHGEO_PREDICT} --input-layout stacked",
        check_torchgeo("out_torchgeo_cli", layout=True),
    ),
    Case(
        "predict-dask-local-workers",
        "predict --checkpoint {e.steep_checkpoint} --pre {e.small_scene.pre} "
        "--post {e.small_scene.post} --out-dir out_dask/ --dask-local-workers 1 --quiet",
        # One worker process starting (it imports torch): ~35 s on the loaded 2-core machine.
        check_same_as_in_process("predict-dask-local-workers", "out_dask"),
    ),
    Case(
        "predict-dask-scheduler",
        "predict --dask-scheduler {e.dask_scheduler} --checkpoint {e.steep_checkpoint} "
        "--pre {e.small_scene.pre} --post {e.small_scene.post} --out-dir out_dask/",
        check_same_as_in_process("predict-dask-scheduler", "out_dask"),
    ),
    Case("predict-help", "predict --help", check_help("predict")),
    # vectorize
    Case(
        "vectorize",
        "vectorize {e.scene.change} --out changes.gpkg --probability {e.probability}",
        check_vectorize(),
    ),
    Case(
        "vectorize-simplify-regularize",
        "vectorize {e.scene.change} --out changes.gpkg --probability {e.probability} "
        "--min-area 20 --simplify 0.5 --regularize rectangle",
        check_vectorize(min_area=20),
    ),
    Case(
        "vectorize-semantic-layers",
        "vectorize {e.scene.change} --out changes.gpkg --probability {e.probability} "
        "--semantic-pre {e.scene.semantic_pre} --semantic-post {e.scene.semantic_post} "
        "--min-area 20 --simplify 0.5 --regularize rectangle --layer-per-type",
        check_vectorize(min_area=20, semantic=True, layer_per_type=True),
    ),
    Case(
        "vectorize-change-classes",
        "vectorize {e.scene.change} --out changes.gpkg --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --change-classes building --min-area 4",
        check_vectorize_change_classes(min_area=4),
    ),
    Case("vectorize-help", "vectorize --help", check_help("vectorize")),
    # evaluate
    Case(
        "evaluate",
        "evaluate --prediction {e.scene.root} --reference {e.scene.change} "
        "--reference-polygons {e.scene.changed_buildings} --out-dir report/",
        check_evaluate,
    ),
    Case("evaluate-help", "evaluate --help", check_help("evaluate")),
    # pseudo-labels
    Case(
        "pseudo-labels",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_change.tif",
        check_pseudo("pseudo_change.tif"),
    ),
    Case(
        "pseudo-labels-mixed",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_change.tif "
        "--change-classes building --mode mixed",
        check_pseudo("pseudo_change.tif"),
    ),
    Case(
        "pseudo-labels-probabilities",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_change.tif "
        "--change-classes building --mode mixed --prob-pre {e.prob_pre} "
        "--prob-post {e.prob_post} --confidence 0.8 --overlap-threshold 0.0 "
        "--min-instance-pixels 10 --block-size 128",
        check_pseudo("pseudo_change.tif", low_confidence=True),
    ),
    Case(
        "pseudo-labels-reference",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_change.tif "
        "--reference {e.building_change}",
        check_pseudo("pseudo_change.tif", reference=True),
    ),
    Case(
        "pseudo-labels-mixed-reference",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_mixed.tif "
        "--change-classes building --mode mixed --reference {e.building_change}",
        check_pseudo("pseudo_mixed.tif", reference=True),
    ),
    Case(
        "pseudo-labels-classes-reference",
        "pseudo-labels --semantic-pre {e.scene.semantic_pre} "
        "--semantic-post {e.scene.semantic_post} --out pseudo_change.tif "
        "--change-classes building --reference {e.building_change}",
        check_pseudo("pseudo_change.tif", reference=True),
    ),
    Case("pseudo-labels-help", "pseudo-labels --help", check_help("pseudo-labels")),
    # demo
    Case("demo-help", "demo --help", check_help("demo")),
]
CASES_BY_NAME = {case.name: case for case in CASES}
# Run once per module and shared: the fit whose checkpoint the other commands use.
SHARED = {"fit-synthetic"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    shared = Env(tmp_path_factory.mktemp("documented"))
    yield shared
    shared.close()


def test_every_documented_combination_has_a_case() -> None:
    documented = documented_combinations()
    covered = {case.key for case in CASES}
    missing = [
        f"  geochange {command} {' '.join(sorted(options))}  (shown at {', '.join(where)})"
        for (command, options), where in documented.items()
        if (command, options) not in covered
    ]
    assert not missing, "documented command lines without a case in CASES:\n" + "\n".join(missing)
    # Guard against a parser that finds nothing: every subcommand is documented somewhere.
    assert {command for command, _ in documented} == set(SUBCOMMAND_NAMES)


def test_case_names_and_combinations_are_unique() -> None:
    assert len(CASES_BY_NAME) == len(CASES)
    keys = [case.key for case in CASES]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]
)
def test_documented_command(case: Case, env: Env, tmp_path: Path) -> None:
    run = env.run(case, tmp_path)
    assert run.code == 0, f"geochange {' '.join(case.argv(env))}\n{run.err[-4000:]}"
    assert "Traceback" not in run.err
    case.check(env, run)


@pytest.mark.parametrize(
    ("source", "command", "shown"),
    [pytest.param(*shown, id=f"{shown[1]}@{shown[0]}") for shown in documented_help()],
)
def test_documented_help_lists_the_real_options(source: str, command: str, shown: str) -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    actual = {option for action in parser._actions for option in action.option_strings}
    listed = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", shown))
    assert listed == actual, f"{source}: regenerate with `geochange {command} --help`"


def test_parser_rules() -> None:
    # The rules of docs_commands on a made-up page (kept in step with its docstring).
    page = "\n".join(
        [
            "Run `geochange synth` or `geochange predict ... --vector x.gpkg`.",
            "```console",
            "$ geochange predict --checkpoint a --pre b --post c --out-dir d \\",
            "    [--tile-size 512] --overlap=128   # a comment --quiet",
            "geochange predict ... --resume",
            "wrote 3 files   # output, not a command",
            "geochange (this run)      0.201  0.334",
            "```",
            "~~~yaml",
            "# geochange fit --config ignored.yaml (a YAML comment)",
            "~~~",
            "`python -m geochange fit | test --config c.yaml`",
        ]
    )
    found = parse_invocations(page, "page.md")
    required = frozenset({"--checkpoint", "--pre", "--post", "--out-dir"})
    full = required | {"--overlap"}
    assert [(i.source, i.command, i.combinations) for i in found] == [
        ("page.md:1", "predict", (required | {"--vector"},)),
        ("page.md:3", "predict", (full, full | {"--tile-size"})),
        ("page.md:5", "predict", (full | {"--resume"},)),
        ("page.md:12", "fit", (frozenset({"--config"}),)),
        ("page.md:12", "test", (frozenset({"--config"}),)),
    ]

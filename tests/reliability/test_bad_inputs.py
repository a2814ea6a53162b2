"""Every CLI command over a corpus of bad inputs: a named error, no traceback, no damage.

Each row runs one command line in-process (``geochange.cli.main``; an exception escaping it is
what a user would see as a raw traceback) and asserts the exit code, a message naming the
problem, that no final output appears on failure, that no input file changed, and that no
checkpoint ran code. The matching Python entry points are checked in
``test_python_entry_points``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from geochange.cli import main as cli_main
from geochange.errors import CheckpointError, DataError, GeochangeError
from tests.reliability.corpus import Corpus, build, copy_scene, digest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build(tmp_path_factory.mktemp("corpus"))


@dataclass(frozen=True)
class Case:
    """One command line over the corpus and what a user must see."""

    id: str
    argv: Callable[[Corpus, Path], list[str]]
    code: int
    message: str = ""  # regex (case-insensitive) that stderr must match
    finals: tuple[str, ...] = ()  # paths under the case's output dir that must not appear
    check: Callable[[Corpus, Path], None] | None = None
    marks: tuple[Any, ...] = field(default_factory=tuple)


def predict(pre: str = "pre", post: str = "post", ckpt: str = "ckpt", *extra: str):
    def argv(c: Corpus, out: Path) -> list[str]:
        return [
            "predict",
            "--checkpoint",
            str(getattr(c, ckpt)),
            "--pre",
            str(getattr(c, pre)),
            "--post",
            str(getattr(c, post)),
            "--out-dir",
            str(out / "o"),
            "--quiet",
            *extra,
        ]

    return argv


def vectorize(change: str = "pred_change", *extra: str):
    def argv(c: Corpus, out: Path) -> list[str]:
        return [
            "vectorize",
            str(getattr(c, change)),
            "--out",
            str(out / "c.gpkg"),
            "--quiet",
            *extra,
        ]

    return argv


def evaluate(reference: str = "change", polygons: str = "polygons", prediction: str = "pred"):
    def argv(c: Corpus, out: Path) -> list[str]:
        pred = c.root / "pred" if prediction == "pred" else getattr(c, prediction)
        return [
            "evaluate",
            "--prediction",
            str(pred),
            "--reference",
            str(getattr(c, reference)),
            "--reference-polygons",
            str(getattr(c, polygons)),
            "--out-dir",
            str(out / "r"),
            "--quiet",
        ]

    return argv


def pseudo(pre: str = "semantic_pre", post: str = "semantic_post", to: str = "p.tif"):
    def argv(c: Corpus, out: Path) -> list[str]:
        return [
            "pseudo-labels",
            "--semantic-pre",
            str(getattr(c, pre)),
            "--semantic-post",
            str(getattr(c, post)),
            "--out",
            str(out / to),
            "--quiet",
        ]

    return argv


def _under_file(c: Corpus, out: Path) -> Path:
    return c.regular_file / "sub"


PREDICTED = ("o/change.tif", "o/probability.tif")


def _nodata_at_hole(c: Corpus, out: Path) -> None:
    import rasterio

    with rasterio.open(out / "o" / "change.tif") as src:
        change = src.read(1)
        assert src.nodata is not None
        assert (change[100:116, 100:116] == src.nodata).all()
        assert (change != src.nodata).mean() > 0.99


def _fit_config(c: Corpus, out: Path, **model: str) -> Path:
    import yaml

    config = {
        "model": {
            "class_path": "ChangeTrainer",
            "init_args": {
                "model": "fusion_unet",
                "backbone": "resnet18",
                "in_channels": 3,
                **model,
            },
        },
        "data": {
            "class_path": "ChangeDataModule",
            "init_args": {
                "pre": str(c.pre),
                "post": str(c.post),
                "change": str(c.change),
                "patch_size": 64,
                "batch_size": 2,
                "samples_per_epoch": 4,
                "splits": [0.5, 0.5, 0.0],
            },
        },
        "trainer": {
            "max_steps": 1,
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "default_root_dir": str(out / "fit"),
        },
    }
    path = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


CASES = [
    # --- predict: unreadable inputs
    Case("predict-missing-pre", predict(pre="missing"), 1, r"does_not_exist\.tif", PREDICTED),
    Case("predict-empty-pre", predict(pre="empty"), 1, r"empty\.tif", PREDICTED),
    Case(
        "predict-truncated-cog", predict(pre="truncated_cog"), 1, r"truncated_cog\.tif", PREDICTED
    ),
    Case(
        "predict-truncated-tiled",
        predict("truncated_tiled", "plain_tiled"),
        1,
        r"truncated_tiled\.tif",
        PREDICTED,
    ),
    Case("predict-not-georeferenced", predict(pre="nogeo"), 1, r"georeferenc", PREDICTED),
    Case("predict-band-count", predict(post="post_4band"), 1, r"band", PREDICTED),
    Case("predict-all-nodata", predict(pre="pre_allnodata"), 1, r"no valid|nodata", PREDICTED),
    # --- predict: grids
    Case("predict-crs-overlap", predict(post="post_crs_overlap"), 0),
    Case("predict-crs-apart", predict(post="post_crs_apart"), 1, r"overlap", PREDICTED),
    Case("predict-other-resolution", predict(post="post_coarse"), 0),
    Case("predict-nan-no-nodata", predict("pre_nan", "post_float"), 0, check=_nodata_at_hole),
    # --- predict: checkpoints
    Case("predict-missing-ckpt", predict(ckpt="missing"), 1, r"does_not_exist", PREDICTED),
    Case("predict-evil-ckpt", predict(ckpt="ckpt_evil"), 1, r"python object|pickl", PREDICTED),
    Case(
        "predict-random-ckpt",
        predict(ckpt="ckpt_random"),
        1,
        r"corrupt|not a .*checkpoint",
        PREDICTED,
    ),
    Case(
        "predict-ckpt-bands", predict(ckpt="ckpt_4band"), 1, r"4 .*band|band.*4|channel", PREDICTED
    ),
    # --- predict: outputs
    Case(
        "predict-out-under-file",
        lambda c, o: [*predict()(c, o)[:-3], "--out-dir", str(_under_file(c, o)), "--quiet"],
        1,
        r"regular_file\.txt",
    ),
    Case(
        "predict-bounds-outside",
        predict("pre", "post", "ckpt", "--bounds", "0", "0", "1", "1"),
        1,
        r"bounds|outside|overlap",
        ("o",),
    ),
    # --- vectorize
    Case("vectorize-missing", vectorize("missing"), 1, r"does_not_exist\.tif", ("c.gpkg",)),
    Case("vectorize-empty", vectorize("empty"), 1, r"empty\.tif", ("c.gpkg",)),
    Case("vectorize-truncated", vectorize("truncated_cog"), 1, r"truncated_cog\.tif", ("c.gpkg",)),
    Case("vectorize-mask-0-255", vectorize("mask_0_255"), 1, r"255", ("c.gpkg",)),
    Case("vectorize-mask-7", vectorize("mask_7"), 1, r"\b7\b", ("c.gpkg",)),
    Case("vectorize-mask-minus-1", vectorize("mask_minus1"), 1, r"-1", ("c.gpkg",)),
    Case("vectorize-not-georeferenced", vectorize("nogeo"), 1, r"georeferenc|band", ("c.gpkg",)),
    Case(
        "vectorize-out-under-file",
        lambda c, o: [
            "vectorize",
            str(c.pred_change),
            "--out",
            str(_under_file(c, o) / "c.gpkg"),
            "--quiet",
        ],
        1,
        r"regular_file\.txt",
    ),
    Case(
        "vectorize-probability-other-grid",
        vectorize("pred_change", "--probability", "PLACEHOLDER"),
        1,
        r"grid|size|shape|transform",
        ("c.gpkg",),
    ),
    # --- evaluate
    Case("evaluate-reference-0-255", evaluate(reference="mask_0_255"), 1, r"255", ("r",)),
    Case("evaluate-reference-7", evaluate(reference="mask_7"), 1, r"\b7\b", ("r",)),
    Case("evaluate-reference-missing", evaluate(reference="missing"), 1, r"does_not_exist", ("r",)),
    Case(
        "evaluate-prediction-missing", evaluate(prediction="missing"), 1, r"does_not_exist", ("r",)
    ),
    Case("evaluate-invalid-polygons", evaluate(polygons="bad_polygons"), 0, r"invalid"),
    Case("evaluate-polygons-apart", evaluate(polygons="polygons_apart"), 1, r"overlap", ("r",)),
    Case(
        "evaluate-report-under-file",
        lambda c, o: [*evaluate()(c, o)[:-3], "--out-dir", str(_under_file(c, o)), "--quiet"],
        1,
        r"regular_file\.txt",
    ),
    # --- pseudo-labels
    Case("pseudo-missing", pseudo(pre="missing"), 1, r"does_not_exist", ("p.tif",)),
    Case("pseudo-empty", pseudo(post="empty"), 1, r"empty\.tif", ("p.tif",)),
    Case("pseudo-multiband", pseudo(post="post_4band"), 1, r"band", ("p.tif",)),
    Case("pseudo-other-grid", pseudo(post="post_coarse"), 1, r"grid|size|shape|band", ("p.tif",)),
    Case(
        "pseudo-out-under-file",
        lambda c, o: [*pseudo()(c, o)[:-3], "--out", str(_under_file(c, o) / "p.tif"), "--quiet"],
        1,
        r"regular_file\.txt",
    ),
    # --- synth
    Case(
        "synth-out-under-file",
        lambda c, o: ["synth", str(_under_file(c, o)), "--size", "64x64", "--quiet"],
        1,
        r"regular_file\.txt",
    ),
    # --- fit
    Case(
        "fit-evil-weights",
        lambda c, o: ["fit", "--config", str(_fit_config(c, o, weights=str(c.weights_evil)))],
        1,
        r"python object|pickl",
    ),
    Case(
        "fit-random-ckpt-path",
        lambda c, o: ["fit", "--config", str(_fit_config(c, o)), "--ckpt_path", str(c.ckpt_random)],
        1,
        r"random\.ckpt",
    ),
    Case(
        "fit-evil-ckpt-path",
        lambda c, o: ["fit", "--config", str(_fit_config(c, o)), "--ckpt_path", str(c.ckpt_evil)],
        1,
        r"evil\.ckpt",
    ),
]


def _no_code_ran(corpus: Corpus) -> None:
    ran = corpus.marker.exists()
    corpus.marker.unlink(missing_ok=True)  # one failure must not cascade into the next cases
    assert not ran, "a checkpoint ran code"


def _argv(case: Case, corpus: Corpus, out: Path) -> list[str]:
    argv = case.argv(corpus, out)
    if "PLACEHOLDER" in argv:  # a probability raster on another grid than the change raster
        argv[argv.index("PLACEHOLDER")] = str(corpus.probability_coarse)
    return argv


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_bad_input(case: Case, corpus: Corpus, tmp_path: Path, capfd: Any) -> None:
    out = tmp_path / "out"
    argv = _argv(case, corpus, out)
    before = digest([corpus.root])
    try:
        code = cli_main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        ran = corpus.marker.exists()
        corpus.marker.unlink(missing_ok=True)
    assert not ran, "a checkpoint ran code"
    stdout, stderr = capfd.readouterr()
    assert "Traceback" not in stdout + stderr, stderr[-3000:]
    assert code == case.code, f"exit {code}, expected {case.code}:\n{stderr[-3000:]}"
    if case.message:
        assert re.search(case.message, stderr, re.IGNORECASE), stderr[-3000:]
    if case.code != 0:
        assert f"geochange {argv[0]}: error:" in stderr, stderr[-3000:]
        for final in case.finals:
            assert not (out / final).exists(), f"{final} exists after a failed run"
    assert digest([corpus.root]) == before, "an input file changed"
    if case.check is not None:
        case.check(corpus, out)


def test_predict_into_scene_folder_keeps_reference(
    corpus: Corpus, tmp_path: Path, capfd: Any
) -> None:
    """--out-dir is the scene folder holding a reference change.tif: it is never replaced."""
    scene = copy_scene(corpus, tmp_path / "scene")
    before = digest([scene])
    code = cli_main(
        [
            "predict",
            "--checkpoint",
            str(corpus.ckpt),
            "--pre",
            str(scene / "pre.tif"),
            "--post",
            str(scene / "post.tif"),
            "--out-dir",
            str(scene),
            "--quiet",
        ]
    )
    stderr = capfd.readouterr().err
    assert code == 1 and re.search(r"overwrite", stderr, re.IGNORECASE), stderr
    assert digest([scene]) == before


PY_CASES: list[tuple[str, Callable[[Corpus, Path], Any], type[GeochangeError], str]] = [
    (
        "from_checkpoint-evil",
        lambda c, o: __import__("geochange").ChangePredictor.from_checkpoint(c.ckpt_evil),
        CheckpointError,
        r"python object|pickl",
    ),
    (
        "build_model-evil-weights",
        lambda c, o: __import__("geochange").build_model(
            "fusion_unet", in_channels=3, weights=c.weights_evil
        ),
        CheckpointError,
        r"python object|pickl",
    ),
    (
        "ChangeTrainer-evil-weights",
        lambda c, o: __import__("geochange").ChangeTrainer(
            in_channels=3, weights=str(c.weights_evil)
        ),
        CheckpointError,
        r"python object|pickl",
    ),
    (
        "predict-missing-pre",
        lambda c, o: (
            __import__("geochange")
            .ChangePredictor.from_checkpoint(c.ckpt, progress=False)
            .predict(c.missing, c.post, o)
        ),
        DataError,
        r"does_not_exist",
    ),
    (
        "vectorize-mask-7",
        lambda c, o: __import__("geochange").vectorize_changes(c.mask_7, o / "c.gpkg"),
        DataError,
        r"\b7\b",
    ),
    (
        "evaluate-reference-0-255",
        lambda c, o: __import__("geochange").evaluate_scene(c.root / "pred", c.mask_0_255),
        DataError,
        r"255",
    ),
    (
        "pseudo-missing",
        lambda c, o: __import__("geochange.pseudo", fromlist=["x"]).generate_pseudo_labels(
            c.missing, c.semantic_post, o / "p.tif"
        ),
        DataError,
        r"does_not_exist",
    ),
    (
        "datamodule-mask-7",
        lambda c, o: (
            __import__("geochange")
            .ChangeDataModule(
                pre=c.pre, post=c.post, change=c.mask_7, patch_size=64, splits=(0.5, 0.5, 0.0)
            )
            .setup("fit")
        ),
        DataError,
        r"\b7\b",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "message"), PY_CASES, ids=[c[0] for c in PY_CASES]
)
def test_python_entry_points(
    name: str,
    call: Callable[[Corpus, Path], Any],
    error: type[GeochangeError],
    message: str,
    corpus: Corpus,
    tmp_path: Path,
) -> None:
    before = digest([corpus.root])
    try:
        with pytest.raises(error, match=re.compile(message, re.IGNORECASE)):
            call(corpus, tmp_path)
    finally:
        _no_code_ran(corpus)
    assert digest([corpus.root]) == before

"""geochange.pseudo.scoring: pseudo labels scored against a reference (and the CLI report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio

from geochange.cli import main as cli_main
from geochange.errors import DataError
from geochange.pseudo import (
    ChangeScore,
    degrade_class_map,
    evaluate_pseudo_labels,
    generate_pseudo_labels,
    score_change,
)
from tests.pseudo.scenes import (
    BUILDING,
    read,
    write_raster,
)


def test_score_change_counts():
    pseudo = np.array([[1, 1, 0, 0, 255, 255, 1]], dtype=np.uint8)
    ref = np.array([[1, 0, 1, 0, 1, 0, 255]], dtype=np.uint8)
    score = score_change(pseudo, ref)
    assert score == ChangeScore(tp=1, fp=1, fn=1, tn=1, undecided_change=1, undecided_no_change=1)
    assert score.iou_change == pytest.approx(1 / 4)
    assert score.iou_change_decided == pytest.approx(1 / 3)
    assert score.coverage == pytest.approx(4 / 6)
    assert score.recall == pytest.approx(1 / 3) and score.precision == pytest.approx(1 / 2)


def test_evaluate_pseudo_labels_and_cli(tmp_path, scene_maps, capsys):
    pre, post, truth = scene_maps
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    reference = truth["appearing"].astype(np.uint8)  # the reference misses the demolition
    write_raster(tmp_path / "ref.tif", reference, class_names=None, nodata=255)
    code = cli_main(
        [
            "pseudo-labels",
            "--semantic-pre", str(tmp_path / "pre.tif"),
            "--semantic-post", str(tmp_path / "post.tif"),
            "--out", str(tmp_path / "cli.tif"),
            "--change-classes", "building",
            "--block-size", "32",
            "--reference", str(tmp_path / "ref.tif"),
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    expected_iou = truth["appearing"].sum() / (truth["appearing"] | truth["disappearing"]).sum()
    assert f"IoU^c {expected_iou:.4f}" in capsys.readouterr().out
    score = evaluate_pseudo_labels(tmp_path / "cli.tif", tmp_path / "ref.tif", block_size=16)
    assert score == score_change(read(tmp_path / "cli.tif"), reference)
    assert score.iou_change == pytest.approx(expected_iou)
    bad = cli_main(
        [
            "pseudo-labels", "--semantic-pre", str(tmp_path / "pre.tif"),
            "--semantic-post", str(tmp_path / "post.tif"), "--out", str(tmp_path / "x.tif"),
            "--change-classes", "roof", "--quiet",
        ]
    )  # fmt: skip
    assert bad == 1 and "unknown change class 'roof'" in capsys.readouterr().err
    write_raster(tmp_path / "bad_ref.tif", reference * 7, class_names=None, nodata=255)
    with pytest.raises(DataError, match="reference"):
        evaluate_pseudo_labels(tmp_path / "cli.tif", tmp_path / "bad_ref.tif")


def test_pseudo_label_references_follow_the_mask_convention(tmp_path, scene_maps, capsys):
    from geochange.io import check_change_mask

    pre, post, truth = scene_maps
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    out = tmp_path / "pseudo.tif"
    generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "post.tif", out, block_size=32)
    reference = (truth["appearing"] | truth["disappearing"]).astype(np.uint8)
    binary = write_raster(tmp_path / "ref01.tif", reference, class_names=None, nodata=255)
    levir = write_raster(tmp_path / "ref255.tif", reference * 255, class_names=None, nodata=255)
    # A 0/255 reference is neither "all nodata" (a silent IoU of 0) nor guessed.
    with pytest.raises(DataError, match=r"ref255\.tif.*0/255 mask.*mask_values=\"0,255\""):
        evaluate_pseudo_labels(out, levir)
    score = evaluate_pseudo_labels(out, levir, mask_values="0,255")
    assert score == evaluate_pseudo_labels(out, binary) and score.iou_change > 0
    # The command line refuses it before generating anything.
    cli = ["pseudo-labels", "--semantic-pre", str(tmp_path / "pre.tif")]
    cli += ["--semantic-post", str(tmp_path / "post.tif"), "--out", str(tmp_path / "cli.tif")]
    cli += ["--reference", str(levir), "--block-size", "32", "--quiet"]
    assert cli_main(cli) == 1
    assert "--mask-values 0,255" in capsys.readouterr().err
    assert not (tmp_path / "cli.tif").exists()
    assert cli_main([*cli, "--mask-values", "0,255"]) == 0
    assert f"IoU^c {score.iou_change:.4f}" in capsys.readouterr().out
    # Pseudo labels are geochange change masks: 0/1 with 255 uncertain, even without change.
    none = tmp_path / "none.tif"
    unknown = pre.copy()
    unknown[:3] = 255  # unknown class: uncertain pixels
    same = write_raster(tmp_path / "same.tif", unknown)
    generate_pseudo_labels(same, same, none, block_size=32)
    with rasterio.open(none) as ds:
        assert set(np.unique(ds.read(1))) == {0, 255}
    assert check_change_mask(none).values == "0,1"


def test_synthetic_scene_degraded_maps_unsupervised_iou(synthetic_scene, tmp_path, capsys):
    scene = synthetic_scene
    pre, post = read(scene.semantic_pre), read(scene.semantic_post)
    truth = ((pre == BUILDING) ^ (post == BUILDING)).astype(np.uint8)
    write_raster(tmp_path / "truth.tif", truth, class_names=None, nodata=255)
    degraded = dict(erosion_px=1, confusion_fraction=0.03, miss_area=80, miss_probability=0.5)
    write_raster(tmp_path / "pre.tif", degrade_class_map(pre, seed=1, **degraded).astype(np.uint8))
    write_raster(
        tmp_path / "post.tif", degrade_class_map(post, seed=2, **degraded).astype(np.uint8)
    )
    ious = {}
    for mode in ("mixed", "pixel"):
        generate_pseudo_labels(
            tmp_path / "pre.tif", tmp_path / "post.tif", tmp_path / f"{mode}.tif", mode=mode,
            block_size=300,
        )  # fmt: skip
        score = evaluate_pseudo_labels(tmp_path / f"{mode}.tif", tmp_path / "truth.tif")
        ious[mode] = score.iou_change
    with capsys.disabled():
        print(f"\nunsupervised CEG IoU^c on degraded synthetic maps: {ious}")
    assert 0.3 < ious["mixed"] < 1.0
    assert ious["mixed"] > ious["pixel"]


def test_change_score_ratios_agree_when_nothing_is_scored() -> None:
    # No change anywhere: every ratio is undefined, F1 included (it used to say 0 while the
    # IoU, precision and recall said NaN).
    empty = ChangeScore(tp=0, fp=0, fn=0, tn=10, undecided_change=0, undecided_no_change=2)
    assert all(math.isnan(v) for v in (empty.iou_change, empty.precision, empty.recall, empty.f1))
    score = ChangeScore(tp=6, fp=2, fn=1, tn=10, undecided_change=1, undecided_no_change=0)
    assert score.f1 == pytest.approx(2 * 6 / (2 * 6 + 2 + 1 + 1))
    assert score.iou_change == pytest.approx(6 / (6 + 2 + 1 + 1))

"""The pixel pass: block-size independence, geochange.metrics scores, semantic transitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geochange.evaluate import evaluate_scene
from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics
from tests.evaluate.scenes import (
    FAST,
    LSSCD,
    SIZE,
    HandScene,
    write_raster,
)


def test_block_size_does_not_change_results(hand_scene: HandScene) -> None:
    small = evaluate_scene(hand_scene.pred, hand_scene.ref, **FAST)
    large = evaluate_scene(
        hand_scene.pred, hand_scene.ref, block_size=64, vectorize_block_size=64, workers=1
    )
    assert small.pixel == large.pixel
    assert small.objects == large.objects


def test_pixel_metrics_equal_geochange_metrics(hand_scene: HandScene) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, objects=False, **FAST)
    metric = BinaryChangeMetrics(ignore_index=255)
    metric.update(
        torch.from_numpy(hand_scene.pred_array)[None], torch.from_numpy(hand_scene.ref_array)[None]
    )
    expected = {k: float(v) for k, v in metric.compute().items()}
    assert report.pixel is not None and set(report.pixel) == set(expected)
    for key, value in expected.items():
        assert report.pixel[key] == pytest.approx(value, abs=1e-12)
    assert report.objects is None
    # overview counts every TP / FP / miss pixel once
    ref, pred = hand_scene.ref_array, hand_scene.pred_array
    assert report.overview is not None
    assert int(report.overview[0].sum()) == int(((pred == 1) & (ref == 1)).sum())
    assert int(report.overview[1].sum()) == int(((pred == 1) & (ref == 0)).sum())
    assert int(report.overview[2].sum()) == int(((pred == 0) & (ref == 1)).sum())


def test_semantic_scores_transitions_and_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref_pre = rng.integers(0, 7, (SIZE, SIZE)).astype(np.uint8)
    ref_post = ref_pre.copy()
    ref_change = np.zeros((SIZE, SIZE), np.uint8)
    # new building (cropland -> building), demolished building (building -> bare land)
    ref_pre[4:12, 4:12], ref_post[4:12, 4:12] = 5, 0
    ref_pre[30:38, 40:56], ref_post[30:38, 40:56] = 0, 3
    ref_pre[50:58, 10:20], ref_post[50:58, 10:20] = 2, 4  # water -> tree, missed below
    for box in ((slice(4, 12), slice(4, 12)), (slice(30, 38), slice(40, 56))):
        ref_change[box] = 1
    ref_change[50:58, 10:20] = 1
    ref_pre[0, :] = 255  # unlabeled row
    pred_pre, pred_post = ref_pre.copy(), ref_post.copy()
    pred_pre[0, :] = 1
    pred_post[0, :] = 1
    pred_change = ref_change.copy()
    pred_change[50:58, 10:20] = 0  # the water -> tree change is missed
    pred_post[6:12, 4:12] = 6  # part of the new building predicted as "others"
    pred_change[20:26, 20:26] = 1  # false alarm: road -> water
    pred_pre[20:26, 20:26], pred_post[20:26, 20:26] = 1, 2

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    write_raster(pred_dir / "change.tif", pred_change)
    write_raster(pred_dir / "semantic_pre.tif", pred_pre, LSSCD)
    write_raster(pred_dir / "semantic_post.tif", pred_post, LSSCD)
    ref_path = write_raster(tmp_path / "ref.tif", ref_change)
    pre_path = write_raster(tmp_path / "ref_pre.tif", ref_pre, LSSCD)
    post_path = write_raster(tmp_path / "ref_post.tif", ref_post, LSSCD)

    report = evaluate_scene(
        pred_dir, ref_path, semantic_pre=pre_path, semantic_post=post_path, **FAST
    )
    metric = SemanticChangeMetrics(7, ignore_index=255)
    metric.update(
        *(
            torch.from_numpy(a)[None]
            for a in (pred_pre, pred_post, pred_change, ref_pre, ref_post, ref_change)
        )
    )
    expected = metric.compute()
    assert report.pixel is not None
    for key in ("iou_change", "f1", "precision", "recall", "oa", "kappa", "miou", "sek", "fscd"):
        assert report.pixel[key] == pytest.approx(float(expected[key]), abs=1e-12)
    assert report.semantic_iou is not None
    assert list(report.semantic_iou) == LSSCD
    assert report.semantic_iou["water"] == pytest.approx(float(expected["semantic_iou"][2]))

    # transition confusion [reference, prediction], index 0 = no change, 1 + from * 7 + to
    matrix = report.transition_confusion
    assert matrix is not None and matrix.shape == (50, 50)
    labels = report.transition_labels
    new_b, other = labels.index("cropland → building"), labels.index("cropland → others")
    assert matrix[new_b, new_b] == 2 * 8 and matrix[new_b, other] == 6 * 8
    demolished = labels.index("building → bare land")
    assert matrix[demolished, demolished] == 8 * 16
    assert matrix[labels.index("water → tree"), 0] == 80
    assert matrix[0, labels.index("road → water")] == 36
    # the unlabeled row (reference pre-date 255) only counts where unchanged
    assert int(matrix.sum()) == SIZE * SIZE

    by_type = report.objects_by_type
    assert by_type["demolished building"]["true_positives"] == 1
    assert by_type["demolished building"]["precision"] == 1.0
    assert by_type["water → tree"]["misses"] == 1
    assert by_type["water → tree"]["recall"] == 0.0
    assert by_type["road → water"]["false_positives"] == 1
    assert by_type["road → water"]["precision"] == 0.0
    # the new building is predicted as two change-type regions: "new building" (IoU 0.25, a
    # false alarm) and "cropland → others" (IoU 0.75): found, but with the wrong type
    assert by_type["new building"]["true_positives"] == 1
    assert by_type["new building"]["found_with_same_type"] == 0
    assert by_type["new building"]["false_positives"] == 1
    assert by_type["cropland → others"]["precision"] == 1.0
    assert report.objects is not None
    assert report.objects["true_positives"] == 2
    assert report.objects["type_agreement"] == pytest.approx(0.5)
    markdown = report.to_markdown()
    assert "sek" in markdown and "demolished building" in markdown
    assert "| cropland → building | cropland → others | 48 |" in markdown

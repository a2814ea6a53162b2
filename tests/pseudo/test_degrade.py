"""geochange.pseudo.degrade: the simulated segmenter and CEG on its degraded maps."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from geochange.pseudo import (
    change_event_generation,
    degrade_class_map,
    score_change,
)
from tests.pseudo.scenes import (
    BUILDING,
    building_scene,
)


def test_degrade_class_map_errors():
    rng = np.random.default_rng(3)
    pre, _ = building_scene(rng)
    untouched = degrade_class_map(pre, erosion_px=0, confusion_fraction=0, miss_area=0)
    np.testing.assert_array_equal(untouched, pre)
    eroded = degrade_class_map(pre, erosion_px=1, confusion_fraction=0, miss_area=0)
    expected = ndi.binary_erosion(pre == BUILDING, border_value=1)
    np.testing.assert_array_equal(eroded == BUILDING, expected)
    assert not np.isin(eroded[(pre == BUILDING) & ~expected], [BUILDING, 255]).any()
    missed = degrade_class_map(pre, erosion_px=0, confusion_fraction=0, miss_area=10_000,
                               miss_probability=1.0)  # fmt: skip
    assert not (missed == BUILDING).any()
    confused = degrade_class_map(pre, erosion_px=0, miss_area=0, confusion_fraction=0.05)
    changed = np.mean(confused != pre)
    assert 0.01 < changed < 0.06


def test_unsupervised_iou_on_true_and_degraded_maps():
    rng = np.random.default_rng(5)
    pre, post = building_scene(rng)
    truth = ((pre == BUILDING) ^ (post == BUILDING)).astype(np.uint8)
    assert truth.sum() > 500
    exact = change_event_generation(pre, post, change_classes=[BUILDING])
    np.testing.assert_array_equal(exact, truth)  # true maps: CEG is the true building change
    degraded = dict(erosion_px=1, confusion_fraction=0.03, miss_area=80, miss_probability=0.5)
    sem_pre = degrade_class_map(pre, seed=1, **degraded)
    sem_post = degrade_class_map(post, seed=2, **degraded)
    scores = {
        mode: score_change(
            change_event_generation(sem_pre, sem_post, change_classes=[BUILDING], mode=mode),
            truth,
        )
        for mode in ("mixed", "pixel")
    }
    for mode, score in scores.items():
        print(f"degraded maps, {mode}: IoU^c {score.iou_change:.3f}")
        assert 0.3 < score.iou_change < 1.0
    # Instance matching removes the boundary noise of pixel differencing.
    assert scores["mixed"].precision > scores["pixel"].precision
    assert scores["mixed"].iou_change > scores["pixel"].iou_change


def test_systematic_segmenter_errors():
    rng = np.random.default_rng(3)
    pre, _ = building_scene(rng)
    clean = dict(erosion_px=0, confusion_fraction=0, miss_area=0)
    buildings = pre == BUILDING
    _, count = ndi.label(buildings, structure=np.ones((3, 3)))
    # Instances of any size dropped, about the given share of them.
    dropped = degrade_class_map(pre, drop_probability=0.5, seed=1, **clean)
    kept = ndi.label(dropped == BUILDING, structure=np.ones((3, 3)))[1]
    assert 0.2 * count < kept < 0.8 * count
    assert not ((dropped == BUILDING) & ~buildings).any()
    # Grown outlines: one pixel into labelled surroundings, never over ignore pixels.
    grown = degrade_class_map(pre, dilation_px=1, **clean)
    np.testing.assert_array_equal(
        grown == BUILDING, ndi.binary_dilation(buildings) & (pre != 255) | buildings
    )
    # False building blobs on bare land only, about the requested share of it.
    bare = pre == 3
    assert bare.sum() > 1000
    false = degrade_class_map(pre, false_target_fraction=0.2, seed=2, **clean)
    new = (false == BUILDING) & ~buildings
    assert not (new & ~bare).any()
    assert 0.15 < new.sum() / bare.sum() < 0.25
    # The whole map displaced by (rows, cols).
    shifted = degrade_class_map(pre, shift_px=(2, -3), **clean)
    np.testing.assert_array_equal(shifted[2:, :-3], pre[:-2, 3:])
    # The defaults are untouched by the new arguments (same map as before for a seed).
    mild = degrade_class_map(pre, seed=4)
    np.testing.assert_array_equal(mild, degrade_class_map(pre, seed=4, drop_probability=0.0))

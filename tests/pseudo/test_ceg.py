"""geochange.pseudo.ceg: change event generation on arrays (pixel, instance, mixed; batches)."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.errors import ConfigurationError, DataError
from geochange.pseudo import (
    change_event_generation,
    change_event_generation_batch,
)
from tests.builders import SHARED_DATA
from tests.pseudo.scenes import (
    BUILDING,
    OTHERS,
    ROAD,
)


@pytest.mark.parametrize("mode", ["mixed", "instance"])
def test_ceg_appearing_disappearing_and_shifted_building(scene_maps, mode):
    pre, post, truth = scene_maps
    labels = change_event_generation(pre, post, change_classes=[BUILDING], mode=mode)
    assert labels.dtype == np.uint8 and labels.shape == pre.shape
    expected = (truth["appearing"] | truth["disappearing"]).astype(np.uint8)
    # Exactly the two events; the shifted building and the road -> cropland give no change.
    np.testing.assert_array_equal(labels, expected)


def test_pixel_mode_keeps_boundary_noise_of_the_shifted_building(scene_maps):
    pre, post, truth = scene_maps
    labels = change_event_generation(pre, post, change_classes=[BUILDING], mode="pixel")
    shifted = np.zeros(pre.shape, bool)
    shifted[20:32, 30:47] = True
    noise = labels.astype(bool) & shifted
    # 2 px shift of a 10 x 15 building: the symmetric difference (two L-shaped strips).
    pre_b, post_b = pre == BUILDING, post == BUILDING
    assert noise.sum() == np.count_nonzero((pre_b ^ post_b) & shifted) == 2 * (150 - 8 * 13)
    assert labels[truth["appearing"]].all() and labels[truth["disappearing"]].all()


def test_change_classes_select_the_class_of_interest(scene_maps):
    pre, post, _ = scene_maps
    labels = change_event_generation(pre, post, change_classes=[ROAD], mode="mixed")
    road_lost = np.zeros(pre.shape, bool)
    road_lost[50:60, 70:90] = True
    np.testing.assert_array_equal(labels, road_lost.astype(np.uint8))


def test_overlap_threshold_turns_extensions_into_events():
    pre = np.full((40, 40), OTHERS, dtype=np.int64)
    post = pre.copy()
    pre[10:20, 10:20] = BUILDING  # 100 px
    post[10:20, 10:30] = BUILDING  # extended to 200 px: IoU 0.5
    extension = np.zeros(pre.shape, bool)
    extension[10:20, 20:30] = True
    strict = change_event_generation(pre, post, change_classes=[BUILDING])
    assert not strict.any()  # IoU 0.5 > 0.0: the same building, no event
    mixed = change_event_generation(pre, post, change_classes=[BUILDING], overlap_threshold=0.6)
    np.testing.assert_array_equal(mixed, extension.astype(np.uint8))
    instance = change_event_generation(
        pre, post, change_classes=[BUILDING], mode="instance", overlap_threshold=0.6
    )
    # Instance mode marks both whole instances.
    np.testing.assert_array_equal(instance, (post == BUILDING).astype(np.uint8))
    at_iou = change_event_generation(pre, post, change_classes=[BUILDING], overlap_threshold=0.5)
    np.testing.assert_array_equal(at_iou, extension.astype(np.uint8))  # IoU <= threshold


def test_uncertain_pixels_are_ignored(scene_maps):
    pre, post, truth = scene_maps
    pre = pre.copy()
    pre[0:3, :] = 255  # unlabelled at the first date
    prob_post = np.full((7, *pre.shape), 0.1, dtype=np.float32)
    prob_post[0] = 0.9
    prob_post[0, 8:10, 5:20] = 0.5  # low confidence on part of the new building
    labels = change_event_generation(
        pre, post, change_classes=[BUILDING], prob_post=prob_post, confidence=0.8
    )
    assert (labels[0:3] == 255).all()
    assert (labels[8:10, 5:20] == 255).all()
    expected = (truth["appearing"] | truth["disappearing"]).astype(np.uint8)
    expected[0:3] = 255
    expected[8:10, 5:20] = 255
    np.testing.assert_array_equal(labels, expected)
    # uint8 probabilities (0..255) and [H, W] confidences give the same labels.
    as_uint8 = change_event_generation(
        pre, post, change_classes=[BUILDING], prob_post=(prob_post * 255).round().astype(np.uint8)
    )
    as_conf = change_event_generation(
        pre, post, change_classes=[BUILDING], prob_post=prob_post.max(axis=0)
    )
    np.testing.assert_array_equal(as_uint8, labels)
    np.testing.assert_array_equal(as_conf, labels)


def test_small_instances_are_noise():
    pre = np.full((40, 40), OTHERS, dtype=np.uint8)
    post = pre.copy()
    post[2:4, 2:4] = BUILDING  # 4 px speck appearing
    post[20:30, 20:30] = BUILDING  # real new building ...
    pre[20:22, 20:22] = BUILDING  # ... where a 4 px speck was misclassified before
    labels = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_pixels=10)
    assert (labels[2:4, 2:4] == 255).all()  # too small to tell: ignored, not "no change"
    big = np.zeros(pre.shape, bool)
    big[20:30, 20:30] = True
    assert (labels[big] == 1).sum() == 96  # the event minus the 4 px that stayed building
    assert (labels[20:22, 20:22] == 0).all()
    assert (labels[~big & (labels != 255)] == 0).all()
    # Without the noise filter the speck blocks the event and is itself an event.
    raw = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_pixels=0)
    assert (raw[2:4, 2:4] == 1).all() and not raw[big].any()


def test_connectivity_decides_diagonal_instances():
    pre = np.full((10, 10), OTHERS, dtype=np.uint8)
    post = pre.copy()
    pre[2:5, 2:5] = BUILDING
    post[5:8, 5:8] = BUILDING  # touches the pre building only diagonally
    post[2:5, 2:5] = BUILDING
    # 8-connected: one post instance overlapping the pre one -> no event.
    eight = change_event_generation(
        pre, post, change_classes=[BUILDING], connectivity=8, min_instance_pixels=0
    )
    four = change_event_generation(
        pre, post, change_classes=[BUILDING], connectivity=4, min_instance_pixels=0
    )
    assert not eight[5:8, 5:8].any()
    assert four[5:8, 5:8].all() and four[5:8, 5:8].sum() == 9


def test_batch_helper_numpy_and_torch(scene_maps):
    torch = pytest.importorskip("torch")
    pre, post, _ = scene_maps
    batch_pre = np.stack([pre, post, pre])
    batch_post = np.stack([post, pre, pre])
    out = change_event_generation_batch(batch_pre, batch_post, change_classes=[BUILDING])
    assert out.shape == (3, *pre.shape) and out.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(
            out[i], change_event_generation(batch_pre[i], batch_post[i], change_classes=[0])
        )
    assert not out[2].any()
    probs = torch.rand(3, 7, *pre.shape)
    tensor_out = change_event_generation_batch(
        torch.from_numpy(batch_pre).long(),
        torch.from_numpy(batch_post).long(),
        change_classes=[BUILDING],
        prob_pre=probs,
        confidence=0.5,
    )
    assert tensor_out.dtype == torch.long and tensor_out.shape == (3, *pre.shape)
    expected = change_event_generation(
        batch_pre[1], batch_post[1], change_classes=[0], prob_pre=probs[1].numpy(), confidence=0.5
    )
    np.testing.assert_array_equal(tensor_out[1].numpy(), expected)


def test_bad_inputs_raise_clear_errors(scene_maps):
    pre, post, _ = scene_maps
    with pytest.raises(DataError, match="shape"):
        change_event_generation(pre, post[:10], change_classes=[0])
    with pytest.raises(DataError, match="2-D integer"):
        change_event_generation(pre.astype(float), post, change_classes=[0])
    with pytest.raises(DataError, match=r"\[K, H, W\]"):
        change_event_generation(pre, post, change_classes=[0], prob_pre=np.ones((3, 5, 5)))
    with pytest.raises(ConfigurationError, match="mode"):
        change_event_generation(pre, post, change_classes=[0], mode="object")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="empty"):
        change_event_generation(pre, post, change_classes=[])
    with pytest.raises(ConfigurationError, match="overlap_threshold"):
        change_event_generation(pre, post, change_classes=[0], overlap_threshold=1.0)
    with pytest.raises(DataError, match=r"\[B, H, W\]"):
        change_event_generation_batch(pre, post, change_classes=[0])


# --------------------------------------------------------------------------------------------
# Real building shapes (LEVIR-CD change labels are new buildings)
# --------------------------------------------------------------------------------------------


def levir_buildings() -> list[np.ndarray]:
    from PIL import Image

    folder = SHARED_DATA / "levircd-samples" / "label"
    if not folder.is_dir():
        pytest.skip(f"shared LEVIR-CD samples not found at {folder}")
    masks = [np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))]
    return [m for m in masks if m.sum() > 500][:3]


def test_real_building_shapes_events_and_registration_shift():
    for buildings in levir_buildings():
        sem_post = np.where(buildings, BUILDING, OTHERS).astype(np.uint8)
        sem_pre = np.full_like(sem_post, OTHERS)
        # All buildings are new: CEG reproduces the change label exactly.
        labels = change_event_generation(
            sem_pre, sem_post, change_classes=[0], min_instance_pixels=0
        )
        np.testing.assert_array_equal(labels, buildings.astype(np.uint8))
        # The same buildings seen 2 px shifted at the first date (registration error): every
        # building overlaps its shifted self, so mixed CEG finds no change at all while pixel
        # differencing reports the symmetric difference along every building edge.
        shifted_pre = np.full_like(sem_post, OTHERS)
        shifted_pre[2:, 2:] = sem_post[:-2, :-2]
        mixed = change_event_generation(shifted_pre, sem_post, change_classes=[0])
        pixel = change_event_generation(shifted_pre, sem_post, change_classes=[0], mode="pixel")
        assert not mixed.any()
        edges = (shifted_pre == BUILDING) ^ buildings
        np.testing.assert_array_equal(pixel, edges.astype(np.uint8))
        assert edges.sum() > 0.05 * buildings.sum()


# --------------------------------------------------------------------------------------------
# Glossary rename: min_instance_area -> min_instance_pixels (one release)
# --------------------------------------------------------------------------------------------


def test_min_instance_area_still_works_with_a_deprecation_warning():
    pre = np.full((20, 20), OTHERS, dtype=np.uint8)
    post = pre.copy()
    post[2:4, 2:4] = BUILDING  # 4 px
    post[10:16, 10:16] = BUILDING  # 36 px
    new = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_pixels=5)
    with pytest.warns(DeprecationWarning, match="min_instance_pixels") as caught:
        old = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_area=5)
    assert caught[0].filename == __file__  # the warning names the caller's line
    np.testing.assert_array_equal(old, new)
    assert new[2:4, 2:4].tolist() == [[255, 255], [255, 255]] and new[10:16, 10:16].all()
    batch = (pre[None], post[None])
    with pytest.warns(DeprecationWarning, match="min_instance_pixels") as caught:
        old_batch = change_event_generation_batch(*batch, change_classes=[0], min_instance_area=5)
    assert len(caught) == 1 and caught[0].filename == __file__
    np.testing.assert_array_equal(old_batch[0], new)
    with pytest.raises(ConfigurationError, match="disagree"):
        change_event_generation(
            pre, post, change_classes=[0], min_instance_pixels=3, min_instance_area=5
        )
    with pytest.raises(ConfigurationError, match="min_instance_pixels must be >= 0"):
        change_event_generation(pre, post, change_classes=[0], min_instance_pixels=-1)

"""Tests of geochange.pseudo: change event generation (CEG) and the block-wise scene tool."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rasterio
import scipy.ndimage as ndi
from affine import Affine

from geochange.cli import main as cli_main
from geochange.errors import ConfigurationError, DataError
from geochange.pseudo import (
    ChangeScore,
    change_event_generation,
    change_event_generation_batch,
    degrade_class_map,
    evaluate_pseudo_labels,
    generate_pseudo_labels,
    resolve_change_classes,
    score_change,
)
from tests import builders

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
CRS = "EPSG:32650"
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)
CLASSES = ["building", "road", "water", "bare land", "tree", "cropland", "others"]
BUILDING, ROAD, TREE, OTHERS = 0, 1, 4, 6


# Class maps on this module's grid, tagged with the LsSCD class names unless told otherwise.
write_raster = partial(builders.write_raster, crs=CRS, transform=TRANSFORM, class_names=CLASSES)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.fixture
def scene_maps() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Hand-built 64 x 96 maps: one appearing, one disappearing, one shifted building."""
    pre = np.full((64, 96), OTHERS, dtype=np.uint8)
    post = pre.copy()
    pre[:, 60:64] = ROAD
    post[:, 60:64] = ROAD
    appearing = np.zeros(pre.shape, bool)
    appearing[5:15, 5:20] = True
    post[appearing] = BUILDING
    disappearing = np.zeros(pre.shape, bool)
    disappearing[30:40, 5:15] = True
    pre[disappearing] = BUILDING
    post[disappearing] = TREE  # demolished, trees planted
    # The same building seen 2 px shifted (registration error / boundary noise): not a change.
    pre[20:30, 30:45] = BUILDING
    post[22:32, 32:47] = BUILDING
    # A road that became cropland is no building change.
    pre[50:60, 70:90] = ROAD
    post[50:60, 70:90] = 5
    return pre, post, {"appearing": appearing, "disappearing": disappearing}


# --------------------------------------------------------------------------------------------
# In-memory CEG on hand-built maps
# --------------------------------------------------------------------------------------------


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
    labels = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_area=10)
    assert (labels[2:4, 2:4] == 255).all()  # too small to tell: ignored, not "no change"
    big = np.zeros(pre.shape, bool)
    big[20:30, 20:30] = True
    assert (labels[big] == 1).sum() == 96  # the event minus the 4 px that stayed building
    assert (labels[20:22, 20:22] == 0).all()
    assert (labels[~big & (labels != 255)] == 0).all()
    # Without the noise filter the speck blocks the event and is itself an event.
    raw = change_event_generation(pre, post, change_classes=[BUILDING], min_instance_area=0)
    assert (raw[2:4, 2:4] == 1).all() and not raw[big].any()


def test_connectivity_decides_diagonal_instances():
    pre = np.full((10, 10), OTHERS, dtype=np.uint8)
    post = pre.copy()
    pre[2:5, 2:5] = BUILDING
    post[5:8, 5:8] = BUILDING  # touches the pre building only diagonally
    post[2:5, 2:5] = BUILDING
    # 8-connected: one post instance overlapping the pre one -> no event.
    eight = change_event_generation(
        pre, post, change_classes=[BUILDING], connectivity=8, min_instance_area=0
    )
    four = change_event_generation(
        pre, post, change_classes=[BUILDING], connectivity=4, min_instance_area=0
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


def test_resolve_change_classes():
    assert resolve_change_classes("building, water", CLASSES) == (0, 2)
    assert resolve_change_classes(["Bare Land", 0, "4"], CLASSES) == (0, 3, 4)
    with pytest.raises(ConfigurationError, match="roof"):
        resolve_change_classes("roof", CLASSES)


# --------------------------------------------------------------------------------------------
# Whole-scene block-wise tool
# --------------------------------------------------------------------------------------------


def random_class_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blobby class map (smoothed noise, 4 classes) with a few unknown pixels."""
    noise = ndi.gaussian_filter(rng.normal(size=shape), 2.5)
    classes = np.digitize(noise, np.quantile(noise, [0.35, 0.55, 0.75])).astype(np.uint8)
    classes[rng.random(shape) < 0.005] = 255
    return classes


@pytest.mark.parametrize(
    ("mode", "connectivity", "threshold", "classes"),
    [
        ("mixed", 8, 0.0, [0]),
        ("instance", 4, 0.0, [0, 2]),
        ("mixed", 4, 0.3, [0, 2]),
        ("instance", 8, 0.25, [2]),
        ("pixel", 8, 0.0, [0, 2]),
    ],
)
def test_blockwise_equals_whole_array(tmp_path, mode, connectivity, threshold, classes):
    rng = np.random.default_rng(7)
    pre = random_class_map(rng, (150, 130))
    post = random_class_map(rng, (150, 130))
    post[:70] = np.where(rng.random((70, 130)) < 0.97, pre[:70], post[:70])  # mostly stable
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    kwargs = dict(
        change_classes=classes,
        mode=mode,
        connectivity=connectivity,
        overlap_threshold=threshold,
        min_instance_area=15,
    )
    expected = change_event_generation(pre, post, **kwargs)
    assert expected.any() and (expected == 0).any()
    for block in (16, 37, 64, 512):  # 16 and 37 cut most instances several times
        summary = generate_pseudo_labels(
            tmp_path / "pre.tif", tmp_path / "post.tif", tmp_path / "out.tif",
            block_size=block, **kwargs,
        )  # fmt: skip
        np.testing.assert_array_equal(read(tmp_path / "out.tif"), expected, err_msg=f"{block=}")
        assert summary.change_pixels == np.count_nonzero(expected == 1)
        assert summary.ignored_pixels == np.count_nonzero(expected == 255)


def test_instance_crossing_block_edges(tmp_path):
    pre = np.full((64, 64), OTHERS, dtype=np.uint8)
    post = pre.copy()
    # An extended building: only inside the left block before, across the seam at x=32 after.
    # Per block, its right-hand piece overlaps nothing; over the scene it overlaps (IoU 12/26).
    pre[4:12, 20:32] = BUILDING
    post[4:12, 20:46] = BUILDING
    # A new building over the corner of four blocks.
    post[26:40, 26:40] = BUILDING
    # A demolished building that only touches the next block diagonally (8-connectivity).
    pre[44:50, 26:32] = BUILDING
    pre[50:53, 32:35] = BUILDING
    pre[52, 32] = OTHERS
    pre[50, 32] = BUILDING
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    out = tmp_path / "pseudo.tif"
    summary = generate_pseudo_labels(
        tmp_path / "pre.tif", tmp_path / "post.tif", out, change_classes="building", block_size=32
    )
    labels = read(out)
    np.testing.assert_array_equal(
        labels, change_event_generation(pre, post, change_classes=[BUILDING])
    )
    assert not labels[4:12].any()  # the extended building is no event
    assert labels[26:40, 26:40].all()
    assert labels[44:53].sum() == np.count_nonzero(pre[44:53] == BUILDING)
    assert (summary.instances_pre, summary.instances_post, summary.change_events) == (2, 2, 2)


def test_scene_output_is_a_georeferenced_label_cog(tmp_path, scene_maps):
    pre, post, truth = scene_maps
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    prob = np.full((7, *pre.shape), 30, dtype=np.uint8)
    prob[0] = 250
    prob[0, 0:2] = 100  # 100/255 < 0.8
    write_raster(tmp_path / "prob.tif", prob, class_names=None)
    out = tmp_path / "sub" / "pseudo.tif"
    generate_pseudo_labels(
        pre_path, post_path, out, change_classes="building", prob_pre=tmp_path / "prob.tif",
        block_size=32,
    )  # fmt: skip
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8" and ds.count == 1 and ds.nodata == 255
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        params = json.loads(ds.tags()["GEOCHANGE_PSEUDO_LABELS"])
        assert params["mode"] == "mixed" and params["change_class_names"] == ["building"]
        labels = ds.read(1)
    expected = (truth["appearing"] | truth["disappearing"]).astype(np.uint8)
    expected[0:2] = 255
    np.testing.assert_array_equal(labels, expected)
    assert sorted(p.name for p in out.parent.iterdir()) == ["pseudo.tif"]  # no temp leftovers


def test_class_raster_nodata_is_unknown(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    pre = pre.copy()
    pre[:, :4] = 7
    write_raster(tmp_path / "pre.tif", pre, nodata=7)
    write_raster(tmp_path / "post.tif", post)
    generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "post.tif", tmp_path / "o.tif")
    assert (read(tmp_path / "o.tif")[:, :4] == 255).all()


def test_scene_errors_before_work(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    write_raster(tmp_path / "pre.tif", pre)
    shifted = TRANSFORM @ Affine.translation(10, 0)
    write_raster(tmp_path / "moved.tif", post, transform=shifted)
    write_raster(tmp_path / "float.tif", post.astype(np.float32))
    write_raster(tmp_path / "names.tif", post, class_names=["roof", *CLASSES[1:]])
    write_raster(tmp_path / "post.tif", post)
    out = tmp_path / "o.tif"
    with pytest.raises(DataError, match="grid"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "moved.tif", out)
    with pytest.raises(DataError, match="integer class ids"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "float.tif", out)
    with pytest.raises(DataError, match="name their classes differently"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "names.tif", out)
    with pytest.raises(DataError, match="not found"):
        generate_pseudo_labels(tmp_path / "missing.tif", tmp_path / "post.tif", out)
    with pytest.raises(ConfigurationError, match="unknown change class"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "post.tif", out, change_classes="x")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Unsupervised mode: scoring
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Degraded maps (simulated segmenter): unsupervised IoU^c
# --------------------------------------------------------------------------------------------


def building_scene(rng: np.random.Generator, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Land cover with separated rectangular buildings; some demolished, some new."""
    noise = ndi.gaussian_filter(rng.normal(size=(size, size)), 8)
    land = np.array([TREE, 5, 3, OTHERS], dtype=np.uint8)[
        np.digitize(noise, np.quantile(noise, [0.25, 0.5, 0.75]))
    ]
    pre, post = land.copy(), land.copy()
    for r in range(4, size - 24, 24):
        for c in range(4, size - 24, 24):
            h, w = rng.integers(4, 20, 2)
            fate = rng.random()
            if fate < 0.2:
                pre[r : r + h, c : c + w] = BUILDING
                post[r : r + h, c : c + w] = 3  # demolished: bare land
            elif fate < 0.4:
                post[r : r + h, c : c + w] = BUILDING
            else:
                pre[r : r + h, c : c + w] = BUILDING
                post[r : r + h, c : c + w] = BUILDING
    return pre, post


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


# --------------------------------------------------------------------------------------------
# Real building shapes (LEVIR-CD change labels are new buildings)
# --------------------------------------------------------------------------------------------


def levir_buildings() -> list[np.ndarray]:
    from PIL import Image

    folder = DATA / "levircd-samples" / "label"
    if not folder.is_dir():
        pytest.skip(f"shared LEVIR-CD samples not found at {folder}")
    masks = [np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))]
    return [m for m in masks if m.sum() > 500][:3]


def test_real_building_shapes_events_and_registration_shift():
    for buildings in levir_buildings():
        sem_post = np.where(buildings, BUILDING, OTHERS).astype(np.uint8)
        sem_pre = np.full_like(sem_post, OTHERS)
        # All buildings are new: CEG reproduces the change label exactly.
        labels = change_event_generation(sem_pre, sem_post, change_classes=[0], min_instance_area=0)
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
# Synthetic georeferenced scene (geochange.synthetic)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_scene(tmp_path_factory):
    synthetic = pytest.importorskip("geochange.synthetic")
    # 1024^2, seed 0: ten new buildings and a demolished one among hundreds of stable ones.
    return synthetic.make_scene(tmp_path_factory.mktemp("scene"), 1024, 1024, seed=0)


def test_synthetic_scene_true_maps_give_true_building_change(synthetic_scene, tmp_path):
    scene = synthetic_scene
    pre, post = read(scene.semantic_pre), read(scene.semantic_post)
    truth = ((pre == BUILDING) ^ (post == BUILDING)).astype(np.uint8)
    assert truth.sum() > 1000
    out = tmp_path / "pseudo.tif"
    # Names from the scene's GEOCHANGE_CLASS_NAMES tag; 256 px blocks cut buildings.
    summary = generate_pseudo_labels(
        scene.semantic_pre, scene.semantic_post, out, change_classes="building", block_size=256
    )
    np.testing.assert_array_equal(read(out), truth)
    stats = scene.stats
    assert summary.change_events == stats["new_buildings"] + stats["demolished_buildings"]
    with rasterio.open(out) as ds, rasterio.open(scene.change) as ref:
        assert ds.crs == ref.crs and ds.transform == ref.transform
        # Building change is part of the scene's change raster (which has all class changes).
        assert (ref.read(1)[truth == 1] == 1).all()


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

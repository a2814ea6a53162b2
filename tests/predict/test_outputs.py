"""Products (geochange.predict.outputs): georeferenced COGs, class tables, transition codes."""

from __future__ import annotations

import json

import numpy as np
import rasterio

from tests.builders import TinyConvChange, whole_image
from tests.predict.helpers import BINARY_OUTPUT_FILES, exact_predictor, read


def test_outputs_are_georeferenced_cogs(scene_pair) -> None:
    pre_path, post_path, _, _ = scene_pair
    result = exact_predictor(TinyConvChange(), probability_dtype="uint8").predict(
        pre_path, post_path, pre_path.parent / "out"
    )
    with rasterio.open(pre_path) as src:
        crs, transform, bounds = src.crs, src.transform, src.bounds
    for path in (result.change, result.probability):
        assert path is not None and path.exists()
        with rasterio.open(path) as ds:
            assert ds.crs == crs and ds.transform == transform and ds.bounds == bounds
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255
            assert ds.profile["tiled"] and ds.compression is not None
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    change = read(result.change)
    assert set(np.unique(change)) <= {0, 1}
    probability = read(result.probability)
    assert probability.max() <= 254
    np.testing.assert_array_equal(change == 1, probability >= 127)
    # Nothing but the final files is left behind.
    assert sorted(p.name for p in (pre_path.parent / "out").iterdir()) == BINARY_OUTPUT_FILES
    assert result.crs == crs and result.transform == transform


def test_semantic_outputs_class_tables_and_transitions(scene_pair) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    names = ["building", "road", "water"]
    result = exact_predictor(model, class_names=names).predict(
        pre_path, post_path, pre_path.parent / "sem"
    )
    _, pre_ref, post_ref = whole_image(model, pre, post)
    assert result.class_names == names
    semantic_pre, semantic_post = read(result.semantic_pre), read(result.semantic_post)
    # argmax of blended probabilities == argmax of whole-image logits (up to float ties)
    assert (semantic_pre == pre_ref).mean() > 0.999
    assert (semantic_post == post_ref).mean() > 0.999
    change, transition = read(result.change), read(result.transition)
    changed = change == 1
    np.testing.assert_array_equal(
        transition[changed], semantic_pre[changed] * 3 + semantic_post[changed]
    )
    assert np.all(transition[~changed] == 254)
    for path in (result.semantic_pre, result.semantic_post, result.transition):
        with rasterio.open(path) as ds:
            assert json.loads(ds.tags()["GEOCHANGE_CLASS_NAMES"]) == names
            colormap = ds.colormap(1)
            assert colormap[0][:3] != colormap[1][:3]
    with rasterio.open(result.transition) as ds:
        table = json.loads(ds.tags()["GEOCHANGE_TRANSITION_NAMES"])
        assert table["5"] == "road -> water" and table["254"] == "no change"

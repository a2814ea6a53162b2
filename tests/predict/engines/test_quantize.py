"""int8 (geochange.predict.engines.quantize): calibration on the scene, the agreement check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import geochange.predict.engines.quantize as quantize
from geochange.errors import QuantizationError
from geochange.predict.engines.quantize import binary_agreement, sample_indices, split_tiles
from tests.builders import TinyConvBNChange, whole_image
from tests.predict.engines.conftest import _installed
from tests.predict.engines.test_engines import predictor
from tests.predict.helpers import read

needs_nncf = pytest.mark.skipif(not _installed("openvino", "nncf", "onnx"), reason="no nncf")


def test_binary_agreement_counts_identical_change_pixels() -> None:
    a = np.array([[[[0.1, 0.6], [0.4, 0.9]]]], np.float32)  # [1, 1, 2, 2]
    b = np.array([[[[0.2, 0.4], [0.45, 0.51]]]], np.float32)
    assert binary_agreement(a, b) == 0.75
    assert binary_agreement(a, b, threshold=0.95) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        binary_agreement(a, b[..., :1])


def test_held_out_tiles_are_whole_batches_apart_from_calibration() -> None:
    tiles = np.arange(32, dtype=np.float32).reshape(32, 1)
    calibration, held = split_tiles(tiles, 4)
    assert len(calibration) == 24 and len(held) == 8
    assert not set(calibration[:, 0]) & set(held[:, 0])
    with pytest.raises(QuantizationError, match="at least 8 valid tiles"):
        split_tiles(tiles[:7], 4)
    assert sample_indices(3, 10) == [0, 4, 9] and sample_indices(5, 3) == [0, 1, 2]


@needs_nncf
def test_int8_predicts_after_the_check_on_the_scene(
    scene_pair, tmp_path: Path, monkeypatch
) -> None:
    pre_path, post_path, pre, post = scene_pair
    # This 2-conv random net keeps ~99.3 % at int8 (measured): below the real bar, which is
    # judged on trained checkpoints (docs/prediction.md); here the mechanism is under test.
    monkeypatch.setattr(quantize, "MIN_INT8_AGREEMENT", 0.98)
    model = TinyConvBNChange()
    with torch.no_grad():  # confident logits, as a trained model's (few pixels near 0.5)
        model.conv2.weight *= 8
    p = predictor(model, "openvino", precision="int8", batch_size=2, calibration_tiles=20)
    result = p.predict(pre_path, post_path, tmp_path / "int8")
    reference, _, _ = whole_image(model, pre, post)
    assert np.mean(read(result.change) == (reference >= 0.5)) >= 0.98
    assert np.abs(read(result.probability) - reference).mean() < 0.02  # int8, not exact
    entry = next(iter(p._inferencer.engine.entries.values()))
    meta = quantize.read_meta(p._inferencer.engine.cache_dir / entry)
    assert meta["held_out_tiles"] == 4 and meta["calibration_tiles"] == 16
    assert 0.98 <= meta["agreement"] <= 1.0


@needs_nncf
def test_int8_is_refused_before_any_output_when_agreement_is_too_low(
    scene_pair, tmp_path: Path, monkeypatch
) -> None:
    pre_path, post_path, _, _ = scene_pair
    monkeypatch.setattr(quantize, "MIN_INT8_AGREEMENT", 1.01)  # nothing passes
    p = predictor(TinyConvBNChange(), "openvino", precision="int8", batch_size=2)
    with pytest.raises(QuantizationError, match=r"int8 keeps .*% of binary change pixels"):
        p.predict(pre_path, post_path, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

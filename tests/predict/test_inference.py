"""The model runner (geochange.predict.inference): BatchNorm folding keeps the mosaic exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.builders import TinyConvBNChange, whole_image
from tests.predict.helpers import exact_predictor, read


@pytest.mark.parametrize("fold", [True, False])
def test_batchnorm_folding_keeps_the_mosaic_exact(scene_pair, fold: bool) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvBNChange()
    predictor = exact_predictor(model, fold_batchnorm=fold)
    result = predictor.predict(pre_path, post_path, pre_path.parent / f"out_fold_{fold}")
    # The reference is the unfolded model, run once on the whole scene.
    reference, _, _ = whole_image(model, pre, post)
    np.testing.assert_allclose(read(result.probability), reference, atol=1e-5, rtol=0)
    assert predictor._inferencer.folded_batchnorms == (1 if fold else 0)
    assert isinstance(model.bn, torch.nn.BatchNorm2d)  # the caller's model is not modified

"""Tests of geochange.metrics on hand-computed matrices and real LEVIR-CD crops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geochange.errors import DataError
from geochange.metrics import (
    BinaryChangeMetrics,
    SemanticChangeMetrics,
    scd_scores_from_confusion,
)

LEVIR = Path(__file__).parents[1] / ".." / "shared" / "data" / "levircd-samples"


def test_binary_hand_computed() -> None:
    # target/pred pairs: TP=3, FP=1, FN=2, TN=4, plus two ignored pixels.
    target = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 255, 255]])
    pred = torch.tensor([[1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0]])
    metric = BinaryChangeMetrics()
    metric.update(pred[:, :6].reshape(1, 2, 3), target[:, :6].reshape(1, 2, 3))
    metric.update(pred[:, 6:].reshape(1, 2, 3), target[:, 6:].reshape(1, 2, 3))
    scores = metric.compute()
    assert set(scores) == {"iou_change", "f1", "precision", "recall", "oa", "kappa"}
    assert float(scores["iou_change"]) == pytest.approx(3 / 6)
    assert float(scores["precision"]) == pytest.approx(3 / 4)
    assert float(scores["recall"]) == pytest.approx(3 / 5)
    assert float(scores["f1"]) == pytest.approx(2 * 0.75 * 0.6 / (0.75 + 0.6))
    assert float(scores["oa"]) == pytest.approx(7 / 10)
    po = 0.7
    pe = (4 / 10) * (5 / 10) + (6 / 10) * (5 / 10)  # pred-change 4, ref-change 5 of 10
    assert float(scores["kappa"]) == pytest.approx((po - pe) / (1 - pe))


def test_binary_empty_denominators_are_zero() -> None:
    metric = BinaryChangeMetrics()
    metric.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long))
    scores = metric.compute()
    assert float(scores["precision"]) == 0.0
    assert float(scores["iou_change"]) == 0.0
    assert float(scores["oa"]) == 1.0


def test_binary_rejects_bad_input() -> None:
    metric = BinaryChangeMetrics()
    with pytest.raises(DataError, match="shape"):
        metric.update(
            torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long)
        )
    with pytest.raises(DataError, match="value 2"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 2))
    with pytest.raises(DataError, match="integer"):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_scd_confusion_hand_computed() -> None:
    # 3x3 (K = 2) SCD matrix [target, pred] built by hand.
    confusion = torch.tensor([[50, 5, 5], [4, 10, 2], [6, 3, 15]])
    scores = scd_scores_from_confusion(confusion)
    # Merged 2x2: [[50, 10], [10, 30]] -> IoU_nc = 50/70, IoU_c = 30/50.
    assert float(scores["miou"]) == pytest.approx((50 / 70 + 30 / 50) / 2)
    # Kappa with (0,0) zeroed: total 50, observed (10 + 15)/50.
    rows = np.array([10, 16, 24])
    cols = np.array([10, 18, 22])
    po, pe = 25 / 50, float((rows * cols).sum()) / 50**2
    expected_sek = (po - pe) / (1 - pe) * math.exp(30 / 50) / math.e
    assert float(scores["sek"]) == pytest.approx(expected_sek)
    precision, recall = 25 / (18 + 22), 25 / (16 + 24)
    assert float(scores["fscd"]) == pytest.approx(2 * precision * recall / (precision + recall))


def test_semantic_metric_follows_second_definition() -> None:
    # One 2x3 image, K = 3.
    t_change = torch.tensor([[[1, 1, 0], [0, 1, 255]]])
    p_change = torch.tensor([[[1, 0, 0], [1, 1, 1]]])
    t_pre = torch.tensor([[[0, 1, 2], [2, 0, 1]]])
    t_post = torch.tensor([[[1, 2, 2], [2, 255, 1]]])
    p_pre = torch.tensor([[[0, 1, 0], [2, 1, 1]]])
    p_post = torch.tensor([[[2, 2, 2], [1, 0, 0]]])
    metric = SemanticChangeMetrics(num_classes=3)
    metric.update(p_pre, p_post, p_change, t_pre, t_post, t_change)
    scores = metric.compute()
    # Hand-built SCD matrix [target, pred] with labels 0 = unchanged, k + 1 = class k.
    expected = np.zeros((4, 4), dtype=int)
    entries = [
        # pre date: px0 t=0+1 p=0+1; px1 t=1+1 p=0 (pred unchanged); px2 t=0 p=0;
        # px3 t=0 p=2+1; px4 t=0+1 p=1+1; px5 ignored
        (1, 1), (2, 0), (0, 0), (0, 3), (1, 2),
        # post date: px0 t=1+1 p=2+1; px1 t=2+1 p=0; px2 0/0; px3 t=0 p=1+1; px4 ignored
        (2, 3), (3, 0), (0, 0), (0, 2),
    ]  # fmt: skip
    for t, p in entries:
        expected[t, p] += 1
    reference = scd_scores_from_confusion(torch.from_numpy(expected))
    for key in ("miou", "sek", "fscd"):
        assert float(scores[key]) == pytest.approx(float(reference[key])), key
    # Binary part: target [1,1,0,0,1], pred [1,0,0,1,1] -> TP 2, FN 1, FP 1, TN 1.
    assert float(scores["iou_change"]) == pytest.approx(2 / 4)
    assert float(scores["oa"]) == pytest.approx(3 / 5)
    # Semantic IoU over all valid reference labels of both dates.
    t_all = np.concatenate([t_pre.numpy().ravel(), t_post.numpy().ravel()])
    p_all = np.concatenate([p_pre.numpy().ravel(), p_post.numpy().ravel()])
    keep = t_all != 255
    for cls in range(3):
        inter = np.sum((t_all == cls) & (p_all == cls) & keep)
        union = np.sum(((t_all == cls) | (p_all == cls)) & keep)
        assert float(scores["semantic_iou"][cls]) == pytest.approx(inter / union)


def test_semantic_metric_perfect_prediction() -> None:
    gen = torch.Generator().manual_seed(0)
    pre = torch.randint(0, 7, (2, 16, 16), generator=gen)
    post = torch.randint(0, 7, (2, 16, 16), generator=gen)
    change = (pre != post).long()
    metric = SemanticChangeMetrics(num_classes=7)
    metric.update(pre, post, change, pre, post, change)
    scores = metric.compute()
    for key in ("iou_change", "f1", "oa", "kappa", "miou", "sek", "fscd"):
        assert float(scores[key]) == pytest.approx(1.0), key
    assert torch.allclose(scores["semantic_iou"], torch.ones(7, dtype=torch.float64))


def test_semantic_metric_rejects_out_of_range_labels() -> None:
    metric = SemanticChangeMetrics(num_classes=3)
    ok = torch.zeros(1, 2, 2, dtype=torch.long)
    bad = torch.tensor([[[0, 5], [255, 1]]])
    with pytest.raises(DataError, match="value 5"):
        metric.update(ok, ok, ok, bad, ok, ok)


def _levir_pairs(model_dir: str) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for path in sorted((LEVIR / model_dir).glob("*.png")):
        truth = np.array(Image.open(LEVIR / "label" / path.name)) > 127
        pred = np.array(Image.open(path)) > 127
        pairs.append((pred.astype(np.int64), truth.astype(np.int64)))
    return pairs


@pytest.mark.skipif(not LEVIR.exists(), reason="shared LEVIR-CD samples not available")
@pytest.mark.parametrize(
    "model_dir", ["predict_CD_BIT", "predict_CD_SiamUnet_diff", "predict_CD_Unet"]
)
def test_binary_on_levircd_matches_numpy(model_dir: str) -> None:
    from sklearn.metrics import cohen_kappa_score

    pairs = _levir_pairs(model_dir)
    assert len(pairs) >= 5
    metric = BinaryChangeMetrics()
    for pred, truth in pairs:  # one crop per update: accumulation must equal the pooled counts
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(truth)[None])
    scores = metric.compute()

    pred_all = np.concatenate([p.ravel() for p, _ in pairs])
    truth_all = np.concatenate([t.ravel() for _, t in pairs])
    tp = np.sum((pred_all == 1) & (truth_all == 1))
    fp = np.sum((pred_all == 1) & (truth_all == 0))
    fn = np.sum((pred_all == 0) & (truth_all == 1))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert float(scores["precision"]) == pytest.approx(precision)
    assert float(scores["recall"]) == pytest.approx(recall)
    assert float(scores["f1"]) == pytest.approx(2 * precision * recall / (precision + recall))
    assert float(scores["iou_change"]) == pytest.approx(tp / (tp + fp + fn))
    assert float(scores["oa"]) == pytest.approx(np.mean(pred_all == truth_all))
    assert float(scores["kappa"]) == pytest.approx(cohen_kappa_score(truth_all, pred_all))
    # Published LEVIR-CD models reach F1 well above 0.5 on these test crops.
    assert float(scores["f1"]) > 0.5


@pytest.mark.skipif(not LEVIR.exists(), reason="shared LEVIR-CD samples not available")
def test_binary_ignore_index_on_levircd() -> None:
    pred, truth = _levir_pairs("predict_CD_BIT")[0]
    truth_ignored = truth.copy()
    truth_ignored[:, :128] = 255
    metric = BinaryChangeMetrics(ignore_index=255)
    metric.update(torch.from_numpy(pred)[None], torch.from_numpy(truth_ignored)[None])
    right_half = BinaryChangeMetrics()
    right_half.update(torch.from_numpy(pred[:, 128:])[None], torch.from_numpy(truth[:, 128:])[None])
    assert torch.equal(metric.confusion, right_half.confusion)

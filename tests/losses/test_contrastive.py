"""Losses against hand-computed values, ignore_index handling and finite gradients."""

from __future__ import annotations

import math

import pytest
import torch

from geochange.errors import ConfigurationError, DataError
from geochange.losses import (
    BatchBalancedContrastiveLoss,
    BCEDiceLoss,
    BSCCLoss,
    CombinedIoULoss,
    DiceLoss,
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    SACLLoss,
    SCDMultitaskLoss,
    SoftIoULoss,
    build_change_loss,
    masked_cross_entropy,
    supervised_info_nce,
)

LOG2 = math.log(2.0)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _binary() -> tuple[torch.Tensor, torch.Tensor]:
    # Four pixels: logits [0, 0, 0, 5], labels [1, 0, 1, ignore].
    logits = torch.tensor([0.0, 0.0, 0.0, 5.0]).reshape(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([1, 0, 1, 255]).reshape(1, 2, 2)
    return logits, target


def test_bce_and_pos_weight_hand_values() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0]).reshape(1, 1, 1, 3)
    target = torch.tensor([1, 0, 255]).reshape(1, 1, 3)
    expected = (LOG2 + math.log(1 + math.e**2)) / 2
    assert float(MaskedBCEWithLogitsLoss()(logits, target)) == pytest.approx(expected, rel=1e-6)
    weighted = (3 * LOG2 + math.log(1 + math.e**2)) / 2
    value = MaskedBCEWithLogitsLoss(pos_weight=3.0)(logits, target)
    assert float(value) == pytest.approx(weighted, rel=1e-6)


def test_dice_iou_focal_combined_hand_values() -> None:
    logits, target = _binary()
    # p = 0.5 on the three labelled pixels: Σpt = 1, Σp = 1.5, Σt = 2, smooth = 1.
    assert float(DiceLoss()(logits, target)) == pytest.approx(1 - 3 / 4.5, rel=1e-6)
    assert float(SoftIoULoss()(logits, target)) == pytest.approx(1 - 2 / 3.5, rel=1e-6)
    assert float(DiceLoss(smooth=0.0)(logits, target)) == pytest.approx(1 - 2 / 3.5, rel=1e-6)
    # Focal: p_t = 0.5 everywhere, (1 - p_t)^2 = 0.25; alpha_t = 0.25 (change), 0.75 (none).
    focal = (0.25 * 0.25 * LOG2 * 2 + 0.75 * 0.25 * LOG2) / 3
    assert float(FocalLoss()(logits, target)) == pytest.approx(focal, rel=1e-6)
    assert float(FocalLoss(alpha=None, gamma=0.0)(logits, target)) == pytest.approx(LOG2)
    combined = LOG2 + (1 - 2 / 3.5)
    assert float(CombinedIoULoss()(logits, target)) == pytest.approx(combined, rel=1e-6)
    both = 2 * LOG2 + 0.5 * (1 - 3 / 4.5)
    value = BCEDiceLoss(bce_weight=2.0, dice_weight=0.5)(logits, target)
    assert float(value) == pytest.approx(both, rel=1e-6)


@pytest.mark.parametrize("name", ["bce", "dice", "focal", "iou", "combined_iou", "bce_dice"])
def test_ignored_pixels_do_not_matter(name: str) -> None:
    loss = build_change_loss(name)
    logits, target = _binary()
    value = loss(logits, target)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad.reshape(-1)[3]) == 0.0  # the ignored pixel gets no gradient
    other = logits.detach().clone()
    other.reshape(-1)[3] = -30.0
    assert float(loss(other, target)) == pytest.approx(float(value), rel=1e-6)
    # A fully ignored batch: zero loss, zero (finite) gradient.
    empty = torch.zeros(1, 1, 2, 2, requires_grad=True)
    zero = loss(empty, torch.full((1, 2, 2), 255))
    zero.backward()
    assert float(zero) == 0.0 and torch.equal(empty.grad, torch.zeros_like(empty))


def test_loss_argument_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown change loss"):
        build_change_loss("hinge")
    with pytest.raises(ConfigurationError, match="pos_weight"):
        MaskedBCEWithLogitsLoss(pos_weight=-1.0)
    with pytest.raises(DataError, match="differ in shape"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))


def test_masked_cross_entropy() -> None:
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 3], [255, 1]]])
    assert float(masked_cross_entropy(logits, labels)) == pytest.approx(math.log(4))
    empty = masked_cross_entropy(logits, torch.full((1, 2, 2), 255))
    empty.backward()
    assert float(empty) == 0.0 and torch.isfinite(logits.grad).all()


def test_bscc_hand_value_and_gradients() -> None:
    pre = torch.zeros(1, 1, 1, 4, requires_grad=True)
    post = torch.tensor([1.0, 3.0, 0.5, 9.0]).reshape(1, 1, 1, 4)
    change = torch.zeros(1, 1, 1, 4, requires_grad=True)  # p = 0.5
    target = torch.tensor([0, 1, 1, 255]).reshape(1, 1, 4)
    value = BSCCLoss(margin=2.0)(pre, post, change, target)
    # unchanged d=1: 0.5*1; changed d=3: 0 (beyond margin); changed d=0.5: 0.5*1.5^2.
    assert float(value) == pytest.approx((0.5 + 0.0 + 0.5 * 2.25) / 3, rel=1e-5)
    value.backward()
    assert torch.isfinite(pre.grad).all() and float(pre.grad[0, 0, 0, 3]) == 0.0
    assert change.grad is None or float(change.grad.abs().sum()) == 0.0  # p is detached
    # Identical features (d = 0) keep a finite gradient.
    same = torch.zeros(1, 2, 2, 2, requires_grad=True)
    BSCCLoss()(
        same, torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 2, 2)
    ).backward()
    assert torch.isfinite(same.grad).all()


def test_batch_balanced_contrastive_hand_value() -> None:
    distance = torch.tensor([1.0, 3.0, 0.5, 0.2]).reshape(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([0, 1, 1, 255]).reshape(1, 2, 2)
    value = BatchBalancedContrastiveLoss(margin=2.0)(distance, target)
    assert float(value) == pytest.approx(0.5 * 1.0 + 0.5 * (0 + 2.25) / 2, rel=1e-6)
    value.backward()
    assert torch.isfinite(distance.grad).all() and float(distance.grad.reshape(-1)[3]) == 0.0
    only_unchanged = BatchBalancedContrastiveLoss()(distance, torch.zeros(1, 2, 2))
    expected = 0.5 * float(distance.detach().pow(2).mean())
    assert float(only_unchanged) == pytest.approx(expected, rel=1e-6)


def test_supervised_info_nce_hand_value() -> None:
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    value = supervised_info_nce(queries, torch.tensor([0, 1]), keys, torch.tensor([0, 1, 5]), 1.0)
    first = -(1 - math.log(2 * math.e + 1)) / 1  # one positive (key 0), logits [1, 0, 1]
    second = -(1 - math.log(math.e + 2))  # one positive (key 1), logits [0, 1, 0]
    assert float(value) == pytest.approx((first + second) / 2, rel=1e-6)


def _two_class_embeddings() -> tuple[torch.Tensor, ...]:
    # B=1, 2x2 pixels, 2-D embeddings; class 0 points along x, class 1 along y.
    pre = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    embedding_pre = torch.stack(pre)[None].requires_grad_()
    embedding_post = embedding_pre.detach().clone().requires_grad_()
    labels = torch.tensor([[[0, 0], [1, 1]]])
    return embedding_pre, embedding_post, labels, labels.clone()


def test_sacl_local_level_hand_value() -> None:
    pre, post, labels_pre, labels_post = _two_class_embeddings()
    loss = SACLLoss(2, embedding_dim=2, temperature=1.0, global_weight=0.0)
    value = loss(pre, post, labels_pre, labels_post)
    # 8 anchors; each has 3 positives (sim 1) and 4 negatives (sim 0) among the other 7.
    expected = -(1 - math.log(3 * math.e + 4))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert torch.isfinite(pre.grad).all()


def test_sacl_global_level_hand_value_and_queues() -> None:
    pre, post, labels_pre, labels_post = _two_class_embeddings()
    loss = SACLLoss(
        2,
        embedding_dim=2,
        temperature=1.0,
        local_weight=0.0,
        enqueue_per_class=3,
        pixel_queue_size=4,
        region_queue_size=3,
    )
    value = loss(pre, post, labels_pre, labels_post)
    # Region means: class 0 [1, 0] (pre and post images), class 1 [0, 1] (both) -> 4 keys;
    # each query has 2 positives (sim 1) and 2 negatives (sim 0).
    expected = -(1 - math.log(2 * math.e + 2))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert loss.pixel_count.tolist() == [3, 3] and loss.region_count.tolist() == [2, 2]
    loss(pre, post, labels_pre, labels_post)  # queues wrap around at their length
    assert loss.pixel_count.tolist() == [4, 4] and loss.region_count.tolist() == [3, 3]
    assert loss.pixel_pointer.tolist() == [2, 2]
    # With the region queue (3 more keys per class, same directions) the value changes.
    with_queue = loss(pre, post, labels_pre, labels_post)
    assert float(with_queue) == pytest.approx(-(1 - math.log(5 * math.e + 5)), rel=1e-6)
    loss.eval()
    counts = loss.pixel_pointer.clone()
    loss(pre, post, labels_pre, labels_post)
    assert torch.equal(loss.pixel_pointer, counts)  # no enqueue in eval mode
    loss.reset_queues()
    assert loss.pixel_count.sum() == 0


def test_sacl_ignores_unlabeled_and_prefers_hard_queries() -> None:
    torch.manual_seed(0)
    pre = torch.randn(1, 8, 6, 6, requires_grad=True)
    post = torch.randn(1, 8, 6, 6, requires_grad=True)
    labels = torch.randint(0, 3, (1, 6, 6))
    loss = SACLLoss(3, embedding_dim=8, pixel_queue_size=0, region_queue_size=0)
    loss.eval()
    value = loss(pre, post, labels, labels)
    ignored = labels.clone()
    ignored[0, 0, :] = 255
    changed_pre = pre.detach().clone()
    changed_pre[0, :, 0, :] = 100.0
    torch.manual_seed(0)
    a = loss(pre.detach(), post.detach(), ignored, ignored)
    torch.manual_seed(0)
    b = loss(changed_pre, post.detach(), ignored, ignored)
    assert float(a) == pytest.approx(float(b), rel=1e-6)  # ignored pixels play no role
    value.backward()
    assert torch.isfinite(pre.grad).all() and torch.isfinite(post.grad).all()
    all_ignored = loss(pre, post, torch.full_like(labels, 255), torch.full_like(labels, 255))
    assert float(all_ignored) == 0.0


def test_sacl_global_queries_prefer_hard_pixels() -> None:
    # One 1x4 image per date, 2-D embeddings. Pre pixel 2 is class 0 but looks like class 1
    # (embedding [0, 1]) and the pre logits misclassify it: it must be the class-0 query.
    x, y = [1.0, 0.0], [0.0, 1.0]
    pre = torch.tensor([x, x, y, y]).T.reshape(1, 2, 1, 4)
    post = torch.tensor([x, x, y, y]).T.reshape(1, 2, 1, 4)
    labels_pre = torch.tensor([[[0, 0, 0, 1]]])
    labels_post = torch.tensor([[[0, 0, 1, 1]]])
    logits_pre = torch.nn.functional.one_hot(torch.tensor([[[0, 0, 1, 1]]]), 2)
    logits_pre = logits_pre.permute(0, 3, 1, 2).float()
    logits_post = torch.nn.functional.one_hot(labels_post, 2).permute(0, 3, 1, 2).float()
    loss = SACLLoss(2, embedding_dim=2, temperature=0.5, hard_queries_per_class=1, local_weight=0.0)
    loss.eval()
    keys = torch.nn.functional.normalize(torch.tensor([[2 / 3, 1 / 3], y, x, y]), dim=1)
    key_labels = torch.tensor([0, 1, 0, 1])

    def expected(class0_query: list[float]) -> float:
        queries = torch.tensor([class0_query, y])
        return float(supervised_info_nce(queries, torch.tensor([0, 1]), keys, key_labels, 0.5))

    with_logits = loss(pre, post, labels_pre, labels_post, logits_pre, logits_post)
    assert float(with_logits) == pytest.approx(expected(y), rel=1e-5)
    # Without logits no pixel is "hard": the class-0 query is a random one, here always [1, 0]
    # unless the hard pixel is drawn; its value is one of the two candidates.
    torch.manual_seed(0)
    values = {round(float(loss(pre, post, labels_pre, labels_post)), 5) for _ in range(20)}
    assert values <= {round(expected(x), 5), round(expected(y), 5)}
    assert round(expected(x), 5) in values and expected(x) < expected(y)


def test_scd_multitask_terms_and_total() -> None:
    torch.manual_seed(0)
    outputs = {
        "change": torch.randn(2, 1, 8, 8, requires_grad=True),
        "semantic_pre": torch.randn(2, 4, 8, 8, requires_grad=True),
        "semantic_post": torch.randn(2, 4, 8, 8, requires_grad=True),
        "semantic_features_pre": torch.randn(2, 6, 8, 8, requires_grad=True),
        "semantic_features_post": torch.randn(2, 6, 8, 8, requires_grad=True),
        "embedding_pre": torch.randn(2, 5, 8, 8, requires_grad=True),
        "embedding_post": torch.randn(2, 5, 8, 8, requires_grad=True),
    }
    mask = torch.randint(0, 2, (2, 8, 8))
    mask[:, 0] = 255
    mask_pre = torch.randint(0, 4, (2, 8, 8))
    mask_post = torch.randint(0, 4, (2, 8, 8))
    mask_pre[:, :, 0] = 255
    criterion = SCDMultitaskLoss(4, embedding_dim=5, sacl_weight=0.5, bscc_weight=0.25)
    terms = criterion(outputs, mask, mask_pre, mask_post)
    expected_ce = masked_cross_entropy(outputs["semantic_pre"], mask_pre)
    assert float(terms["semantic_pre"]) == pytest.approx(float(expected_ce), rel=1e-6)
    assert float(terms["change"]) == pytest.approx(
        float(BCEDiceLoss()(outputs["change"], mask)), rel=1e-6
    )
    total = (
        terms["semantic_pre"]
        + terms["semantic_post"]
        + terms["change"]
        + 0.25 * terms["bscc"]
        + 0.5 * terms["sacl"]
    )
    assert float(terms["loss"]) == pytest.approx(float(total), rel=1e-6)
    assert float(terms["sacl"]) > 0
    terms["loss"].backward()
    for tensor in outputs.values():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    # Change-only labels: semantic and SACL terms vanish.
    change_only = criterion({"change": outputs["change"]}, mask)
    assert float(change_only["loss"]) == pytest.approx(float(terms["change"]), rel=1e-6)

"""Contrastive losses (geochange.losses.contrastive) against hand values, with gradients."""

from __future__ import annotations

import math

import pytest
import torch

from geochange.losses import (
    BatchBalancedContrastiveLoss,
    BSCCLoss,
    SACLLoss,
    supervised_info_nce,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


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

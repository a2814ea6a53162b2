"""Change-detection metrics as distributed-safe :class:`torchmetrics.Metric` objects.

Both metrics accumulate integer confusion matrices (summed across processes by torchmetrics'
``dist_reduce_fx="sum"``), so every score is computed once from the counts of the whole epoch or
scene rather than averaged over batches. This is what makes them exact when a scene is evaluated
block by block, and when validation runs under DDP.

* :class:`BinaryChangeMetrics` — change-class IoU (IoU^c), F1, precision, recall, overall
  accuracy and Cohen's kappa of a 0/1 change map.
* :class:`SemanticChangeMetrics` — the binary scores plus mIoU (mean of the no-change and
  change IoU), SeK, Fscd and per-class semantic IoU, following the SECOND benchmark definition:
  each date contributes one ``(K + 1) x (K + 1)`` confusion matrix entry per pixel where label
  ``0`` means *no change* and label ``k + 1`` means *changed, class k on that date*.

Ratios with an empty denominator (e.g. precision when nothing is predicted as change) are 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from geochange.classes import IGNORE_INDEX
from geochange.errors import DataError
from geochange.keys import squeeze_mask

__all__ = [
    "BinaryChangeMetrics",
    "SemanticChangeMetrics",
    "binary_scores_from_confusion",
    "cohen_kappa_from_confusion",
    "scd_scores_from_confusion",
    "scores_from_counts",
]


def _safe_div(numerator: Tensor, denominator: Tensor) -> Tensor:
    """Divide, returning 0 where the denominator is 0."""
    numerator = numerator.double()
    denominator = denominator.double()
    return torch.where(
        denominator > 0, numerator / denominator.clamp_min(1e-300), torch.zeros_like(numerator)
    )


def _ratio(numerator: Any, denominator: Any, empty: float) -> Any:
    """``numerator / denominator``, or ``empty`` where the denominator is 0 (numbers or tensors)."""
    if isinstance(numerator, Tensor) or isinstance(denominator, Tensor):
        numerator = torch.as_tensor(numerator).double()
        denominator = torch.as_tensor(denominator, device=numerator.device).double()
        return torch.where(
            denominator > 0,
            numerator / denominator.clamp_min(1e-300),
            torch.full_like(numerator, empty),
        )
    return numerator / denominator if denominator else empty


def scores_from_counts(tp: Any, fp: Any, fn: Any, *, empty: float = 0.0) -> dict[str, Any]:
    """Precision, recall, F1 and IoU of the change class from its confusion counts.

    The one scoring of a change confusion matrix: pixel metrics
    (:func:`binary_scores_from_confusion`), object matching (:func:`geochange.evaluate_scene`)
    and pseudo-label scores (:class:`geochange.pseudo.ChangeScore`) all use it.

    Args:
        tp: true positives (numbers, or tensors for the torchmetrics path).
        fp: false positives.
        fn: false negatives.
        empty: the value of a ratio whose denominator is 0. Metrics and evaluation reports use
            0 (an empty class scores nothing); pseudo-label diagnostics pass NaN, so a scene
            without any change reads as "undefined" rather than as a failure.

    Returns:
        Dict with ``precision``, ``recall``, ``f1`` and ``iou`` (floats, or float64 tensors).
    """
    return {
        "precision": _ratio(tp, tp + fp, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "iou": _ratio(tp, tp + fp + fn, empty),
    }


def cohen_kappa_from_confusion(confusion: Tensor) -> Tensor:
    """Cohen's kappa of a square confusion matrix (any orientation).

    Args:
        confusion: ``[N, N]`` counts.

    Returns:
        A float64 scalar; 0 for an empty matrix or when chance agreement is 1.
    """
    confusion = confusion.double()
    total = confusion.sum()
    if total <= 0:
        return torch.zeros((), dtype=torch.float64, device=confusion.device)
    observed = confusion.diagonal().sum() / total
    expected = (confusion.sum(0) * confusion.sum(1)).sum() / (total * total)
    return _safe_div(observed - expected, 1.0 - expected)


def binary_scores_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """Binary change scores from a ``[2, 2]`` confusion matrix.

    Args:
        confusion: counts indexed ``[target, prediction]`` with 0 = no change, 1 = change.

    Returns:
        Dict with ``iou_change``, ``f1``, ``precision``, ``recall``, ``oa``, ``kappa`` and
        ``miou`` (mean of the no-change and change IoU), each a float64 scalar tensor.
    """
    tn, fp = confusion[0, 0], confusion[0, 1]
    fn, tp = confusion[1, 0], confusion[1, 1]
    change = scores_from_counts(tp, fp, fn)
    iou_change = change["iou"]
    iou_unchanged = _safe_div(tn, tn + fp + fn)
    return {
        "iou_change": iou_change,
        "f1": change["f1"],
        "precision": change["precision"],
        "recall": change["recall"],
        "oa": _safe_div(tp + tn, confusion.sum()),
        "kappa": cohen_kappa_from_confusion(confusion),
        "miou": (iou_change + iou_unchanged) / 2,
    }


def scd_scores_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """SECOND's semantic change scores from a ``(K + 1) x (K + 1)`` confusion matrix.

    Label 0 is *no change*, label ``k + 1`` is *changed to/from class k*; the matrix holds the
    entries of both dates. Definitions (Yang et al., SECOND, TPAMI 2021):

    * ``miou`` = mean of the no-change IoU and the change IoU of the 2x2 matrix obtained by
      merging labels 1..K;
    * ``sek`` = kappa of the matrix with its (0, 0) entry zeroed, times
      ``exp(IoU_change) / e``;
    * ``fscd`` = harmonic mean of precision and recall of the semantically correct changed
      pixels (diagonal of the changed block over predicted / reference changed pixels).

    Args:
        confusion: counts indexed ``[target, prediction]``.

    Returns:
        Dict with ``miou``, ``sek``, ``fscd``, ``iou_change``, ``precision_scd`` and
        ``recall_scd`` (float64 scalars).
    """
    confusion = confusion.double()
    binary = torch.stack(
        [
            torch.stack([confusion[0, 0], confusion[0, 1:].sum()]),
            torch.stack([confusion[1:, 0].sum(), confusion[1:, 1:].sum()]),
        ]
    )
    binary_scores = binary_scores_from_confusion(binary)
    without_unchanged = confusion.clone()
    without_unchanged[0, 0] = 0
    kappa_n0 = cohen_kappa_from_confusion(without_unchanged)
    sek = kappa_n0 * torch.exp(binary_scores["iou_change"]) / math.e
    correct_changed = confusion[1:, 1:].diagonal().sum()
    precision_scd = _safe_div(correct_changed, confusion[:, 1:].sum())
    recall_scd = _safe_div(correct_changed, confusion[1:, :].sum())
    fscd = _safe_div(2 * precision_scd * recall_scd, precision_scd + recall_scd)
    return {
        "miou": binary_scores["miou"],
        "iou_change": binary_scores["iou_change"],
        "sek": sek,
        "fscd": fscd,
        "precision_scd": precision_scd,
        "recall_scd": recall_scd,
    }


def _check_pair(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor]:
    # TorchGeo's [B, 1, H, W] labels meet geochange's [B, H, W] maps: compare without the
    # singleton channel.
    if pred.shape != target.shape:
        pred, target = squeeze_mask(pred), squeeze_mask(target)
    if pred.shape != target.shape:
        raise DataError(
            f"{what}: prediction shape {tuple(pred.shape)} differs from target shape "
            f"{tuple(target.shape)}"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise DataError(
            f"{what}: expected integer class maps, got {pred.dtype} / {target.dtype} "
            "(threshold or argmax the logits first)"
        )
    return pred, target


def _check_range(values: Tensor, upper: int, what: str, ignore_index: int | None) -> None:
    """Raise DataError when a label map holds a value outside ``[0, upper)`` (ignore excluded)."""
    if values.numel() == 0:
        return
    checked = values if ignore_index is None else values[values != ignore_index]
    if checked.numel() == 0:
        return
    low, high = int(checked.min()), int(checked.max())
    if low < 0 or high >= upper:
        bad = low if low < 0 else high
        suffix = f" (ignore_index={ignore_index} excluded)" if ignore_index is not None else ""
        raise DataError(f"{what} holds value {bad}, outside the valid range 0..{upper - 1}{suffix}")


class BinaryChangeMetrics(Metric):
    """Binary change-detection scores accumulated over batches, blocks and processes.

    Example:
        >>> metric = BinaryChangeMetrics()
        >>> metric.update(torch.tensor([[[1, 0], [1, 1]]]), torch.tensor([[[1, 0], [0, 255]]]))
        >>> round(float(metric.compute()["iou_change"]), 3)
        0.5

    Args:
        ignore_index: reference value excluded from every score (nodata / unlabeled).
        **kwargs: :class:`torchmetrics.Metric` options (``sync_on_compute``, ``process_group``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confusion: Tensor

    def __init__(self, ignore_index: int | None = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("confusion", torch.zeros(2, 2, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_change: Tensor, target_change: Tensor) -> None:
        """Add a batch of change maps.

        Args:
            pred_change: predicted 0/1 change map, integer ``[B, H, W]`` (any shape works).
            target_change: reference 0/1 change map of the same shape; ``ignore_index`` pixels
                are skipped.

        Raises:
            DataError: on shape mismatch, float inputs, or values other than 0/1 (reference
                ``ignore_index`` excluded).
        """
        pred_change, target_change = _check_pair(pred_change, target_change, "BinaryChangeMetrics")
        target = target_change.reshape(-1).long()
        pred = pred_change.reshape(-1).long().to(target.device)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
            target, pred = target[valid], pred[valid]
        _check_range(target, 2, "reference change map", self.ignore_index)
        _check_range(pred, 2, "predicted change map", None)
        counts = torch.bincount(target * 2 + pred, minlength=4)
        self.confusion += counts.reshape(2, 2).to(self.confusion.device)

    def compute(self) -> dict[str, Tensor]:
        """Scores from the accumulated confusion matrix.

        Returns:
            Dict with ``iou_change``, ``f1``, ``precision``, ``recall``, ``oa``, ``kappa``
            (float64 scalars).
        """
        scores = binary_scores_from_confusion(self.confusion)
        del scores["miou"]
        return scores


class SemanticChangeMetrics(Metric):
    """Semantic change-detection scores (SECOND definition) plus the binary change scores.

    The binary scores come from ``pred_change`` vs ``target_change``. The SCD scores use, for each
    date, label 0 where the pixel is (predicted / reference) unchanged and ``class + 1`` where it
    is changed; semantic labels therefore only count inside changed pixels, as in SECOND.
    Reference pixels whose change label is ``ignore_index`` are skipped for everything; a changed
    reference pixel whose semantic label on one date is ``ignore_index`` is skipped for that date.

    Per-class semantic IoU (``semantic_iou``, a ``[K]`` tensor) is computed over every pixel with
    a valid reference semantic label, both dates pooled.

    Args:
        num_classes: number of semantic classes K.
        ignore_index: reference value excluded from the scores.
        **kwargs: :class:`torchmetrics.Metric` options (``sync_on_compute``, ``process_group``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    binary_confusion: Tensor
    scd_confusion: Tensor
    semantic_confusion: Tensor

    def __init__(
        self, num_classes: int, ignore_index: int | None = IGNORE_INDEX, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise DataError(f"SemanticChangeMetrics: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        k = self.num_classes
        self.add_state("binary_confusion", torch.zeros(2, 2, dtype=torch.long), "sum")
        self.add_state("scd_confusion", torch.zeros(k + 1, k + 1, dtype=torch.long), "sum")
        self.add_state("semantic_confusion", torch.zeros(k, k, dtype=torch.long), "sum")

    def _bincount(self, target: Tensor, pred: Tensor, size: int) -> Tensor:
        counts = torch.bincount(target * size + pred, minlength=size * size)
        return counts.reshape(size, size)

    def update(
        self,
        pred_pre: Tensor,
        pred_post: Tensor,
        pred_change: Tensor,
        target_pre: Tensor,
        target_post: Tensor,
        target_change: Tensor,
    ) -> None:
        """Add a batch of semantic and change maps (integer ``[B, H, W]``, all the same shape).

        Args:
            pred_pre: predicted class map of the first date (0..K-1).
            pred_post: predicted class map of the second date.
            pred_change: predicted 0/1 change map.
            target_pre: reference class map of the first date (``ignore_index`` allowed).
            target_post: reference class map of the second date.
            target_change: reference 0/1 change map.

        Raises:
            DataError: on shape mismatch, float inputs or out-of-range values.
        """
        pred_pre, target_pre = _check_pair(
            pred_pre, target_pre, "SemanticChangeMetrics pre-date semantic map"
        )
        pred_post, target_post = _check_pair(
            pred_post, target_post, "SemanticChangeMetrics post-date semantic map"
        )
        pred_change, target_change = _check_pair(
            pred_change, target_change, "SemanticChangeMetrics change map"
        )
        if pred_pre.shape != pred_change.shape or pred_post.shape != pred_change.shape:
            raise DataError(
                "SemanticChangeMetrics: semantic maps and change map differ in shape: "
                f"{tuple(pred_pre.shape)}, {tuple(pred_post.shape)}, {tuple(pred_change.shape)}"
            )
        device = self.scd_confusion.device
        k, ignore = self.num_classes, self.ignore_index
        t_change = target_change.reshape(-1).long().to(device)
        p_change = pred_change.reshape(-1).long().to(device)
        t_sem = [t.reshape(-1).long().to(device) for t in (target_pre, target_post)]
        p_sem = [p.reshape(-1).long().to(device) for p in (pred_pre, pred_post)]
        _check_range(t_change, 2, "reference change map", ignore)
        _check_range(p_change, 2, "predicted change map", None)
        for t, p, date in zip(t_sem, p_sem, ("pre", "post"), strict=True):
            _check_range(t, k, f"reference {date}-date semantic map", ignore)
            _check_range(p, k, f"predicted {date}-date semantic map", None)

        change_valid = (
            t_change != ignore
            if ignore is not None
            else torch.ones_like(t_change, dtype=torch.bool)
        )
        self.binary_confusion += self._bincount(t_change[change_valid], p_change[change_valid], 2)
        for t, p in zip(t_sem, p_sem, strict=True):
            semantic_valid = (
                t != ignore if ignore is not None else torch.ones_like(t, dtype=torch.bool)
            )
            self.semantic_confusion += self._bincount(t[semantic_valid], p[semantic_valid], k)
            changed = t_change == 1
            # A changed reference pixel needs a semantic label on this date to be scored.
            scd_valid = change_valid & (~changed | semantic_valid)
            t_scd = torch.where(changed, t + 1, torch.zeros_like(t))[scd_valid]
            p_scd = torch.where(p_change == 1, p + 1, torch.zeros_like(p))[scd_valid]
            self.scd_confusion += self._bincount(t_scd, p_scd, k + 1)

    def compute(self) -> dict[str, Tensor]:
        """Scores from the accumulated confusion matrices.

        Returns:
            Dict with ``iou_change``, ``f1``, ``precision``, ``recall``, ``oa``, ``kappa`` (from
            the change maps), ``miou``, ``sek``, ``fscd`` (SECOND, from both dates) and
            ``semantic_iou`` (``[K]`` float64 tensor of per-class IoU).
        """
        scores = binary_scores_from_confusion(self.binary_confusion)
        scd = scd_scores_from_confusion(self.scd_confusion)
        scores["miou"] = scd["miou"]
        scores["sek"] = scd["sek"]
        scores["fscd"] = scd["fscd"]
        confusion = self.semantic_confusion.double()
        intersection = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - intersection
        scores["semantic_iou"] = _safe_div(intersection, union)
        return scores

"""Diagnostics of semi-supervised change training, logged next to the loss terms.

They answer why a consistency branch learns only "no change" or why a generated-label head
ends below the labels it learns from, in any run (TensorBoard / CSV), not only in a benchmark:

* per class, how much of the weak view's pseudo labels pass their confidence threshold;
* against a ground truth of the unlabeled batch, when it has one (``diagnostic_change``, e.g.
  ``ChangeDataModule(unlabeled_truth=True)`` on generated scenes): precision and recall of the
  confident change pseudo labels;
* where CEG says change: what the generated-label head and the consistency head predict.

Every value is a 0-d tensor computed without gradient; undefined ratios (no pixel in the
denominator) are left out of the dict rather than logged as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geochange.classes import IGNORE_INDEX

__all__ = ["DIAGNOSTICS", "generated_head_diagnostics", "pseudo_label_diagnostics"]

#: Logged as ``train/<name>`` (not ``train/loss_<name>``): they are measurements, not losses.
DIAGNOSTICS = (
    "confident_fraction",
    "confident_fraction_change",
    "confident_fraction_no_change",
    "pseudo_change_fraction",
    "pseudo_precision",
    "pseudo_recall",
    "pseudo_recall_any_confidence",
    "generated_change_fraction",
    "generated_head_recall",
    "generated_head_probability",
    "change_head_probability_on_generated",
    "generated_weight",
)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor | None:
    count = denominator.sum()
    if int(count) == 0:
        return None
    return (numerator.sum() / count).float()


@torch.no_grad()
def pseudo_label_diagnostics(
    pseudo: Tensor,
    confidence: Tensor,
    thresholds: Tensor | float,
    truth: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Tensor]:
    """Confident fraction per class and, given a truth, precision / recall of the pseudo labels.

    Args:
        pseudo: ``[B, H, W]`` 0/1 weak-view pseudo labels.
        confidence: ``[B, H, W]`` their confidence ``max(p, 1 - p)``.
        thresholds: Confidence threshold, a number or ``[B, H, W]`` per pixel.
        truth: Optional ``[B, H, W]`` change truth of the same view (0/1, ``ignore_index``).
        ignore_index: Label value of pixels without truth.

    Returns:
        ``confident_fraction`` (all pixels), ``confident_fraction_change`` /
        ``confident_fraction_no_change`` (share of the pixels pseudo-labelled change / no change
        that are confident), ``pseudo_change_fraction`` (share labelled change, any
        confidence), and with a truth ``pseudo_precision`` and ``pseudo_recall`` of the
        *confident* change labels on the true change pixels, and
        ``pseudo_recall_any_confidence`` (of the change labels before thresholding).
    """
    confident = confidence >= thresholds
    change = pseudo == 1
    out: dict[str, Tensor] = {
        "confident_fraction": confident.float().mean(),
        "pseudo_change_fraction": change.float().mean(),
    }
    for name, chosen in (("change", change), ("no_change", ~change)):
        value = _ratio(confident & chosen, chosen)
        if value is not None:
            out[f"confident_fraction_{name}"] = value
    if truth is None:
        return out
    true_change = truth == 1
    kept = confident & change & (truth != ignore_index)
    for name, value in (
        ("pseudo_precision", _ratio(kept & true_change, kept)),
        ("pseudo_recall", _ratio(kept & true_change, true_change)),
        ("pseudo_recall_any_confidence", _ratio(change & true_change, true_change)),
    ):
        if value is not None:
            out[name] = value
    return out


@torch.no_grad()
def generated_head_diagnostics(
    generated_logits: Tensor, change_logits: Tensor, generated: Tensor
) -> dict[str, Tensor]:
    """What both change heads predict where the CEG labels say change.

    Args:
        generated_logits: ``[B, 1, H, W]`` logits of the generated-label head.
        change_logits: ``[B, 1, H, W]`` logits of the consistency head (the prediction).
        generated: ``[B, H, W]`` CEG labels of the view (0, 1, 255 uncertain).

    Returns:
        ``generated_change_fraction`` (share of the view CEG calls change) and, when CEG calls
        any pixel change, ``generated_head_recall`` (share of those pixels where the
        generated-label head says change), ``generated_head_probability`` and
        ``change_head_probability_on_generated`` (mean probability of each head there).
    """
    says_change = generated == 1
    out = {"generated_change_fraction": says_change.float().mean()}
    if not bool(says_change.any()):
        return out
    p_generated = generated_logits[:, 0].detach().float().sigmoid()
    p_change = change_logits[:, 0].detach().float().sigmoid()
    out["generated_head_recall"] = (p_generated[says_change] > 0.5).float().mean()
    out["generated_head_probability"] = p_generated[says_change].mean()
    out["change_head_probability_on_generated"] = p_change[says_change].mean()
    return out

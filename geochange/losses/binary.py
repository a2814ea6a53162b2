"""Binary change losses on change logits, all honouring ``ignore_index``.

Every loss takes ``logits`` ``[B, 1, H, W]`` (or ``[B, H, W]``) and a ``target`` ``[B, H, W]``
(or ``[B, 1, H, W]``) of 0 (no change), 1 (change) and ``ignore_index`` (nodata/unlabeled,
default 255). Ignored pixels contribute neither to the loss nor to its gradient. A batch with
no valid pixel gives a zero loss that still back-propagates (zero gradients).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError, DataError


def valid_pixels(logits: Tensor, target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """Flatten logits and target and keep the labelled pixels.

    Args:
        logits: ``[B, 1, H, W]`` or ``[B, H, W]`` change logits.
        target: ``[B, H, W]`` or ``[B, 1, H, W]`` labels.
        ignore_index: Label value to drop (``None`` keeps everything).

    Returns:
        1-D logits and float targets of the kept pixels.

    Raises:
        DataError: If the shapes do not match.
    """
    if logits.dim() == 4 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.shape != target.shape:
        raise DataError(
            f"change logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
        )
    logits = logits.reshape(-1)
    target = target.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        logits, target = logits[keep], target[keep]
    return logits, target.to(logits.dtype)


def _zero(logits: Tensor) -> Tensor:
    # Zero that keeps the autograd graph, so a fully ignored batch still trains "nothing".
    return logits.sum() * 0.0


def _pos_weight_tensor(pos_weight: float | Tensor | None) -> Tensor | None:
    if pos_weight is None:
        return None
    value = torch.as_tensor(pos_weight, dtype=torch.float32)
    if value.numel() != 1 or float(value) <= 0:
        raise ConfigurationError(f"pos_weight must be one positive number, got {pos_weight!r}")
    return value.reshape(())


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on change logits with optional ``pos_weight``.

    ``loss = mean_i -[w_pos * t_i * log(sigmoid(l_i)) + (1 - t_i) * log(1 - sigmoid(l_i))]``
    over the labelled pixels.
    """

    pos_weight: Tensor

    def __init__(
        self, pos_weight: float | Tensor | None = None, ignore_index: int | None = IGNORE_INDEX
    ) -> None:
        """Create the loss.

        Args:
            pos_weight: Weight of the positive (change) term; > 1 counters rare change.
            ignore_index: Label value excluded from the loss.
        """
        super().__init__()
        self.ignore_index = ignore_index
        weight = _pos_weight_tensor(pos_weight)
        self.register_buffer("pos_weight", weight if weight is not None else torch.tensor(1.0))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            logits: Change logits ``[B, 1, H, W]``.
            target: Labels ``[B, H, W]``.

        Returns:
            Scalar loss.
        """
        flat_logits, flat_target = valid_pixels(logits, target, self.ignore_index)
        if flat_target.numel() == 0:
            return _zero(logits)
        return F.binary_cross_entropy_with_logits(
            flat_logits, flat_target, pos_weight=self.pos_weight.to(flat_logits.dtype)
        )


class _SoftOverlapLoss(nn.Module, abc.ABC):
    """Shared body of the soft Dice / IoU losses: sums over all labelled pixels of the batch."""

    def __init__(self, smooth: float = 1.0, ignore_index: int | None = IGNORE_INDEX) -> None:
        """Create the loss.

        Args:
            smooth: Additive smoothing ``s`` of numerator and denominator.
            ignore_index: Label value excluded from the loss.
        """
        super().__init__()
        self.smooth = smooth
        self.ignore_index = ignore_index

    @abc.abstractmethod
    def _loss(self, intersection: Tensor, total: Tensor) -> Tensor:
        """The loss from the soft intersection ``Σpt`` and ``total = Σp + Σt``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            logits: Change logits ``[B, 1, H, W]``.
            target: Labels ``[B, H, W]``.

        Returns:
            Scalar loss.
        """
        flat_logits, flat_target = valid_pixels(logits, target, self.ignore_index)
        if flat_target.numel() == 0:
            return _zero(logits)
        probability = torch.sigmoid(flat_logits)
        intersection = (probability * flat_target).sum()
        return self._loss(intersection, probability.sum() + flat_target.sum())


class DiceLoss(_SoftOverlapLoss):
    """Soft Dice loss on the change probability: ``1 - (2 Σpt + s) / (Σp + Σt + s)``.

    Sums run over all labelled pixels of the batch (not per image), so images without change
    do not produce degenerate per-image ratios.
    """

    def _loss(self, intersection: Tensor, total: Tensor) -> Tensor:
        return 1.0 - (2.0 * intersection + self.smooth) / (total + self.smooth)


class SoftIoULoss(_SoftOverlapLoss):
    """Soft IoU (Jaccard) loss: ``1 - (Σpt + s) / (Σp + Σt - Σpt + s)`` over the batch."""

    def _loss(self, intersection: Tensor, total: Tensor) -> Tensor:
        union = total - intersection
        return 1.0 - (intersection + self.smooth) / (union + self.smooth)


class FocalLoss(nn.Module):
    """Binary focal loss ``-α_t (1 - p_t)^γ log(p_t)``, averaged over labelled pixels.

    Uses :func:`torchvision.ops.sigmoid_focal_loss`.
    """

    def __init__(
        self,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        """Create the loss.

        Args:
            alpha: Weight of the change class (``1 - alpha`` for no change); ``None`` disables
                the class weighting.
            gamma: Focusing exponent (0 gives plain BCE).
            ignore_index: Label value excluded from the loss.
        """
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ConfigurationError(f"focal alpha must be in [0, 1] or None, got {alpha}")
        self.alpha = alpha
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            logits: Change logits ``[B, 1, H, W]``.
            target: Labels ``[B, H, W]``.

        Returns:
            Scalar loss.
        """
        flat_logits, flat_target = valid_pixels(logits, target, self.ignore_index)
        if flat_target.numel() == 0:
            return _zero(logits)
        alpha = -1.0 if self.alpha is None else self.alpha  # torchvision: alpha < 0 disables
        return sigmoid_focal_loss(
            flat_logits, flat_target, alpha=alpha, gamma=self.gamma, reduction="mean"
        )


class _WeightedSum(nn.Module):
    """``Σ weight_i * term_i(logits, target)``; terms of weight 0 are not computed."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [float(weight) for weight, _ in terms]
        self.terms = nn.ModuleList(term for _, term in terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            logits: Change logits ``[B, 1, H, W]``.
            target: Labels ``[B, H, W]``.

        Returns:
            Scalar loss.
        """
        total = logits.new_zeros(())
        for weight, term in zip(self.weights, self.terms, strict=True):
            if weight:
                total = total + weight * term(logits, target)
        return total


class _BCEPlusOverlapLoss(_WeightedSum):
    """``bce_weight * BCE(pos_weight) + overlap_weight * overlap``; subclasses name the overlap."""

    overlap_loss: type[_SoftOverlapLoss]

    def __init__(
        self,
        bce_weight: float,
        overlap_weight: float,
        pos_weight: float | Tensor | None,
        smooth: float,
        ignore_index: int | None,
    ) -> None:
        super().__init__(
            [
                (bce_weight, MaskedBCEWithLogitsLoss(pos_weight, ignore_index)),
                (overlap_weight, self.overlap_loss(smooth, ignore_index)),
            ]
        )


class CombinedIoULoss(_BCEPlusOverlapLoss):
    """``bce_weight * BCE(pos_weight) + iou_weight * soft IoU`` on the change probability.

    Args:
        bce_weight: Weight of the BCE term.
        iou_weight: Weight of the soft IoU term.
        pos_weight: BCE positive-class weight.
        smooth: Soft IoU smoothing.
        ignore_index: Label value excluded from the loss.
    """

    overlap_loss = SoftIoULoss

    # Explicit parameters (not **kwargs): configs and jsonargparse read them from the signature.
    def __init__(
        self,
        bce_weight: float = 1.0,
        iou_weight: float = 1.0,
        pos_weight: float | Tensor | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__(bce_weight, iou_weight, pos_weight, smooth, ignore_index)


class BCEDiceLoss(_BCEPlusOverlapLoss):
    """``bce_weight * BCE(pos_weight) + dice_weight * Dice`` (the SCD change loss).

    Args:
        bce_weight: Weight of the BCE term.
        dice_weight: Weight of the Dice term.
        pos_weight: BCE positive-class weight.
        smooth: Dice smoothing.
        ignore_index: Label value excluded from the loss.
    """

    overlap_loss = DiceLoss

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        pos_weight: float | Tensor | None = None,
        smooth: float = 1.0,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__(bce_weight, dice_weight, pos_weight, smooth, ignore_index)


_CHANGE_LOSSES: dict[str, type[nn.Module]] = {
    "bce": MaskedBCEWithLogitsLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "iou": SoftIoULoss,
    "jaccard": SoftIoULoss,
    "combined_iou": CombinedIoULoss,
    "bce_dice": BCEDiceLoss,
}


def build_change_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a binary change loss by name.

    Args:
        name: One of ``"bce"``, ``"dice"``, ``"focal"``, ``"iou"`` (alias ``"jaccard"``),
            ``"combined_iou"``, ``"bce_dice"``.
        **kwargs: Arguments of the loss class (``pos_weight``, ``ignore_index``, ...).

    Returns:
        The loss module, called as ``loss(logits, target)``.

    Raises:
        ConfigurationError: Unknown name or arguments.
    """
    if name not in _CHANGE_LOSSES:
        raise ConfigurationError(
            f"unknown change loss {name!r}; choose one of {', '.join(sorted(_CHANGE_LOSSES))}"
        )
    try:
        return _CHANGE_LOSSES[name](**kwargs)
    except TypeError as error:
        raise ConfigurationError(f"invalid arguments for change loss {name!r}: {error}") from error


def masked_cross_entropy(
    logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, weight: Tensor | None = None
) -> Tensor:
    """Multi-class cross-entropy that returns 0 (not NaN) when every pixel is ignored.

    Args:
        logits: Class logits ``[B, K, H, W]``.
        target: Class labels ``[B, H, W]`` with ``ignore_index`` for unlabeled pixels.
        ignore_index: Label value excluded from the loss.
        weight: Optional per-class weights ``[K]``.

    Returns:
        Scalar loss (mean over labelled pixels).
    """
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise DataError(
            f"semantic logits {tuple(logits.shape)} and labels {tuple(target.shape)} do not match"
        )
    if not bool((target != ignore_index).any()):
        return _zero(logits)
    return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index)

"""Semi-supervised change detection: FixMatch/UniMatch consistency and DiffMatch guidance.

:class:`SemiSupervisedChangeTrainer` extends :class:`~geochange.trainers.ChangeTrainer` with an
unlabeled branch. Each training batch is ``{"labeled": batch, "unlabeled": batch}`` (what
``ChangeDataModule(labeled_fraction=..., combine_unlabeled=True)`` yields through Lightning's
``CombinedLoader``); validation, test, prediction and checkpoints are those of the parent, so
:class:`geochange.predict.ChangePredictor` loads the result like any other checkpoint.

Per training step:

1. **Weak view** of the unlabeled pairs: flips / 90° rotations / crop, the same geometry for
   both dates and for the per-date pseudo semantic maps.
2. **Pseudo labels** from the consistency head on the weak view (no gradient): change where
   ``p > 0.5``, kept where ``max(p, 1 - p) >= confidence_threshold``.
3. **Strong view**: per-date colour jitter, blur and grayscale on the weak view, then CutMix
   between pairs of the batch (one box per sample, the same box on both dates, on the pseudo
   labels, on the confidence and on every other per-pixel target).
4. **Losses**: supervised change loss on labeled pairs; unsupervised BCE on the strong view
   against confident pseudo labels, averaged over *all* valid pixels (so it is weighted by the
   confident fraction); optional UniMatch feature perturbation (channel dropout on the decoder
   inputs of the weak view, same pseudo labels). In ``method="diffmatch"`` additionally the
   generated-label head (``change_generated``) learns from change-event-generation (CEG) labels
   computed from the per-date pseudo semantic maps, the two auxiliary semantic decoders from
   those maps, on the labeled, weak and strong views, and the batch-balanced contrastive loss
   acts on the auxiliary bi-temporal feature distance.

Total loss (DiffMatch)::

    (L_sup + w_u * L_unsup) / 2
    + w_c * (L_contrast_sup + L_contrast_unsup) / 2
    + lambda_t / 6 * (G_lab + G_weak + G_strong + S_lab + S_weak + S_strong)

with ``S_view = (CE(aux_pre, sem_pre) + CE(aux_post, sem_post)) / 2`` and ``lambda_t`` moving
linearly from ``generated_weight_start`` to ``generated_weight_end`` over
``generated_weight_steps`` optimizer steps (default: the whole training run).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, cast

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError, DataError
from geochange.keys import (
    AUX_SEMANTIC_POST,
    AUX_SEMANTIC_PRE,
    CHANGE,
    CHANGE_GENERATED,
    FEATURE_DISTANCE,
    PSEUDO_CHANGE,
    PSEUDO_POST,
    PSEUDO_PRE,
)
from geochange.losses import BatchBalancedContrastiveLoss, masked_cross_entropy
from geochange.trainers.change import ChangeTrainer
from geochange.transforms import ChangeAugmentation

__all__ = [
    "PSEUDO_CHANGE",
    "PSEUDO_POST",
    "PSEUDO_PRE",
    "SemiSupervisedChangeTrainer",
    "StrongPhotometric",
    "apply_cutmix",
    "confidence_weighted_bce",
    "cutmix_boxes",
    "linear_schedule",
]


Method = Literal["fixmatch", "diffmatch"]
_DIAGNOSTICS = ("confident_fraction", "generated_weight")
SemanticFn = Callable[[Mapping[str, Any]], tuple[Tensor, Tensor]]


def linear_schedule(step: int, *, start: float, end: float, steps: int) -> float:
    """Value moving linearly from ``start`` (step 0) to ``end`` (step ``steps``), then constant.

    Args:
        step: Optimizer step (0-based).
        start: Value at step 0.
        end: Value from step ``steps`` on.
        steps: Length of the ramp; ``<= 0`` (unknown length) keeps ``start``.

    Returns:
        The scheduled value.
    """
    if steps <= 0:
        return start
    progress = min(1.0, max(0.0, step / steps))
    return start + (end - start) * progress


def confidence_weighted_bce(
    logits: Tensor,
    pseudo_labels: Tensor,
    confidence: Tensor,
    threshold: float,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """FixMatch/UniMatch unsupervised loss: BCE on confident pixels, averaged over valid ones.

    Unconfident pixels contribute zero but still count in the denominator, so the loss is the
    mean BCE over confident pixels times the confident fraction (a batch with few confident
    pixels pulls little).

    Args:
        logits: Change logits ``[B, 1, H, W]`` or ``[B, H, W]`` of the strong view.
        pseudo_labels: ``[B, H, W]`` 0/1 pseudo labels (``ignore_index`` where invalid).
        confidence: ``[B, H, W]`` confidence ``max(p, 1 - p)`` of the weak prediction.
        threshold: Confidence needed to use a pixel (0.95 in FixMatch/UniMatch).
        ignore_index: Label value of invalid pixels (excluded from numerator and denominator).

    Returns:
        Scalar loss (0 when no pixel is valid).

    Raises:
        DataError: If the shapes disagree.
    """
    if logits.dim() == 4:
        logits = logits[:, 0]
    if logits.shape != pseudo_labels.shape or confidence.shape != pseudo_labels.shape:
        raise DataError(
            f"logits {tuple(logits.shape)}, pseudo labels {tuple(pseudo_labels.shape)} and "
            f"confidence {tuple(confidence.shape)} must have the same [B, H, W] shape"
        )
    valid = pseudo_labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    confident = valid & (confidence >= threshold)
    target = torch.where(valid, pseudo_labels, torch.zeros_like(pseudo_labels)).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (per_pixel * confident.float()).sum() / valid.sum()


def cutmix_boxes(
    batch_size: int,
    height: int,
    width: int,
    *,
    probability: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw one CutMix box per sample (UniMatch style: random area and aspect ratio).

    Args:
        batch_size: Samples ``B``.
        height: Rows ``H``.
        width: Columns ``W``.
        probability: Chance that a sample gets a box at all.
        area: ``(min, max)`` box area as a fraction of the image.
        ratio: ``(min, max)`` box aspect ratio (width / height), sampled log-uniformly.
        generator: Optional random generator (CPU) for reproducible boxes.
        device: Device of the returned mask.

    Returns:
        ``[B, H, W]`` bool mask, True inside the box (where the partner's content is pasted).
    """
    boxes = torch.zeros(batch_size, height, width, dtype=torch.bool)
    for index in range(batch_size):
        draws = torch.rand(4, generator=generator).tolist()
        if draws[0] >= probability:
            continue
        box_area = (area[0] + (area[1] - area[0]) * draws[1]) * height * width
        log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[2]
        aspect = math.exp(log_ratio)
        box_h = max(1, min(height, round(math.sqrt(box_area / aspect))))
        box_w = max(1, min(width, round(math.sqrt(box_area * aspect))))
        corner = torch.rand(2, generator=generator).tolist()
        top = int(corner[0] * (height - box_h + 1))
        left = int(corner[1] * (width - box_w + 1))
        boxes[index, top : top + box_h, left : left + box_w] = True
    return boxes.to(device) if device is not None else boxes


def apply_cutmix(value: Tensor, boxes: Tensor, partner: Tensor) -> Tensor:
    """Paste ``value[partner]`` into ``value`` inside ``boxes``.

    The same boxes and partners must be used for the image and every per-pixel target, so
    dates, labels and pseudo labels stay aligned. Works for images ``[B, 2, C, H, W]`` (one box
    for both dates), ``[B, C, H, W]`` and per-pixel maps ``[B, H, W]``.

    Args:
        value: Tensor whose first dim is the batch and last two dims ``H, W``.
        boxes: ``[B, H, W]`` bool masks from :func:`cutmix_boxes`.
        partner: ``[B]`` long indices of the sample each one takes its box content from.

    Returns:
        The mixed tensor (a new tensor; ``value`` is untouched).

    Raises:
        DataError: If the batch or spatial size differs from the boxes.
    """
    if value.shape[0] != boxes.shape[0] or value.shape[-2:] != boxes.shape[-2:]:
        raise DataError(
            f"cannot CutMix a tensor of shape {tuple(value.shape)} with boxes {tuple(boxes.shape)}"
        )
    shape = [boxes.shape[0]] + [1] * (value.dim() - 3) + list(boxes.shape[-2:])
    return torch.where(boxes.view(shape), value[partner], value)


class StrongPhotometric(nn.Module):
    """Strong per-date photometric augmentation of normalized bi-temporal images.

    Each date independently gets brightness/contrast jitter, a random Gaussian blur and a
    random grayscale (every band replaced by the band mean, so any band count works). The
    geometry is untouched: the strong view stays pixel-aligned with the weak view it is made
    from, which is what lets the weak view's pseudo labels supervise it.

    Args:
        brightness: Brightness jitter amplitude (in normalized units).
        contrast: Contrast jitter amplitude.
        jitter_p: Probability of brightness/contrast jitter per date.
        blur_p: Probability of a Gaussian blur per date.
        blur_sigma: ``(min, max)`` blur sigma in pixels.
        grayscale_p: Probability of grayscale per date.
    """

    def __init__(
        self,
        *,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        grayscale_p: float = 0.2,
    ) -> None:
        super().__init__()
        self.jitter = ChangeAugmentation(
            flip=False,
            rotate90=False,
            scale=None,
            brightness=brightness,
            contrast=contrast,
            saturation=0.0,
            hue=0.0,
            photometric_p=jitter_p,
            value_range=None,
        )
        self.blur = K.RandomGaussianBlur((5, 5), blur_sigma, p=blur_p) if blur_p > 0 else None
        self.grayscale_p = grayscale_p

    def _grayscale(self, date: Tensor) -> Tensor:
        if self.grayscale_p <= 0 or date.shape[1] < 2:
            return date
        chosen = torch.rand(date.shape[0], 1, 1, 1, device=date.device) < self.grayscale_p
        gray = date.mean(dim=1, keepdim=True).expand_as(date)
        return torch.where(chosen, gray, date)

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        """Return a strongly augmented copy of ``image`` ``[B, 2, C, H, W]``.

        Args:
            image: Normalized bi-temporal images.

        Returns:
            The augmented images, same shape.
        """
        # The jitter module draws its parameters per date (independent illumination).
        jittered = self.jitter({"image": image})["image"]
        dates = []
        for t in range(jittered.shape[1]):
            date = jittered[:, t]
            if self.blur is not None:
                date = self.blur(date)
            dates.append(self._grayscale(date))
        return torch.stack(dates, dim=1)


def _default_weak_augmentation() -> ChangeAugmentation:
    return ChangeAugmentation(
        flip=True,
        rotate90=True,
        scale=(0.5, 1.0),
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        photometric_p=0.0,
        value_range=None,
    )


class SemiSupervisedChangeTrainer(ChangeTrainer):
    """Semi-supervised binary change detection: FixMatch/UniMatch and DiffMatch-style training.

    Train it with batches ``{"labeled": batch, "unlabeled": batch}``, e.g.
    ``ChangeDataModule(..., labeled_fraction=0.05, combine_unlabeled=True)``. Labeled batches
    are the usual training batches (augmented and normalized by the datamodule); unlabeled
    batches are normalized images (the trainer builds its own weak and strong views). A plain
    labeled batch (no ``"unlabeled"`` key) falls back to the supervised step of
    :class:`ChangeTrainer`.

    ``method="fixmatch"``: weak-to-strong consistency only (see the module docs).
    ``method="diffmatch"``: adds the generated-label head, the auxiliary semantic decoders and
    the metric-aware contrastive loss. It needs per-date pseudo semantic maps (e.g. an
    open-vocabulary segmenter run offline on each date) for labeled *and* unlabeled samples,
    found in this order:

    1. batch keys ``pseudo_pre`` / ``pseudo_post`` (``[B, H, W]`` long, 255 unknown);
    2. batch keys ``mask_pre`` / ``mask_post`` (a datamodule whose ``semantic_pre`` /
       ``semantic_post`` rasters are the segmenter's maps);
    3. ``pseudo_semantic_fn(batch) -> (pre, post)``, computed on the fly (e.g. a frozen
       segmenter on the batch images).

    CEG change labels come from a ``pseudo_change`` batch key when present (e.g. a raster from
    ``geochange pseudo-labels``), else from
    :func:`geochange.pseudo.change_event_generation_batch` on the pseudo maps of the view.

    With a registry model name, ``method="diffmatch"`` builds the model with
    ``dual_head=True, aux_semantic=True, num_classes=pseudo_num_classes`` (siamese models:
    ``siam_diff``, ``siam_conc``, ``fusion_unet``). Logged terms: ``train/loss_sup``,
    ``loss_unsup``, ``loss_feature_perturbation``, ``loss_contrast_sup``,
    ``loss_contrast_unsup``, ``loss_generated_{labeled,weak,strong}``,
    ``loss_aux_semantic_{labeled,weak,strong}``, ``confident_fraction``,
    ``generated_weight``.

    Example:
        >>> dm = ChangeDataModule(pre, post, change, semantic_pre=seg_pre,  # doctest: +SKIP
        ...     semantic_post=seg_post, labeled_fraction=0.05, combine_unlabeled=True)
        >>> module = SemiSupervisedChangeTrainer("siam_diff", method="diffmatch")  # doctest: +SKIP
        >>> lightning.pytorch.Trainer(max_epochs=50).fit(module, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | nn.Module = "siam_diff",
        backbone: str = "resnet18",
        weights: str | None = None,
        in_channels: int = 3,
        *,
        method: Method = "diffmatch",
        pseudo_num_classes: int = 7,
        change_classes: Sequence[int] = (0,),
        ceg_kwargs: dict[str, Any] | None = None,
        confidence_threshold: float = 0.95,
        unsupervised_weight: float = 1.0,
        contrastive_weight: float = 0.1,
        contrastive_margin: float = 2.0,
        generated_weight_start: float = 1.0,
        generated_weight_end: float = 0.0,
        generated_weight_steps: int | None = None,
        feature_dropout: float = 0.0,
        feature_perturbation_share: float = 0.5,
        cutmix_probability: float = 0.5,
        cutmix_area: tuple[float, float] = (0.02, 0.4),
        weak_augmentation: ChangeAugmentation | None = None,
        strong_augmentation: nn.Module | None = None,
        pseudo_semantic_fn: SemanticFn | None = None,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the model, losses and augmentations.

        Args:
            model: Registry name (a siamese model for DiffMatch) or a user module following
                the model contract (for DiffMatch it must also return ``change_generated``,
                ``aux_semantic_pre/post`` and ``feature_distance`` in training mode).
            backbone: smp encoder name.
            weights: Pretrained encoder weights or ``None``.
            in_channels: Bands per date.
            method: ``"fixmatch"`` or ``"diffmatch"``.
            pseudo_num_classes: Classes ``K`` of the per-date pseudo semantic maps (DiffMatch
                auxiliary decoders); default the 7 LsSCD classes.
            change_classes: Class id(s) whose appearance / disappearance is change for CEG
                (default ``(0,)``, LsSCD building).
            ceg_kwargs: Further :func:`geochange.pseudo.change_event_generation` arguments
                (``mode``, ``min_instance_area``, ``overlap_threshold``, ...).
            confidence_threshold: Weak-view confidence needed for a pseudo label (0.95).
            unsupervised_weight: ``w_u`` in the total loss.
            contrastive_weight: ``w_c`` in the total loss (0.1; 0 disables the term).
            contrastive_margin: Margin of the batch-balanced contrastive loss (2.0).
            generated_weight_start: ``lambda`` at step 0.
            generated_weight_end: ``lambda`` after ``generated_weight_steps``.
            generated_weight_steps: Length of the linear ``lambda`` ramp in optimizer steps
                (default: the estimated training steps).
            feature_dropout: UniMatch feature perturbation: channel dropout probability on the
                decoder inputs of an extra weak-view forward (0 disables; 0.5 in UniMatch).
            feature_perturbation_share: Share of ``L_unsup`` given to the feature-perturbed
                view when ``feature_dropout > 0`` (the strong view gets the rest).
            cutmix_probability: Chance that an unlabeled sample gets a CutMix box.
            cutmix_area: ``(min, max)`` CutMix box area fraction.
            weak_augmentation: Geometric weak augmentation (default flips, 90° rotations and
                a 0.5-1.0 area crop, no photometry).
            strong_augmentation: Module mapping normalized images ``[B, 2, C, H, W]`` to their
                strong view without moving pixels (default :class:`StrongPhotometric`).
            pseudo_semantic_fn: Optional ``fn(batch) -> (pre, post)`` giving ``[B, H, W]`` pseudo
                semantic maps when the batches carry none.
            model_kwargs: Extra ``build_model`` arguments.
            **kwargs: Any other :class:`ChangeTrainer` argument (``loss``, ``lr``,
                ``scheduler``, ...). Only ``task="binary"`` is supported.

        Raises:
            ConfigurationError: On inconsistent arguments.
        """
        if kwargs.get("task", "binary") != "binary":
            raise ConfigurationError("SemiSupervisedChangeTrainer supports task='binary' only")
        if method not in ("fixmatch", "diffmatch"):
            raise ConfigurationError(f"method must be 'fixmatch' or 'diffmatch', got {method!r}")
        if not 0.5 <= confidence_threshold < 1.0:
            raise ConfigurationError(
                f"confidence_threshold must be in [0.5, 1), got {confidence_threshold}"
            )
        if not 0.0 <= feature_dropout < 1.0:
            raise ConfigurationError(f"feature_dropout must be in [0, 1), got {feature_dropout}")
        if not 0.0 <= feature_perturbation_share <= 1.0:
            raise ConfigurationError(
                f"feature_perturbation_share must be in [0, 1], got {feature_perturbation_share}"
            )
        if not 0.0 <= cutmix_probability <= 1.0:
            raise ConfigurationError(
                f"cutmix_probability must be in [0, 1], got {cutmix_probability}"
            )
        if not 0.0 < cutmix_area[0] <= cutmix_area[1] <= 1.0:
            raise ConfigurationError(f"cutmix_area must be 0 < min <= max <= 1, got {cutmix_area}")
        for name, value in (
            ("unsupervised_weight", unsupervised_weight),
            ("contrastive_weight", contrastive_weight),
            ("generated_weight_start", generated_weight_start),
            ("generated_weight_end", generated_weight_end),
        ):
            if value < 0:
                raise ConfigurationError(f"{name} must be >= 0, got {value}")
        classes = [int(c) for c in change_classes]
        if not classes or any(c < 0 or c >= pseudo_num_classes for c in classes):
            raise ConfigurationError(
                f"change_classes {classes} must be class ids in 0..{pseudo_num_classes - 1}"
            )
        merged_kwargs = dict(model_kwargs or {})
        if method == "diffmatch" and not isinstance(model, nn.Module):
            merged_kwargs.setdefault("dual_head", True)
            merged_kwargs.setdefault("aux_semantic", True)
            merged_kwargs.setdefault("num_classes", pseudo_num_classes)
        super().__init__(
            model=model,
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,
            model_kwargs=merged_kwargs,
            **kwargs,
        )
        self.save_hyperparameters(
            ignore=[
                "model",
                "loss",
                "weak_augmentation",
                "strong_augmentation",
                "pseudo_semantic_fn",
            ]
            if isinstance(model, nn.Module)
            else ["loss", "weak_augmentation", "strong_augmentation", "pseudo_semantic_fn"]
        )
        # Store what rebuilds the same network: ChangeTrainer.load_from_checkpoint (and the
        # predictor) reads these, so the DiffMatch heads must be part of model_kwargs.
        self.hparams["model_kwargs"] = merged_kwargs
        loss = kwargs.get("loss")
        if loss is None or isinstance(loss, str):
            self.hparams["loss"] = loss
        self.method: Method = method
        self.pseudo_num_classes = pseudo_num_classes
        self.change_classes = tuple(classes)
        self.ceg_kwargs = dict(ceg_kwargs or {})
        self.weak_augmentation = weak_augmentation or _default_weak_augmentation()
        self.strong_augmentation = strong_augmentation or StrongPhotometric()
        self.pseudo_semantic_fn = pseudo_semantic_fn
        self.contrastive_loss = BatchBalancedContrastiveLoss(margin=contrastive_margin)
        if feature_dropout > 0 and not isinstance(getattr(self.model, "decoder", None), nn.Module):
            raise ConfigurationError(
                "feature_dropout > 0 needs a model with a 'decoder' module (its inputs are the "
                f"perturbed features); {type(self.model).__name__} has none"
            )

    # ------------------------------------------------------------------ schedules
    def generated_weight(self) -> float:
        """Current ``lambda`` of the generated-label terms (linear schedule over steps).

        Returns:
            The weight at the current global step.
        """
        steps = self.hparams.get("generated_weight_steps")
        if steps is None:
            steps = 0
            if self._trainer is not None:
                estimated = self.trainer.estimated_stepping_batches
                steps = int(estimated) if math.isfinite(estimated) else 0
        return linear_schedule(
            int(self.global_step) if self._trainer is not None else 0,
            start=float(self.hparams["generated_weight_start"]),
            end=float(self.hparams["generated_weight_end"]),
            steps=int(steps),
        )

    # ------------------------------------------------------------------ checkpoints
    _AUGMENTATION_PREFIXES = ("weak_augmentation.", "strong_augmentation.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the metadata and drop the augmentation buffers from the saved weights.

        Kornia keeps its sampling ranges as buffers; they are configuration, not learned
        weights, and leaving them out lets the plain :class:`ChangeTrainer` (and so the
        predictor) load a semi-supervised checkpoint.

        Args:
            checkpoint: The checkpoint dict being saved.
        """
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key in [k for k in state if k.startswith(self._AUGMENTATION_PREFIXES)]:
                del state[key]

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights; augmentation buffers missing from the checkpoint keep their values.

        Args:
            state_dict: Saved weights.
            strict: Require every other key to match.
            assign: See :meth:`torch.nn.Module.load_state_dict`.

        Returns:
            The missing and unexpected keys, as :meth:`torch.nn.Module.load_state_dict`.
        """
        merged = dict(state_dict)
        for key, value in super().state_dict().items():
            if key.startswith(self._AUGMENTATION_PREFIXES):
                merged.setdefault(key, value)
        return super().load_state_dict(merged, strict=strict, assign=assign)

    # ------------------------------------------------------------------ pseudo labels
    def _pseudo_semantic(self, batch: Mapping[str, Any], what: str) -> tuple[Tensor, Tensor]:
        """Per-date pseudo semantic maps of a batch (keys, then ``pseudo_semantic_fn``)."""
        for pre_key, post_key in ((PSEUDO_PRE, PSEUDO_POST), ("mask_pre", "mask_post")):
            if pre_key in batch and post_key in batch:
                pre, post = batch[pre_key], batch[post_key]
                break
        else:
            if self.pseudo_semantic_fn is None:
                raise DataError(
                    f"method='diffmatch' needs per-date pseudo semantic maps for the {what} "
                    f"batch: keys '{PSEUDO_PRE}'/'{PSEUDO_POST}' or 'mask_pre'/'mask_post', or "
                    f"pseudo_semantic_fn; batch keys: {sorted(batch)}"
                )
            pre, post = self.pseudo_semantic_fn(batch)
        image = batch["image"]
        expected = (image.shape[0], *image.shape[-2:])
        for name, value in (("pre", pre), ("post", post)):
            if not isinstance(value, Tensor) or tuple(value.shape) != expected:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value)
                raise DataError(
                    f"pseudo semantic map ({name}, {what} batch) must be [B, H, W] = {expected}, "
                    f"got {shape}"
                )
        pre, post = pre.long(), post.long()
        ignore = self.ignore_index
        for name, value in (("pre", pre), ("post", post)):
            valid = value[value != ignore]
            if valid.numel() and (
                int(valid.min()) < 0 or int(valid.max()) >= self.pseudo_num_classes
            ):
                raise DataError(
                    f"pseudo semantic map ({name}, {what} batch) holds classes outside "
                    f"0..{self.pseudo_num_classes - 1} (pseudo_num_classes) and {ignore}"
                )
        return pre, post

    def _generated_labels(self, pre: Tensor, post: Tensor) -> Tensor:
        from geochange.pseudo import change_event_generation_batch

        kwargs = {"ignore_index": self.ignore_index, **self.ceg_kwargs}
        labels = change_event_generation_batch(
            pre, post, change_classes=self.change_classes, **kwargs
        )
        return cast(Tensor, labels)

    def _weak_view(
        self, batch: Mapping[str, Any], semantic: tuple[Tensor, Tensor] | None
    ) -> dict[str, Tensor]:
        """Weak view: one geometry for both dates, the pseudo maps and precomputed CEG labels."""
        view: dict[str, Tensor] = {"image": batch["image"].float()}
        image = view["image"]
        # ChangeAugmentation moves the masks it knows with the image; reuse its keys.
        view["mask"] = (
            batch[PSEUDO_CHANGE].long()
            if PSEUDO_CHANGE in batch
            else torch.zeros(
                image.shape[0], *image.shape[-2:], dtype=torch.long, device=image.device
            )
        )
        # Marks pixels that stay inside the image (crops never pad, but custom augmentations may).
        if semantic is not None:
            view["mask_pre"], view["mask_post"] = semantic
        augmented = self.weak_augmentation.to(image.device)(view)
        out = {"image": augmented["image"]}
        if PSEUDO_CHANGE in batch:
            out[PSEUDO_CHANGE] = augmented["mask"]
        if semantic is not None:
            out[PSEUDO_PRE], out[PSEUDO_POST] = augmented["mask_pre"], augmented["mask_post"]
        return out

    @contextmanager
    def _feature_perturbation(self, probability: float) -> Iterator[None]:
        """Channel dropout on the decoder inputs while the context is active (UniMatch FP)."""
        decoder = cast(nn.Module, self.model.decoder)

        def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            features = args[0]
            if isinstance(features, (list, tuple)):
                dropped = [F.dropout2d(f, probability, training=True) for f in features]
                return (dropped, *args[1:])
            return (F.dropout2d(features, probability, training=True), *args[1:])

        handle = decoder.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # ------------------------------------------------------------------ training
    def _supervised_change_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        result = self.loss_fn(logits, target)
        if isinstance(result, Mapping):
            return cast(Tensor, result["loss"])
        if isinstance(result, tuple):
            return cast(Tensor, result[0])
        return cast(Tensor, result)

    def _forward_views(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """One forward over views of equal size (BatchNorm sees them together), else several."""
        if all(img.shape[1:] == images[0].shape[1:] for img in images):
            sizes = [img.shape[0] for img in images]
            outputs = self(torch.cat(images))
            split: list[dict[str, Tensor]] = [{} for _ in images]
            for key, value in outputs.items():
                for index, part in enumerate(value.split(sizes)):
                    split[index][key] = part
            return split
        return [self(img) for img in images]

    def semi_supervised_losses(
        self, labeled: Mapping[str, Any], unlabeled: Mapping[str, Any]
    ) -> dict[str, Tensor]:
        """All loss terms of one semi-supervised step (also usable outside Lightning).

        Args:
            labeled: Normalized (and augmented) labeled batch: ``image``, ``mask`` (+ pseudo
                semantic maps for DiffMatch).
            unlabeled: Normalized unlabeled batch: ``image`` (+ pseudo semantic maps).

        Returns:
            ``{"loss": total, <term>: value, ...}``.

        Raises:
            DataError: On malformed batches or missing pseudo semantic maps (DiffMatch).
        """
        self._check_batch(labeled)
        image_u = unlabeled.get("image")
        if (
            not isinstance(image_u, Tensor)
            or image_u.dim() != 5
            or image_u.shape[1:3]
            != (
                2,
                self.in_channels,
            )
        ):
            shape = tuple(image_u.shape) if isinstance(image_u, Tensor) else type(image_u)
            raise DataError(
                f"unlabeled batch 'image' must be [B, 2, {self.in_channels}, H, W], got {shape}"
            )
        hp = self.hparams
        diffmatch = self.method == "diffmatch"
        threshold = float(hp["confidence_threshold"])
        ignore = self.ignore_index

        semantic_l = self._pseudo_semantic(labeled, "labeled") if diffmatch else None
        semantic_u = self._pseudo_semantic(unlabeled, "unlabeled") if diffmatch else None
        weak = self._weak_view(unlabeled, semantic_u)

        out_l, out_w = self._forward_views([labeled["image"].float(), weak["image"]])
        terms: dict[str, Tensor] = {}
        terms["sup"] = self._supervised_change_loss(out_l[CHANGE], labeled["mask"])

        with torch.no_grad():
            probability = out_w[CHANGE][:, 0].detach().float().sigmoid()
            pseudo = (probability > 0.5).long()
            confidence = torch.maximum(probability, 1 - probability)

        # Strong view of the weak view, then CutMix between pairs of the batch.
        batch_u = weak["image"].shape[0]
        height, width = weak["image"].shape[-2:]
        boxes = cutmix_boxes(
            batch_u,
            height,
            width,
            probability=float(hp["cutmix_probability"]),
            area=tuple(hp["cutmix_area"]),
            device=weak["image"].device,
        )
        partner = torch.randperm(batch_u, device=weak["image"].device)
        strong_image = apply_cutmix(self.strong_augmentation(weak["image"]), boxes, partner)
        pseudo_s = apply_cutmix(pseudo, boxes, partner)
        confidence_s = apply_cutmix(confidence, boxes, partner)
        out_s = self(strong_image)
        loss_strong = confidence_weighted_bce(out_s[CHANGE], pseudo_s, confidence_s, threshold)
        terms["confident_fraction"] = (confidence >= threshold).float().mean()

        dropout = float(hp["feature_dropout"])
        if dropout > 0:
            with self._feature_perturbation(dropout):
                out_fp = self(weak["image"])
            terms["feature_perturbation"] = confidence_weighted_bce(
                out_fp[CHANGE], pseudo, confidence, threshold
            )
            share = float(hp["feature_perturbation_share"])
            terms["unsup"] = (1 - share) * loss_strong + share * terms["feature_perturbation"]
        else:
            terms["unsup"] = loss_strong
        total = (terms["sup"] + float(hp["unsupervised_weight"]) * terms["unsup"]) / 2

        if not diffmatch:
            terms["loss"] = total
            return terms
        assert semantic_l is not None and semantic_u is not None

        # Metric-aware contrastive loss on the auxiliary branches' feature distance.
        contrastive_weight = float(hp["contrastive_weight"])
        if contrastive_weight > 0:
            self._require(out_l, FEATURE_DISTANCE)
            terms["contrast_sup"] = self.contrastive_loss(out_l[FEATURE_DISTANCE], labeled["mask"])
            confident_pseudo = torch.where(
                confidence_s >= threshold, pseudo_s, torch.full_like(pseudo_s, ignore)
            )
            terms["contrast_unsup"] = self.contrastive_loss(
                out_s[FEATURE_DISTANCE], confident_pseudo
            )
            total = (
                total + contrastive_weight * (terms["contrast_sup"] + terms["contrast_unsup"]) / 2
            )

        # Generated-label head and auxiliary semantic decoders on labeled, weak, strong views.
        generated_l = (
            labeled[PSEUDO_CHANGE].long()
            if PSEUDO_CHANGE in labeled
            else self._generated_labels(*semantic_l)
        )
        generated_w = (
            weak[PSEUDO_CHANGE]
            if PSEUDO_CHANGE in weak
            else self._generated_labels(weak[PSEUDO_PRE], weak[PSEUDO_POST])
        )
        views = {
            "labeled": (out_l, generated_l, semantic_l),
            "weak": (out_w, generated_w, (weak[PSEUDO_PRE], weak[PSEUDO_POST])),
            "strong": (
                out_s,
                apply_cutmix(generated_w, boxes, partner),
                (
                    apply_cutmix(weak[PSEUDO_PRE], boxes, partner),
                    apply_cutmix(weak[PSEUDO_POST], boxes, partner),
                ),
            ),
        }
        guidance = total.new_zeros(())
        for name, (outputs, generated, (sem_pre, sem_post)) in views.items():
            self._require(outputs, CHANGE_GENERATED)
            self._require(outputs, AUX_SEMANTIC_PRE)
            terms[f"generated_{name}"] = self._supervised_change_loss(
                outputs[CHANGE_GENERATED], generated
            )
            terms[f"aux_semantic_{name}"] = (
                masked_cross_entropy(outputs[AUX_SEMANTIC_PRE], sem_pre, ignore)
                + masked_cross_entropy(outputs[AUX_SEMANTIC_POST], sem_post, ignore)
            ) / 2
            guidance = guidance + terms[f"generated_{name}"] + terms[f"aux_semantic_{name}"]
        weight = self.generated_weight()
        terms["generated_weight"] = total.new_tensor(weight)
        terms["loss"] = total + weight / 6 * guidance
        return terms

    def _require(self, outputs: Mapping[str, Tensor], key: str) -> None:
        if key not in outputs:
            raise ConfigurationError(
                f"method='diffmatch' needs model output {key!r} (got {sorted(outputs)}); build a "
                "siamese model with dual_head=True, aux_semantic=True and num_classes, or use "
                "method='fixmatch'"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One semi-supervised step on ``{"labeled": ..., "unlabeled": ...}`` batches.

        Args:
            batch: Combined batch (or a plain labeled batch for a supervised step).
            batch_idx: Index of the batch.

        Returns:
            The total loss.
        """
        if not (isinstance(batch, Mapping) and "labeled" in batch and "unlabeled" in batch):
            return super().training_step(batch, batch_idx)
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        terms = self.semi_supervised_losses(labeled, unlabeled)
        batch_size = int(labeled["image"].shape[0])
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            if name == "loss" or value.numel() != 1:
                continue
            # Diagnostics (confident fraction, lambda) are not loss terms.
            key = f"train/{name}" if name in _DIAGNOSTICS else f"train/loss_{name}"
            self.log(key, value.detach(), batch_size=batch_size)
        return terms["loss"]

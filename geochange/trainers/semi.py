"""Semi-supervised change detection: FixMatch/UniMatch consistency and DiffMatch guidance.

:class:`SemiSupervisedChangeTrainer` extends :class:`~geochange.trainers.ChangeTrainer` with an
unlabeled branch. Each training batch is ``{"labeled": batch, "unlabeled": batch}`` (what
``ChangeDataModule(labeled_fraction=..., combine_unlabeled=True)`` yields through Lightning's
``CombinedLoader``); validation, test, prediction and checkpoints are those of the parent, so
:class:`geochange.predict.ChangePredictor` loads the result like any other checkpoint.

Per step: a weak (geometric) view of the unlabeled pairs gives pseudo labels, with
class-aware confidence thresholds; a strong (photometric + CutMix) view learns them; DiffMatch
adds the generated-label head, the auxiliary semantic decoders and the contrastive loss (see
``docs/semi_supervised.md``). Diagnostics (:mod:`geochange.trainers.semi_diagnostics`) are
logged next to every loss term.

Total loss (DiffMatch): ``(L_sup + w_u L_unsup) / 2 + w_c (L_c,sup + L_c,unsup) / 2 +
lambda_t / 6 * (G_lab + G_weak + G_strong + S_lab + S_weak + S_strong)``, ``lambda_t`` linear
from ``generated_weight_start`` to ``generated_weight_end`` (the docs page has the detail).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from geochange.errors import ConfigurationError, DataError
from geochange.keys import (
    AUX_SEMANTIC_POST,
    AUX_SEMANTIC_PRE,
    CHANGE,
    CHANGE_GENERATED,
    DIAGNOSTIC_CHANGE,
    FEATURE_DISTANCE,
    PSEUDO_CHANGE,
    PSEUDO_POST,
    PSEUDO_PRE,
)
from geochange.losses import BatchBalancedContrastiveLoss
from geochange.losses.consistency import (
    ConsistencyOptions,
    aux_semantic_loss,
    confidence_weighted_bce,
    confident_labels,
    generated_label_bce,
    pseudo_label_thresholds,
    weak_pseudo_labels,
)
from geochange.trainers.batches import check_pseudo_semantic, check_unlabeled_image
from geochange.trainers.change import ChangeTrainer, _patch_size_argument
from geochange.trainers.schedules import (
    estimated_total_steps,
    linear_schedule,
    with_head_lr_multiplier,
)
from geochange.trainers.semi_diagnostics import (
    DIAGNOSTICS,
    generated_head_diagnostics,
    pseudo_label_diagnostics,
)
from geochange.trainers.semi_views import GuidanceView, StrongView, guidance_views, weak_view
from geochange.transforms import ChangeAugmentation
from geochange.transforms.cutmix import apply_cutmix, cutmix_boxes
from geochange.transforms.views import (
    StrongPhotometric,
    decoder_feature_dropout,
    default_weak_augmentation,
)

__all__ = [
    "PSEUDO_CHANGE",
    "PSEUDO_POST",
    "PSEUDO_PRE",
    "ConsistencyOptions",
    "SemiSupervisedChangeTrainer",
    "StrongPhotometric",
    "apply_cutmix",
    "confidence_weighted_bce",
    "cutmix_boxes",
    "linear_schedule",
]


Method = Literal["fixmatch", "diffmatch"]
SemanticFn = Callable[[Mapping[str, Any]], tuple[Tensor, Tensor]]


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
    ``siam_diff``, ``siam_conc``, ``fusion_unet``). Every loss term is logged as
    ``train/loss_<term>``, every diagnostic (:data:`~.semi_diagnostics.DIAGNOSTICS`) as
    ``train/<name>``.

    Example:
        >>> dm = ChangeDataModule(pre, post, change, semantic_pre=seg_pre,  # doctest: +SKIP
        ...     semantic_post=seg_post, labeled_fraction=0.05, combine_unlabeled=True)
        >>> module = SemiSupervisedChangeTrainer("siam_diff", method="diffmatch")  # doctest: +SKIP
        >>> lightning.pytorch.Trainer(max_epochs=50).fit(module, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | nn.Module = "siam_diff",
        backbone: str | None = None,
        weights: str | None = None,
        in_channels: int = 3,
        *,
        method: Method = "diffmatch",
        pseudo_num_classes: int = 7,
        change_classes: Sequence[int] = (0,),
        ceg_kwargs: dict[str, Any] | None = None,
        confidence_threshold: float = 0.95,
        change_confidence_threshold: float | None = None,
        balance_pseudo_labels: bool = False,
        unsupervised_weight: float = 1.0,
        contrastive_weight: float = 0.1,
        contrastive_margin: float = 2.0,
        generated_weight_start: float = 1.0,
        generated_weight_end: float = 0.0,
        generated_weight_steps: int | None = None,
        generated_loss: Literal["bce", "change_loss"] = "change_loss",
        head_lr_multiplier: float = 1.0,
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
            backbone: smp encoder name; ``None`` keeps the model's default.
            weights: Pretrained encoder weights or ``None``.
            in_channels: Bands per date.
            method: ``"fixmatch"`` or ``"diffmatch"``.
            pseudo_num_classes: Classes ``K`` of the per-date pseudo semantic maps (DiffMatch
                auxiliary decoders); default the 7 LsSCD classes.
            change_classes: Class id(s) whose appearance / disappearance is change for CEG
                (default ``(0,)``, LsSCD building).
            ceg_kwargs: Further :func:`geochange.pseudo.change_event_generation` arguments
                (``mode``, ``min_instance_pixels``, ``overlap_threshold``, ...).
            confidence_threshold: Weak-view confidence needed for a "no change" pseudo label
                (0.95), and for a change label when ``change_confidence_threshold`` is None.
            change_confidence_threshold: Class-aware threshold of the pixels the weak view
                calls change (``None``, the default: ``confidence_threshold``; e.g. 0.8).
            balance_pseudo_labels: Change-balanced ``L_unsup``: the confident change and "no
                change" pixels weigh the same (the mean of the two classes' mean BCE).
            unsupervised_weight: ``w_u`` in the total loss.
            contrastive_weight: ``w_c`` in the total loss (0.1; 0 disables the term).
            contrastive_margin: Margin of the batch-balanced contrastive loss (2.0).
            generated_weight_start: ``lambda`` at step 0 (1.0; DiffMatch's released setting is 0.1).
            generated_weight_end: ``lambda`` after ``generated_weight_steps``.
            generated_weight_steps: Length of the linear ``lambda`` ramp in optimizer steps
                (default: the estimated training steps).
            generated_loss: Loss of the generated-label head: ``"change_loss"`` (the trainer's
                ``loss``, over decided pixels; the behaviour before issue 22) or ``"bce"``
                (DiffMatch's cross-entropy; on unlabeled views divided by all pixels).
            head_lr_multiplier: Learning rate of everything but the encoder (fusion, decoders,
                heads) relative to ``lr`` (DiffMatch: 10 with SGD).
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
        if generated_loss not in ("bce", "change_loss"):
            raise ConfigurationError(
                f"generated_loss must be 'bce' or 'change_loss', got {generated_loss!r}"
            )
        if head_lr_multiplier <= 0:
            raise ConfigurationError(f"head_lr_multiplier must be > 0, got {head_lr_multiplier}")
        ConsistencyOptions(
            confidence_threshold=confidence_threshold,
            change_confidence_threshold=change_confidence_threshold,
            balance_pseudo_labels=balance_pseudo_labels,
            unsupervised_weight=unsupervised_weight,
            contrastive_weight=contrastive_weight,
            generated_weight_start=generated_weight_start,
            generated_weight_end=generated_weight_end,
            feature_dropout=feature_dropout,
            feature_perturbation_share=feature_perturbation_share,
            cutmix_probability=cutmix_probability,
            cutmix_area=cutmix_area,
        )
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
        if "tile_size" in kwargs:  # deprecated name; saved (below) as patch_size
            tile_size = kwargs.pop("tile_size")
            kwargs["patch_size"] = _patch_size_argument(kwargs.get("patch_size"), tile_size)
        super().__init__(
            model=model,
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,
            model_kwargs=merged_kwargs,
            **kwargs,
        )
        ignore = ["loss", "weak_augmentation", "strong_augmentation", "pseudo_semantic_fn"]
        self.save_hyperparameters(
            ignore=["model", *ignore] if isinstance(model, nn.Module) else ignore
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
        from geochange.pseudo.ceg import _ceg_kwargs  # numpy/scipy/rasterio: on first use

        self.ceg_kwargs = _ceg_kwargs(ceg_kwargs)
        self.weak_augmentation = weak_augmentation or default_weak_augmentation()
        self.strong_augmentation = strong_augmentation or StrongPhotometric()
        self.pseudo_semantic_fn = pseudo_semantic_fn
        if feature_dropout > 0 and not isinstance(getattr(self.model, "decoder", None), nn.Module):
            raise ConfigurationError(
                "feature_dropout > 0 needs a model with a 'decoder' module (its inputs are the "
                f"perturbed features); {type(self.model).__name__} has none"
            )

    # ------------------------------------------------------------------ task shape
    def configure_losses(self, loss: str | nn.Module | None, kwargs: dict[str, Any]) -> None:
        """Set the supervised change loss and the batch-balanced contrastive loss.

        Args:
            loss: See :class:`ChangeTrainer`.
            kwargs: ``loss_kwargs``.
        """
        super().configure_losses(loss, kwargs)
        # Called from ChangeTrainer.__init__: Lightning has already saved this class's
        # arguments too, so contrastive_margin is in hparams.
        margin = float(self.hparams["contrastive_margin"])
        self.contrastive_loss = BatchBalancedContrastiveLoss(margin=margin)

    def configure_optimizers(self) -> Any:
        """The parent's AdamW and schedule, with ``head_lr_multiplier`` on all but the encoder.

        Returns:
            Lightning optimizer configuration.
        """
        return with_head_lr_multiplier(
            super().configure_optimizers(),
            self,
            getattr(self.model, "encoder", None),
            float(self.hparams.get("head_lr_multiplier", 1.0)),
        )

    # ------------------------------------------------------------------ schedules
    def generated_weight(self) -> float:
        """Current ``lambda`` of the generated-label terms (linear schedule over steps).

        Returns:
            The weight at the current global step.
        """
        steps = self.hparams.get("generated_weight_steps")
        if steps is None:
            steps = estimated_total_steps(self)
        return linear_schedule(
            int(self.global_step) if self._trainer is not None else 0,
            start=float(self.hparams["generated_weight_start"]),
            end=float(self.hparams["generated_weight_end"]),
            steps=int(steps),
        )

    # ------------------------------------------------------------------ checkpoints
    # Kornia keeps its sampling ranges as buffers; they are configuration, not learned weights,
    # and leaving them out lets the plain ChangeTrainer (and so the predictor) load a
    # semi-supervised checkpoint (see CheckpointLoading).
    _UNSAVED_PREFIXES = ("weak_augmentation.", "strong_augmentation.")

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
        return check_pseudo_semantic(
            pre, post, batch["image"], what, self.pseudo_num_classes, self.ignore_index
        )

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
        return weak_view(self.weak_augmentation, batch, semantic)

    def _feature_perturbation(self, probability: float) -> AbstractContextManager[None]:
        """Channel dropout on the decoder inputs while the context is active (UniMatch FP)."""
        return decoder_feature_dropout(cast(nn.Module, self.model.decoder), probability)

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

        The phases, in the order they draw random numbers: views and forward passes,
        weak-to-strong consistency (:meth:`_consistency_terms`), then for DiffMatch the
        contrastive (:meth:`_contrastive_terms`) and guidance (:meth:`_guidance_terms`) terms.

        Args:
            labeled: Normalized (and augmented) labeled batch: ``image``, ``mask`` (+ pseudo
                semantic maps for DiffMatch).
            unlabeled: Normalized unlabeled batch: ``image`` (+ pseudo semantic maps).

        Returns:
            ``{"loss": total, <term>: value, ...}``.

        Raises:
            DataError: On malformed batches or missing pseudo semantic maps (DiffMatch).
        """
        labeled = self._check_batch(labeled)
        check_unlabeled_image(unlabeled.get("image"), self.in_channels)
        options = ConsistencyOptions.from_hparams(self.hparams)
        diffmatch = self.method == "diffmatch"

        semantic_l = self._pseudo_semantic(labeled, "labeled") if diffmatch else None
        semantic_u = self._pseudo_semantic(unlabeled, "unlabeled") if diffmatch else None
        weak = self._weak_view(unlabeled, semantic_u)

        out_l, out_w = self._forward_views([labeled["image"].float(), weak["image"]])
        terms: dict[str, Tensor] = {}
        terms["sup"] = self._supervised_change_loss(out_l[CHANGE], labeled["mask"])
        pseudo, confidence = weak_pseudo_labels(out_w[CHANGE])
        strong = self._strong_view(weak["image"], pseudo, confidence, options)
        total = self._consistency_terms(terms, weak, pseudo, confidence, strong, options)
        if not diffmatch:
            terms["loss"] = total
            return terms
        assert semantic_l is not None
        total = self._contrastive_terms(terms, total, out_l, labeled["mask"], strong, options)
        views = self._guidance_views(labeled, semantic_l, weak, out_l, out_w, strong)
        terms["loss"] = self._guidance_terms(terms, total, views)
        return terms

    def _strong_view(
        self, weak_image: Tensor, pseudo: Tensor, confidence: Tensor, options: ConsistencyOptions
    ) -> StrongView:
        """Strong view of the weak view, CutMix between pairs of the batch, and its forward."""
        batch_size = weak_image.shape[0]
        height, width = weak_image.shape[-2:]
        boxes = cutmix_boxes(
            batch_size,
            height,
            width,
            probability=options.cutmix_probability,
            area=options.cutmix_area,
            device=weak_image.device,
        )
        partner = torch.randperm(batch_size, device=weak_image.device)
        image = apply_cutmix(self.strong_augmentation(weak_image), boxes, partner)
        pseudo_s = apply_cutmix(pseudo, boxes, partner)
        confidence_s = apply_cutmix(confidence, boxes, partner)
        return StrongView(boxes, partner, pseudo_s, confidence_s, self(image))

    def _consistency_terms(
        self,
        terms: dict[str, Tensor],
        weak: Mapping[str, Tensor],
        pseudo: Tensor,
        confidence: Tensor,
        strong: StrongView,
        options: ConsistencyOptions,
    ) -> Tensor:
        """FixMatch / UniMatch terms into ``terms``; returns ``(L_sup + w_u * L_unsup) / 2``."""
        threshold = pseudo_label_thresholds(
            pseudo, options.confidence_threshold, options.change_confidence_threshold
        )
        balance = options.balance_pseudo_labels
        loss_strong = confidence_weighted_bce(
            strong.outputs[CHANGE],
            strong.pseudo,
            strong.confidence,
            strong.mix(threshold),
            balance=balance,
        )
        terms.update(
            pseudo_label_diagnostics(
                pseudo, confidence, threshold, weak.get(DIAGNOSTIC_CHANGE), self.ignore_index
            )
        )
        dropout = options.feature_dropout
        if dropout > 0:
            with self._feature_perturbation(dropout):
                out_fp = self(weak["image"])
            terms["feature_perturbation"] = confidence_weighted_bce(
                out_fp[CHANGE], pseudo, confidence, threshold, balance=balance
            )
            share = options.feature_perturbation_share
            terms["unsup"] = (1 - share) * loss_strong + share * terms["feature_perturbation"]
        else:
            terms["unsup"] = loss_strong
        return (terms["sup"] + options.unsupervised_weight * terms["unsup"]) / 2

    def _contrastive_terms(
        self,
        terms: dict[str, Tensor],
        total: Tensor,
        out_l: Mapping[str, Tensor],
        mask: Tensor,
        strong: StrongView,
        options: ConsistencyOptions,
    ) -> Tensor:
        """Metric-aware contrastive loss on the auxiliary branches' feature distance."""
        weight = options.contrastive_weight
        if weight <= 0:
            return total
        self._require(out_l, FEATURE_DISTANCE)
        terms["contrast_sup"] = self.contrastive_loss(out_l[FEATURE_DISTANCE], mask)
        threshold = pseudo_label_thresholds(
            strong.pseudo, options.confidence_threshold, options.change_confidence_threshold
        )
        confident = confident_labels(strong.pseudo, strong.confidence, threshold, self.ignore_index)
        terms["contrast_unsup"] = self.contrastive_loss(strong.outputs[FEATURE_DISTANCE], confident)
        return total + weight * (terms["contrast_sup"] + terms["contrast_unsup"]) / 2

    def _guidance_views(
        self,
        labeled: Mapping[str, Any],
        semantic_l: tuple[Tensor, Tensor],
        weak: Mapping[str, Tensor],
        out_l: dict[str, Tensor],
        out_w: dict[str, Tensor],
        strong: StrongView,
    ) -> dict[str, GuidanceView]:
        """Outputs, CEG labels and pseudo semantic maps of the labeled, weak and strong views."""
        return guidance_views(
            labeled, semantic_l, weak, out_l, out_w, strong, self._generated_labels
        )

    def _guidance_terms(
        self,
        terms: dict[str, Tensor],
        total: Tensor,
        views: Mapping[str, GuidanceView],
    ) -> Tensor:
        """Generated-label head and auxiliary semantic decoders; returns the DiffMatch total."""
        guidance = total.new_zeros(())
        for name, (outputs, generated, (sem_pre, sem_post)) in views.items():
            self._require(outputs, CHANGE_GENERATED)
            self._require(outputs, AUX_SEMANTIC_PRE)
            terms[f"generated_{name}"] = self._generated_loss(
                outputs[CHANGE_GENERATED], generated, over_all=name != "labeled"
            )
            terms[f"aux_semantic_{name}"] = aux_semantic_loss(
                outputs[AUX_SEMANTIC_PRE],
                outputs[AUX_SEMANTIC_POST],
                sem_pre,
                sem_post,
                self.ignore_index,
            )
            guidance = guidance + terms[f"generated_{name}"] + terms[f"aux_semantic_{name}"]
        outputs_w, generated_w, _ = views["weak"]
        terms.update(
            generated_head_diagnostics(outputs_w[CHANGE_GENERATED], outputs_w[CHANGE], generated_w)
        )
        weight = self.generated_weight()
        terms["generated_weight"] = total.new_tensor(weight)
        return total + weight / 6 * guidance

    def _generated_loss(self, logits: Tensor, generated: Tensor, *, over_all: bool) -> Tensor:
        if self.hparams.get("generated_loss", "change_loss") == "bce":
            return generated_label_bce(logits, generated, self.ignore_index, over_all=over_all)
        return self._supervised_change_loss(logits, generated)

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
            key = f"train/{name}" if name in DIAGNOSTICS else f"train/loss_{name}"
            self.log(key, value.detach(), batch_size=batch_size)
        return terms["loss"]

"""The :class:`ChangeTrainer` LightningModule: binary and semantic change detection."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from geochange.checkpoint import CheckpointMetadata, write_metadata
from geochange.classes import IGNORE_INDEX, LSSCD_CLASS_NAMES
from geochange.errors import ConfigurationError, NormalizationWarning
from geochange.keys import CHANGE, MASK, MASK_POST, MASK_PRE, to_mask_layout
from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics
from geochange.trainers.batches import (
    check_change_batch,
    check_datamodule,
    datamodule_records,
    input_range_record,
    normalization_record,
)
from geochange.trainers.figures import log_prediction_figure
from geochange.trainers.loading import CheckpointLoading, _patch_size_argument
from geochange.trainers.schedules import estimated_total_steps, lr_factor

__all__ = ["LSSCD_CLASS_NAMES", "ChangeTrainer", "lr_factor"]


#: Loss names accepted by ``ChangeTrainer(loss=...)`` per task.

Task = Literal["binary", "semantic"]


class ChangeTrainer(CheckpointLoading):
    """Train and evaluate a bi-temporal change model (binary or semantic change detection).

    Drive it with a Lightning ``Trainer`` (or ``geochange fit --config``) and a
    :class:`geochange.datamodules.ChangeDataModule`; batches are dicts with ``image``
    ``[B, 2, C, H, W]`` (normalized), ``mask`` ``[B, H, W]`` (0/1 change, ``ignore_index``) and,
    for ``task="semantic"``, ``mask_pre`` / ``mask_post`` ``[B, H, W]`` class maps.

    Validation and test log ``{stage}/iou_change``, ``f1``, ``precision``, ``recall``, ``oa``,
    ``kappa`` (plus ``miou``, ``sek``, ``fscd`` and ``{stage}/iou/<class name>`` for the semantic
    task) computed by :mod:`geochange.metrics` over the whole epoch and across processes. Every
    ``plot_every_n_epochs`` validation epochs a figure (pre | post | truth | prediction) is
    logged to the TensorBoard / MLflow logger.

    Checkpoints carry ``checkpoint["geochange"]`` (see
    :func:`geochange.trainers.read_checkpoint_metadata`) so
    :class:`geochange.predict.ChangePredictor` can rebuild the model, bands, normalization and
    tile size offline.

    Example:
        >>> module = ChangeTrainer(model="fusion_unet", backbone="resnet18")  # doctest: +SKIP
        >>> lightning.pytorch.Trainer(max_epochs=10).fit(module, datamodule=dm)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | nn.Module = "fusion_unet",
        backbone: str | None = None,
        weights: str | None = None,
        in_channels: int = 3,
        task: Task = "binary",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        loss: str | nn.Module | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        ignore_index: int = IGNORE_INDEX,
        threshold: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: Literal["cosine", "poly", "none"] = "cosine",
        warmup_steps: int = 0,
        poly_power: float = 0.9,
        min_lr_ratio: float = 0.01,
        freeze_backbone: bool = False,
        normalization: dict[str, list[float]] | None = None,
        bands: Sequence[int | str] | None = None,
        patch_size: int | None = None,
        input_range: dict[str, Any] | None = None,
        plot_every_n_epochs: int = 5,
        plot_samples: int = 4,
        compile_model: bool = False,
        channels_last: bool = False,
        tile_size: int | None = None,
    ) -> None:
        """Build the model, loss and metrics.

        Args:
            model: Registry name for :func:`geochange.models.build_model` (``"fusion_unet"``,
                ``"siam_diff"``, ``"siam_conc"``, ``"semantic_change"``, ...) or a user
                ``nn.Module`` following the model contract (``forward(x [B, 2, C, H, W]) ->
                {"change": [B, 1, H, W], ...}``).
            backbone: smp encoder name (ignored for a user module); ``None`` keeps the
                model's default (``"resnet18"``; ``"mit_b0"`` for ``changeformer``).
            weights: Pretrained encoder weights (``"imagenet"`` or a local path), ``None`` for
                random init.
            in_channels: Bands per date; checked against the data.
            task: ``"binary"`` (change / no change) or ``"semantic"`` (per-date classes + change).
            num_classes: Semantic classes K (required for ``task="semantic"``).
            class_names: Names of the K classes (default: LsSCD names when K == 7, else
                ``class_<i>``).
            loss: Binary: ``"combined_iou"`` (default: BCE + soft IoU), ``"dice"``,
                ``"focal"``, ``"bce"``, ``"iou"``, ``"bce_dice"`` (see
                :func:`geochange.losses.build_change_loss`). Semantic: ``"scd"`` (default:
                :class:`geochange.losses.SCDMultitaskLoss`, CE x2 + change + BSCC + SACL). Or a
                loss module called as ``loss(change_logits, mask)`` (binary) or
                ``loss(outputs, mask, mask_pre, mask_post)`` (semantic), returning a tensor or a
                dict with ``"loss"`` and named terms.
            loss_kwargs: Keyword arguments for the named loss (``pos_weight``; for ``"scd"`` the
                term weights ``semantic_weight``, ``change_weight``, ``bscc_weight``,
                ``sacl_weight``, and SACL settings).
            model_kwargs: Extra keyword arguments for ``build_model``.
            ignore_index: Label value excluded from loss and metrics.
            threshold: Change probability threshold for metrics and figures.
            lr: Peak learning rate of AdamW.
            weight_decay: AdamW weight decay.
            scheduler: ``"cosine"`` or ``"poly"`` decay per step after the linear warm-up, or
                ``"none"`` (constant after warm-up).
            warmup_steps: Linear warm-up steps.
            poly_power: Exponent of the poly schedule.
            min_lr_ratio: Final learning rate as a fraction of ``lr`` (cosine / poly).
            freeze_backbone: Keep the encoder fixed.
            normalization: ``{"mean": [...], "std": [...]}`` to store in checkpoints when no
                datamodule provides it.
            bands: Band indices / names to store in checkpoints when no datamodule provides them.
            patch_size: Training patch size (pixels) to store when no datamodule provides
                it (see docs/glossary.md: the *patch* is the training window).
            input_range: ``{"dtype", "min": [...], "max": [...]}`` of the training imagery
                (raw pixel units) to store when no datamodule provides it (see
                :attr:`geochange.datamodules.ChangeDataModule.input_range`); the predictor
                checks scenes against it.
            plot_every_n_epochs: Log a prediction figure every N validation epochs (0: never).
            plot_samples: Samples per figure.
            compile_model: Run the model through ``torch.compile`` for training.
            channels_last: Use the channels-last memory format (faster convs on GPU).
            tile_size: Deprecated name of ``patch_size`` (a *tile* is the predictor's
                window); accepted for one release with a ``DeprecationWarning``.

        Raises:
            ConfigurationError: On inconsistent arguments (unknown task / loss, missing
                ``num_classes``, class name count mismatch).
        """
        super().__init__()
        patch_size = _patch_size_argument(patch_size, tile_size)
        if task not in ("binary", "semantic"):
            raise ConfigurationError(f"task must be 'binary' or 'semantic', got {task!r}")
        if not 0.0 < threshold < 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1), got {threshold}")
        if task == "semantic" and not num_classes:
            raise ConfigurationError("task='semantic' needs num_classes (the class count K)")
        if task == "binary" and num_classes is not None and not isinstance(model, nn.Module):
            # Binary models have no class head; keep num_classes out of the model arguments.
            num_classes = None
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if num_classes is not None and len(class_names) != num_classes:
                raise ConfigurationError(
                    f"{len(class_names)} class_names given for num_classes={num_classes}"
                )
        elif task == "semantic" and num_classes is not None:
            class_names = (
                list(LSSCD_CLASS_NAMES)
                if num_classes == len(LSSCD_CLASS_NAMES)
                else [f"class_{i}" for i in range(num_classes)]
            )
        self.task: Task = task
        self.ignore_index = ignore_index
        self.class_names = class_names
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.normalization = normalization_record(normalization)
        self._warned_normalization = False
        self.bands = list(bands) if bands is not None else None
        self.patch_size = patch_size
        self.input_range = input_range_record(input_range)
        user_module = isinstance(model, nn.Module)
        # ``tile_size`` is not a hyper-parameter of its own: its value is saved as patch_size.
        ignore = ["model", "loss", "tile_size"] if user_module else ["loss", "tile_size"]
        self.save_hyperparameters(ignore=ignore)
        if isinstance(loss, str) or loss is None:
            self.hparams["loss"] = loss
        # TorchGeo's task shape: model, then losses, then metrics, each its own hook.
        self.configure_models(
            model,
            backbone=backbone,
            weights=weights,
            model_kwargs=model_kwargs or {},
            freeze_backbone=freeze_backbone,
        )
        self.configure_losses(loss, loss_kwargs or {})
        self.configure_metrics()
        self._forward_fn: Callable[[Tensor], Any] | None = None
        self._plot_batch: dict[str, Tensor] | None = None
        self._checked_datamodule = False

    # ------------------------------------------------------------------ task shape (TorchGeo)
    def configure_models(
        self,
        model: str | nn.Module,
        *,
        backbone: str | None,
        weights: str | None,
        model_kwargs: dict[str, Any],
        freeze_backbone: bool,
    ) -> None:
        """Set :attr:`model` (and ``model_name`` / ``model_kwargs``, stored in checkpoints).

        Passed in, not read from ``hparams`` as in TorchGeo: a user module is no hyper-parameter.

        Args:
            model: Registry name or user module (see :meth:`__init__`).
            backbone: smp encoder name.
            weights: Pretrained encoder weights or ``None``.
            model_kwargs: Extra ``build_model`` arguments.
            freeze_backbone: Keep the encoder fixed (a user module needs an ``encoder``).
        """
        if isinstance(model, nn.Module):
            self.model_name = type(model).__name__
            self.model_kwargs: dict[str, Any] = dict(getattr(model, "config", {}) or {})
            self.model = model
            if freeze_backbone:
                self._freeze_user_backbone()
            return
        from geochange.models import build_model

        self.model_name = str(model)
        self.model_kwargs = {
            "backbone": backbone,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            **model_kwargs,
        }
        self.model = build_model(
            self.model_name, weights=weights, freeze_backbone=freeze_backbone, **self.model_kwargs
        )

    def configure_losses(self, loss: str | nn.Module | None, kwargs: dict[str, Any]) -> None:
        """Set :attr:`loss_fn` from a loss name (and its arguments) or a loss module.

        Args:
            loss: See :meth:`__init__`.
            kwargs: ``loss_kwargs``.

        Raises:
            ConfigurationError: For a loss that does not fit the task.
        """
        self.loss_fn = self._build_loss(loss, kwargs)

    def configure_metrics(self) -> None:
        """Set :attr:`val_metrics` and :attr:`test_metrics` (epoch-level, synced across ranks)."""
        self.val_metrics = self._build_metrics()
        self.test_metrics = self._build_metrics()

    def _freeze_user_backbone(self) -> None:
        freeze = getattr(self.model, "freeze_backbone", None)
        if callable(freeze):
            freeze(True)
            return
        encoder = getattr(self.model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ConfigurationError(
                f"freeze_backbone=True but model {type(self.model).__name__} has no 'encoder'"
            )
        encoder.requires_grad_(False)

    def _build_loss(self, loss: str | nn.Module | None, kwargs: dict[str, Any]) -> nn.Module:
        if isinstance(loss, nn.Module):
            return loss
        from geochange.losses import SCDMultitaskLoss, build_change_loss

        name = loss or ("combined_iou" if self.task == "binary" else "scd")
        if self.task == "semantic":
            if name != "scd":
                raise ConfigurationError(
                    f"loss {name!r} is not available for task='semantic'; use 'scd' (or a module)"
                )
            # SACL embeddings have the model's projection size.
            kwargs = {
                "num_classes": self.num_classes,
                "embedding_dim": self.model_kwargs.get("projection_dim", 32),
                "ignore_index": self.ignore_index,
                **kwargs,
            }
            try:
                return SCDMultitaskLoss(**kwargs)
            except TypeError as error:
                raise ConfigurationError(f"invalid loss_kwargs for 'scd': {error}") from error
        if name == "scd":
            raise ConfigurationError("loss 'scd' needs task='semantic'")
        return build_change_loss(name, **{"ignore_index": self.ignore_index, **kwargs})

    def _build_metrics(self) -> BinaryChangeMetrics | SemanticChangeMetrics:
        if self.task == "semantic":
            assert self.num_classes is not None
            return SemanticChangeMetrics(self.num_classes, ignore_index=self.ignore_index)
        return BinaryChangeMetrics(ignore_index=self.ignore_index)

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, stage: str) -> None:
        """Check the attached datamodule agrees with the trainer; set up compile/channels-last.

        Args:
            stage: Lightning stage (``"fit"``, ``"validate"``, ``"test"``, ``"predict"``).

        Raises:
            ConfigurationError: If the datamodule's bands, task or classes disagree.
        """
        datamodule = self._datamodule()
        if datamodule is not None and not self._checked_datamodule:
            check_datamodule(
                datamodule,
                in_channels=self.in_channels,
                task=self.task,
                num_classes=self.num_classes,
            )
            self._checked_datamodule = True
        if self.hparams.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.hparams.get("compile_model") and self._forward_fn is None:
            self._forward_fn = cast(Callable[[Tensor], Any], torch.compile(self.model))

    def _datamodule(self) -> Any:
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Run the model and return its output dict (a bare tensor becomes ``{"change": ...}``).

        Args:
            x: Input ``[B, 2, C, H, W]``.

        Returns:
            The model outputs (``"change"`` logits ``[B, 1, H, W]``, semantic logits, ...).
        """
        if self.hparams.get("channels_last"):
            x = x.contiguous()
        fn = self._forward_fn if (self._forward_fn is not None and self.training) else self.model
        outputs = fn(x)
        if isinstance(outputs, Tensor):
            return {CHANGE: outputs}
        return cast(dict[str, Tensor], outputs)

    def _check_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        # TorchGeo's loaders give [B, 1, H, W] labels: train and score on [B, H, W].
        batch = to_mask_layout(batch, "geochange")
        check_change_batch(
            batch,
            in_channels=self.in_channels,
            task=self.task,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
        )
        return batch

    def _loss(self, outputs: dict[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss; returns ``{"loss": total, <term>: value, ...}``."""
        if self.task == "binary":
            result = self.loss_fn(outputs[CHANGE], batch[MASK])
        else:
            result = self.loss_fn(outputs, batch[MASK], batch[MASK_PRE], batch[MASK_POST])
        if isinstance(result, Tensor):
            return {"loss": result}
        if isinstance(result, Mapping) and "loss" in result:
            return dict(result)
        if isinstance(result, tuple) and len(result) == 2:
            total, terms = result
            return {"loss": total, **dict(terms)}
        raise ConfigurationError(
            f"loss {type(self.loss_fn).__name__} returned {type(result).__name__}; expected a "
            "tensor, a dict with 'loss', or (total, terms)"
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Forward, loss and logging of one training batch.

        Args:
            batch: Batch dict (see class docstring).
            batch_idx: Index of the batch.

        Returns:
            The loss to minimise.
        """
        batch = self._check_batch(batch)
        outputs = self(batch["image"])
        terms = self._loss(outputs, batch)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            if name != "loss" and isinstance(value, Tensor) and value.numel() == 1:
                self.log(f"train/loss_{name}", value, batch_size=batch_size)
        return terms["loss"]

    def _predict_maps(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        threshold_logit = math.log(self.hparams["threshold"] / (1 - self.hparams["threshold"]))
        maps = {"change": (outputs["change"][:, 0] > threshold_logit).long()}
        if self.task == "semantic":
            for key in ("semantic_pre", "semantic_post"):
                if key not in outputs:
                    raise ConfigurationError(
                        f"task='semantic' but the model output has no {key!r} "
                        f"(keys: {sorted(outputs)}); use a semantic model such as 'semantic_change'"
                    )
                maps[key] = outputs[key].argmax(1)
        return maps

    def _eval_step(
        self,
        batch: dict[str, Tensor],
        metrics: BinaryChangeMetrics | SemanticChangeMetrics,
        stage: str,
    ) -> dict[str, Tensor]:
        batch = self._check_batch(batch)
        outputs = self(batch["image"])
        terms = self._loss(outputs, batch)
        batch_size = batch["image"].shape[0]
        self.log(f"{stage}/loss", terms["loss"], sync_dist=True, batch_size=batch_size)
        maps = self._predict_maps(outputs)
        if isinstance(metrics, SemanticChangeMetrics):
            metrics.update(
                maps["semantic_pre"],
                maps["semantic_post"],
                maps["change"],
                batch["mask_pre"],
                batch["mask_post"],
                batch["mask"],
            )
        else:
            metrics.update(maps["change"], batch["mask"])
        return maps

    def _log_metrics(
        self, metrics: BinaryChangeMetrics | SemanticChangeMetrics, stage: str
    ) -> None:
        # compute() already reduced the confusion matrices, so all processes log one value:
        # "max" syncs it exactly and Lightning warns of no missing sync_dist under DDP.
        scores, synced = metrics.compute(), dict[str, Any](sync_dist=True, reduce_fx="max")
        for name, value in scores.items():
            if name == "semantic_iou":
                names = self.class_names or [f"class_{i}" for i in range(value.numel())]
                for class_name, class_iou in zip(names, value, strict=True):
                    self.log(f"{stage}/iou/{class_name}", class_iou.float(), **synced)
            else:
                self.log(f"{stage}/{name}", value.float(), prog_bar=name in ("f1", "sek"), **synced)
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate validation metrics; keep the first batch for the prediction figure.

        Args:
            batch: Batch dict.
            batch_idx: Index of the batch.
        """
        batch = to_mask_layout(batch, "geochange")
        maps = self._eval_step(batch, self.val_metrics, "val")
        if batch_idx == 0 and self._should_plot():
            n = self.hparams["plot_samples"]
            keep: dict[str, Tensor] = {
                key: batch[key][:n].detach()
                for key in ("image", "mask", "mask_pre", "mask_post")
                if key in batch
            }
            keep.update({f"pred_{key}": value[:n].detach() for key, value in maps.items()})
            self._plot_batch = keep

    def _should_plot(self) -> bool:
        every = int(self.hparams.get("plot_every_n_epochs") or 0)
        trainer = self._trainer
        if every <= 0 or trainer is None or trainer.sanity_checking or not self.loggers:
            return False
        return trainer.current_epoch % every == 0 and trainer.is_global_zero

    def on_validation_epoch_end(self) -> None:
        """Log epoch-level validation metrics and the prediction figure."""
        self._log_metrics(self.val_metrics, "val")
        if self._plot_batch is not None:
            self._log_figure(self._plot_batch)
            self._plot_batch = None

    def _log_figure(self, batch: dict[str, Tensor]) -> None:
        log_prediction_figure(
            self.loggers,
            batch,
            step=self.global_step,
            class_names=self.class_names,
            ignore_index=self.ignore_index,
        )

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate test metrics.

        Args:
            batch: Batch dict.
            batch_idx: Index of the batch.
        """
        self._eval_step(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        """Log epoch-level test metrics."""
        self._log_metrics(self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Return change probabilities ``[B, H, W]`` (and class maps for the semantic task).

        Args:
            batch: Batch dict with at least ``image``.
            batch_idx: Index of the batch.

        Returns:
            Dict with ``change_probability`` and, for semantic models, ``semantic_pre`` /
            ``semantic_post`` class maps.
        """
        outputs = self(batch["image"])
        result = {"change_probability": outputs["change"][:, 0].sigmoid()}
        for key in ("semantic_pre", "semantic_post"):
            if key in outputs:
                result[key] = outputs[key].argmax(1)
        return result

    def configure_optimizers(self) -> Any:
        """AdamW over trainable parameters with linear warm-up then cosine / poly decay per step.

        Returns:
            Lightning optimizer configuration.
        """
        parameters = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        warmup = int(self.hparams["warmup_steps"])
        kind = self.hparams["scheduler"]
        power = float(self.hparams["poly_power"])
        floor = float(self.hparams["min_lr_ratio"])
        total = estimated_total_steps(self)
        if kind not in ("cosine", "poly", "none"):
            raise ConfigurationError(f"scheduler must be 'cosine', 'poly' or 'none', got {kind!r}")

        def factor(step: int) -> float:
            return lr_factor(step, warmup=warmup, total=total, kind=kind, power=power, floor=floor)

        scheduler = LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        """Metadata written to ``checkpoint["geochange"]`` (inputs of the predictor).

        Normalization, bands and patch size come from the attached datamodule when it has them,
        else from the init arguments.

        Returns:
            The metadata dict (see :func:`geochange.trainers.read_checkpoint_metadata`).
        """
        from geochange import __version__

        records = datamodule_records(self._datamodule(), self.in_channels)
        normalization = records.get("normalization", self.normalization)
        if normalization is None and not self._warned_normalization:
            self._warned_normalization = True
            warnings.warn(
                "the checkpoint carries no normalization (none given to the trainer, none on "
                "the datamodule: neither 'normalization' nor TorchGeo's 'mean'/'std'); "
                "prediction will feed raw pixel values",
                NormalizationWarning,
                stacklevel=2,
            )
        return CheckpointMetadata(
            task=self.task,
            model=self.model_name,
            model_kwargs=dict(self.model_kwargs),
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            class_names=list(self.class_names) if self.class_names is not None else None,
            normalization=normalization,
            bands=records.get("bands", self.bands),
            patch_size=records.get("patch_size", self.patch_size),
            input_range=records.get("input_range", self.input_range),
            version=__version__,
            trainer=f"{type(self).__module__}.{type(self).__qualname__}",
        ).to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the inference metadata in ``checkpoint["geochange"]``; drop unsaved buffers.

        Args:
            checkpoint: The checkpoint dict being saved.
        """
        # Also keeps the saved hyperparameters in step, so reloading restores the same
        # normalization.
        write_metadata(checkpoint, self.checkpoint_metadata())
        self._drop_unsaved(checkpoint)

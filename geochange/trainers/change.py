"""The :class:`ChangeTrainer` LightningModule: binary and semantic change detection."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch

# Lightning's own steps after it has read a checkpoint (instantiation with the saved
# hyper-parameters, incl. LightningCLI's allow-listed instantiator; version migrations): reused so
# a checkpoint dict read once by geochange loads exactly as Lightning would load the file.
from lightning.pytorch.core.saving import _default_map_location, _load_state
from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from geochange.checkpoint import (
    CheckpointMetadata,
    describe_state_dict_mismatch,
    load_checkpoint_dict,
    validate_metadata,
    write_metadata,
)
from geochange.errors import CheckpointError, ConfigurationError, DataError
from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics

__all__ = ["LSSCD_CLASS_NAMES", "ChangeTrainer", "lr_factor"]

#: Default class names (LsSCD) used when a semantic task is given no names.
LSSCD_CLASS_NAMES = ("building", "road", "water", "bare land", "tree", "cropland", "others")

#: Loss names accepted by ``ChangeTrainer(loss=...)`` per task.

Task = Literal["binary", "semantic"]


def _as_float_list(values: Any) -> list[float]:
    if isinstance(values, Tensor):
        return [float(v) for v in values.flatten().tolist()]
    return [float(v) for v in values]


def _normalization_dict(value: Any) -> dict[str, list[float]] | None:
    """Turn datamodule / user normalization into the checkpoint form ``{"mean", "std"}``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if "mean" not in value or "std" not in value:
            raise ConfigurationError(
                f"normalization must be a dict with 'mean' and 'std', got keys {sorted(value)}"
            )
        return {"mean": _as_float_list(value["mean"]), "std": _as_float_list(value["std"])}
    mean = getattr(value, "mean", None)
    std = getattr(value, "std", None)
    if mean is None or std is None:
        raise ConfigurationError(f"cannot read mean/std from normalization object {value!r}")
    return {"mean": _as_float_list(mean), "std": _as_float_list(std)}


def _input_range_dict(value: Any) -> dict[str, Any] | None:
    """Check and copy an input range record ``{"dtype", "min", "max"}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or "min" not in value or "max" not in value:
        raise ConfigurationError(
            f"input_range must be a dict with 'min' and 'max' lists (and 'dtype'), got {value!r}"
        )
    low, high = _as_float_list(value["min"]), _as_float_list(value["max"])
    if len(low) != len(high) or not low:
        raise ConfigurationError("input_range 'min' and 'max' need one value per band")
    dtype = value.get("dtype")
    return {"dtype": str(dtype) if dtype is not None else None, "min": low, "max": high}


def lr_factor(
    step: int, *, warmup: int, total: int, kind: str, power: float = 0.9, floor: float = 0.0
) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine / poly decay to ``floor``.

    Args:
        step: Optimizer step (0-based).
        warmup: Warm-up steps (the factor rises linearly from ``1 / warmup`` to 1).
        total: Total optimizer steps; 0 (unknown) keeps the factor at 1 after warm-up.
        kind: ``"cosine"``, ``"poly"`` or ``"none"``.
        power: Exponent of the poly decay.
        floor: Final factor of the decay.

    Returns:
        The multiplier of the peak learning rate.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "none" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = (1 - progress) ** power
    return floor + (1 - floor) * decay


class ChangeTrainer(pl.LightningModule):
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
        backbone: str = "resnet18",
        weights: str | None = None,
        in_channels: int = 3,
        task: Task = "binary",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        loss: str | nn.Module | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        ignore_index: int = 255,
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
        tile_size: int | None = None,
        input_range: dict[str, Any] | None = None,
        plot_every_n_epochs: int = 5,
        plot_samples: int = 4,
        compile_model: bool = False,
        channels_last: bool = False,
    ) -> None:
        """Build the model, loss and metrics.

        Args:
            model: Registry name for :func:`geochange.models.build_model` (``"fusion_unet"``,
                ``"siam_diff"``, ``"siam_conc"``, ``"semantic_change"``, ...) or a user
                ``nn.Module`` following the model contract (``forward(x [B, 2, C, H, W]) ->
                {"change": [B, 1, H, W], ...}``).
            backbone: smp encoder name (ignored for a user module).
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
            tile_size: Training patch size to store when no datamodule provides it.
            input_range: ``{"dtype", "min": [...], "max": [...]}`` of the training imagery
                (raw pixel units) to store when no datamodule provides it (see
                :attr:`geochange.datamodules.ChangeDataModule.input_range`); the predictor
                checks scenes against it.
            plot_every_n_epochs: Log a prediction figure every N validation epochs (0: never).
            plot_samples: Samples per figure.
            compile_model: Run the model through ``torch.compile`` for training.
            channels_last: Use the channels-last memory format (faster convs on GPU).

        Raises:
            ConfigurationError: On inconsistent arguments (unknown task / loss, missing
                ``num_classes``, class name count mismatch).
        """
        super().__init__()
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
        self.normalization = _normalization_dict(normalization)
        self.bands = list(bands) if bands is not None else None
        self.tile_size = tile_size
        self.input_range = _input_range_dict(input_range)
        user_module = isinstance(model, nn.Module)
        self.save_hyperparameters(ignore=["model", "loss"] if user_module else ["loss"])
        if isinstance(loss, str) or loss is None:
            self.hparams["loss"] = loss
        if user_module:
            self.model_name = type(model).__name__
            self.model_kwargs: dict[str, Any] = dict(getattr(model, "config", {}) or {})
            self.model = cast(nn.Module, model)
            if freeze_backbone:
                self._freeze_user_backbone()
        else:
            from geochange.models import build_model

            self.model_name = str(model)
            self.model_kwargs = {
                "backbone": backbone,
                "in_channels": in_channels,
                "num_classes": num_classes,
                **(model_kwargs or {}),
            }
            self.model = build_model(
                self.model_name,
                weights=weights,
                freeze_backbone=freeze_backbone,
                **self.model_kwargs,
            )
        self.loss_fn = self._build_loss(loss, loss_kwargs or {})
        self.val_metrics = self._build_metrics()
        self.test_metrics = self._build_metrics()
        self._forward_fn: Callable[[Tensor], Any] | None = None
        self._plot_batch: dict[str, Tensor] | None = None
        self._checked_datamodule = False

    # ------------------------------------------------------------------ construction helpers
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
            self._check_datamodule(datamodule)
            self._checked_datamodule = True
        if self.hparams.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.hparams.get("compile_model") and self._forward_fn is None:
            self._forward_fn = cast(Callable[[Tensor], Any], torch.compile(self.model))

    def _datamodule(self) -> Any:
        trainer = self._trainer
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def _check_datamodule(self, datamodule: Any) -> None:
        data_channels = getattr(datamodule, "in_channels", None)
        if data_channels is not None and int(data_channels) != self.in_channels:
            raise ConfigurationError(
                f"in_channels={self.in_channels} but the data has {data_channels} bands per date; "
                f"set model in_channels={data_channels} (or select bands in the datamodule)"
            )
        data_task = getattr(datamodule, "task", None)
        if self.task == "semantic" and data_task == "binary":
            raise ConfigurationError(
                "task='semantic' but the datamodule has no semantic labels (mask_pre/mask_post); "
                "give semantic_pre/semantic_post rasters or use task='binary'"
            )
        data_classes = getattr(datamodule, "num_classes", None)
        if self.task == "semantic" and data_classes is not None:
            if int(data_classes) != self.num_classes:
                raise ConfigurationError(
                    f"num_classes={self.num_classes} but the datamodule has {data_classes} classes"
                )

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
            return {"change": outputs}
        return cast(dict[str, Tensor], outputs)

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        image = batch.get("image")
        if not isinstance(image, Tensor) or image.dim() != 5 or image.shape[1] != 2:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise DataError(f"batch 'image' must be [B, 2, C, H, W], got {shape}")
        if image.shape[2] != self.in_channels:
            raise DataError(
                f"the data has {image.shape[2]} bands per date but the model was built with "
                f"in_channels={self.in_channels}"
            )
        if "mask" not in batch:
            raise DataError("batch has no 'mask' (change labels)")
        if self.task == "semantic":
            if "mask_pre" not in batch or "mask_post" not in batch:
                raise DataError(
                    "task='semantic' but the batch has no semantic labels "
                    f"('mask_pre'/'mask_post'); batch keys: {sorted(batch)}"
                )
            assert self.num_classes is not None
            for key in ("mask_pre", "mask_post"):
                labels = batch[key]
                valid = labels[labels != self.ignore_index]
                if valid.numel() and (int(valid.max()) >= self.num_classes or int(valid.min()) < 0):
                    bad = (
                        int(valid.max())
                        if int(valid.max()) >= self.num_classes
                        else int(valid.min())
                    )
                    raise DataError(
                        f"'{key}' holds class {bad} but num_classes={self.num_classes} "
                        f"(valid 0..{self.num_classes - 1}, ignore_index={self.ignore_index})"
                    )
        mask = batch["mask"]
        valid_mask = mask[mask != self.ignore_index]
        if valid_mask.numel() and (int(valid_mask.max()) > 1 or int(valid_mask.min()) < 0):
            raise DataError(
                f"'mask' must hold 0/1 change labels (or ignore_index={self.ignore_index}), "
                f"found values {torch.unique(valid_mask).tolist()[:8]}"
            )

    def _loss(self, outputs: dict[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss; returns ``{"loss": total, <term>: value, ...}``."""
        if self.task == "binary":
            result = self.loss_fn(outputs["change"], batch["mask"])
        else:
            result = self.loss_fn(outputs, batch["mask"], batch["mask_pre"], batch["mask_post"])
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
        self._check_batch(batch)
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
        self._check_batch(batch)
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
        # compute() already reduces the confusion matrices across processes.
        scores = metrics.compute()
        for name, value in scores.items():
            if name == "semantic_iou":
                names = self.class_names or [f"class_{i}" for i in range(value.numel())]
                for class_name, class_iou in zip(names, value, strict=True):
                    self.log(f"{stage}/iou/{class_name}", class_iou.float())
            else:
                self.log(f"{stage}/{name}", value.float(), prog_bar=name in ("f1", "sek"))
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate validation metrics; keep the first batch for the prediction figure.

        Args:
            batch: Batch dict.
            batch_idx: Index of the batch.
        """
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
        import matplotlib.pyplot as plt

        from geochange.plot import figure_from_arrays

        figure = figure_from_arrays(
            image=batch["image"].float().cpu().numpy(),
            truth=batch["mask"].cpu().numpy(),
            prediction=batch["pred_change"].cpu().numpy(),
            truth_pre=batch["mask_pre"].cpu().numpy() if "mask_pre" in batch else None,
            truth_post=batch["mask_post"].cpu().numpy() if "mask_post" in batch else None,
            prediction_pre=batch["pred_semantic_pre"].cpu().numpy()
            if "pred_semantic_pre" in batch
            else None,
            prediction_post=batch["pred_semantic_post"].cpu().numpy()
            if "pred_semantic_post" in batch
            else None,
            class_names=self.class_names,
            ignore_index=self.ignore_index,
        )
        step = self.global_step
        for logger in self.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):  # TensorBoard SummaryWriter
                experiment.add_figure("val/predictions", figure, global_step=step)
            elif hasattr(experiment, "log_figure") and hasattr(logger, "run_id"):  # MLflow client
                experiment.log_figure(logger.run_id, figure, f"predictions/step_{step:07d}.png")
        plt.close(figure)

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
        total = 0
        if self._trainer is not None:
            estimated = self.trainer.estimated_stepping_batches
            total = int(estimated) if math.isfinite(estimated) else 0
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

        Normalization, bands and tile size come from the attached datamodule when it has them,
        else from the init arguments.

        Returns:
            The metadata dict (see :func:`geochange.trainers.read_checkpoint_metadata`).
        """
        from geochange import __version__

        datamodule = self._datamodule()
        normalization = self.normalization
        bands = self.bands
        tile_size = self.tile_size
        input_range = self.input_range
        if datamodule is not None:
            data_norm = getattr(datamodule, "normalization", None)
            if data_norm is not None:
                normalization = _normalization_dict(data_norm)
            data_bands = getattr(datamodule, "bands", None)
            if data_bands is not None:
                bands = list(data_bands)
            patch = getattr(datamodule, "patch_size", None)
            if patch is not None:
                tile_size = int(patch if isinstance(patch, int) else patch[0])
            data_range = getattr(datamodule, "input_range", None)
            if data_range is not None:
                input_range = _input_range_dict(data_range)
        return CheckpointMetadata(
            task=self.task,
            model=self.model_name,
            model_kwargs=dict(self.model_kwargs),
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            class_names=list(self.class_names) if self.class_names is not None else None,
            normalization=normalization,
            bands=bands,
            patch_size=tile_size,
            input_range=input_range,
            version=__version__,
            trainer=f"{type(self).__module__}.{type(self).__qualname__}",
        ).to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the inference metadata in ``checkpoint["geochange"]``.

        Args:
            checkpoint: The checkpoint dict being saved.
        """
        # Also keeps the saved hyperparameters in step, so reloading restores the same
        # normalization.
        write_metadata(checkpoint, self.checkpoint_metadata())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load weights; weights that do not fit raise a :class:`CheckpointError` listing why.

        Args:
            state_dict: Saved weights.
            strict: Require the keys to match exactly.
            assign: See :meth:`torch.nn.Module.load_state_dict`.

        Returns:
            The missing and unexpected keys, as :meth:`torch.nn.Module.load_state_dict`.

        Raises:
            CheckpointError: Missing, unexpected or differently shaped weights (all counted).
        """
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as error:
            # torch's message lists every key on many lines; summarise all of it on one.
            problems = describe_state_dict_mismatch(self.state_dict(), state_dict, strict=strict)
            raise CheckpointError(
                f"weights do not fit {type(self).__name__}(model={self.model_name!r}, "
                f"task={self.task!r}): {problems or ' '.join(str(error).split())}"
            ) from error

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> ChangeTrainer:
        """Load a geochange checkpoint (offline, any device), with clear errors.

        The file is read once, with ``torch.load(weights_only=True)``: it cannot run code.

        Args:
            checkpoint_path: ``.ckpt`` file written while training a :class:`ChangeTrainer`.
            map_location: Device mapping, e.g. ``"cpu"`` (default: where the tensors were
                saved, the CPU when that device is absent).
            hparams_file: Optional YAML overriding the stored hyperparameters.
            strict: Require an exact state dict match (default ``True``).
            **kwargs: Hyperparameter overrides (e.g. ``model=MyModule()`` for a user model).

        Returns:
            The trainer in eval mode-ready state, with the checkpoint's weights.

        Raises:
            CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file, one
                holding Python objects, metadata that disagrees with the hyper-parameters, a
                checkpoint of another task than requested (``task=`` override), or weights that
                do not fit the model.
        """
        location = map_location if map_location is not None else _default_map_location
        checkpoint = load_checkpoint_dict(checkpoint_path, map_location=location)
        return cls.load_from_checkpoint_dict(
            checkpoint, checkpoint_path, hparams_file=hparams_file, strict=strict, **kwargs
        )

    @classmethod
    def load_from_checkpoint_dict(
        cls,
        checkpoint: dict[str, Any],
        path: str | Path = "<checkpoint>",
        *,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> ChangeTrainer:
        """Build the trainer from an already loaded checkpoint dict (no second read).

        Args:
            checkpoint: The dict from :func:`geochange.trainers.checkpoint.load_checkpoint_dict`.
            path: Where it came from (for messages).
            hparams_file: Optional YAML overriding the stored hyperparameters.
            strict: Require an exact state dict match (default ``True``).
            **kwargs: Hyperparameter overrides, as for :meth:`load_from_checkpoint`.

        Returns:
            The trainer with the checkpoint's weights, on the device of those weights.

        Raises:
            CheckpointError: As :meth:`load_from_checkpoint`.
        """
        metadata = validate_metadata(checkpoint, path)
        # Pretrained weights were only the starting point: never fetch them again on load.
        kwargs.setdefault("weights", None)
        requested = kwargs.get("task")
        if requested is not None and requested != metadata["task"]:
            raise CheckpointError(
                f"{path} is a {metadata['task']!r} change checkpoint, it cannot be "
                f"loaded as task={requested!r}"
            )
        hparams = checkpoint.get(cls.CHECKPOINT_HYPER_PARAMS_KEY, {})
        if "model" not in hparams and "model" not in kwargs:
            raise CheckpointError(
                f"{path} was trained with a user model "
                f"({metadata['model']}); pass it again: "
                "load_from_checkpoint(path, model=MyModel(...))"
            )
        # What Lightning's load_from_checkpoint does after reading the file; the caller's dict
        # is left as it was.
        checkpoint = dict(checkpoint)
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = dict(hparams)
        checkpoint = _pl_migrate_checkpoint(checkpoint, checkpoint_path=Path(path))
        if hparams_file is not None:
            checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = _hparams_from_file(hparams_file)
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY].update(kwargs)
        try:
            loaded = _load_state(cls, checkpoint, strict=strict, **kwargs)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from error
        tensors = (v for v in checkpoint["state_dict"].values() if isinstance(v, Tensor))
        device = next(tensors, torch.tensor(0)).device
        return cast(ChangeTrainer, loaded).to(device)


def _hparams_from_file(path: str | Path) -> dict[str, Any]:
    from lightning.pytorch.core.saving import load_hparams_from_tags_csv, load_hparams_from_yaml

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return dict(load_hparams_from_tags_csv(str(path)))
    if suffix in (".yml", ".yaml"):
        return dict(load_hparams_from_yaml(str(path)))
    raise ConfigurationError(f"hparams_file must be .csv, .yml or .yaml, got {str(path)!r}")

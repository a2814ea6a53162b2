"""Shared building blocks of the geochange change models.

Every model follows one contract: ``forward(x)`` takes ``x`` of shape ``[B, 2, C, H, W]``
(dates first) and returns a ``dict[str, Tensor]`` with at least ``"change"`` logits
``[B, 1, H, W]``. :class:`SiameseChangeModel` implements the parts all built-in models share:
an smp encoder applied to both dates in one batched call, padding of odd image sizes to the
encoder's output stride (and cropping back), freezing of the encoder, and a ``config`` dict from
which :func:`geochange.models.build_model` can rebuild the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from geochange.errors import CheckpointError, ConfigurationError

# Output keys of the built-in models (see ``docs/models.md``), re-exported from their home.
from geochange.keys import (
    AUX_SEMANTIC_POST as AUX_SEMANTIC_POST,
)
from geochange.keys import (
    AUX_SEMANTIC_PRE as AUX_SEMANTIC_PRE,
)
from geochange.keys import (
    CHANGE as CHANGE,
)
from geochange.keys import (
    CHANGE_GENERATED as CHANGE_GENERATED,
)
from geochange.keys import (
    EMBEDDING_POST as EMBEDDING_POST,
)
from geochange.keys import (
    EMBEDDING_PRE as EMBEDDING_PRE,
)
from geochange.keys import (
    FEATURE_DISTANCE as FEATURE_DISTANCE,
)
from geochange.keys import (
    SEMANTIC_FEATURES_POST as SEMANTIC_FEATURES_POST,
)
from geochange.keys import (
    SEMANTIC_FEATURES_PRE as SEMANTIC_FEATURES_PRE,
)
from geochange.keys import (
    SEMANTIC_POST as SEMANTIC_POST,
)
from geochange.keys import (
    SEMANTIC_PRE as SEMANTIC_PRE,
)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Return a ``Conv2d -> BatchNorm2d -> ReLU`` block that keeps the spatial size.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd convolution kernel size.

    Returns:
        The block as an ``nn.Sequential``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def make_encoder(
    backbone: str,
    in_channels: int,
    depth: int = 5,
    weights: str | None = None,
    output_stride: int = 32,
) -> nn.Module:
    """Build an smp encoder with clear geochange errors.

    Args:
        backbone: Any segmentation-models-pytorch encoder name (``"resnet18"``,
            ``"efficientnet-b0"``, ``"tu-convnext_tiny"``, ...).
        in_channels: Number of input bands per date.
        depth: Number of encoder stages (3-5).
        weights: Name of smp pretrained weights (``"imagenet"``) or ``None`` for random init.
        output_stride: 32, or 16/8 to dilate the deepest stages instead of downsampling
            (encoders that cannot be dilated raise ``ValueError``).

    Returns:
        The encoder module; its ``out_channels`` lists the channels of each feature level.

    Raises:
        ConfigurationError: If the backbone name, depth or band count is invalid.
        CheckpointError: If pretrained weights were requested but cannot be obtained (offline).
    """
    if in_channels < 1:
        raise ConfigurationError(f"in_channels must be >= 1, got {in_channels}")
    if not 1 <= depth <= 5:
        raise ConfigurationError(f"encoder_depth must be in 1..5, got {depth}")
    try:
        return smp.encoders.get_encoder(
            backbone,
            in_channels=in_channels,
            depth=depth,
            weights=weights,
            output_stride=output_stride,
        )
    except KeyError as error:
        # smp raises KeyError for both unknown encoders and unknown weight names; its message
        # lists every encoder, so keep only the first sentence.
        reason = str(error.args[0]).split(", supported encoders")[0]
        raise ConfigurationError(
            f"cannot build encoder {backbone!r} with weights={weights!r}: {reason}. Encoder "
            "names: segmentation_models_pytorch.encoders.get_encoder_names(), or 'tu-<timm name>'"
        ) from error
    except (OSError, ConnectionError) as error:
        raise CheckpointError(
            f"pretrained weights {weights!r} for encoder {backbone!r} could not be downloaded "
            f"and are not in the local cache (offline?): {error}. Use weights=None for random "
            "initialisation or pass the path of a local checkpoint file."
        ) from error
    except RuntimeError as error:
        if "timm" in type(error).__module__ or "Unknown model" in str(error):
            raise ConfigurationError(f"unknown timm encoder {backbone!r}: {error}") from error
        raise


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """Pad the last two dims of ``x`` at the bottom/right to a multiple of ``multiple``.

    Replicate padding avoids the artificial edges a zero border would create at the image
    boundary, which the change head would otherwise see as change.

    Args:
        x: Tensor ``[..., H, W]`` (at least 3-D).
        multiple: Target divisor of the spatial size.

    Returns:
        The padded tensor, and the original ``H`` and ``W`` to crop back to.
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        shape = x.shape
        flat = x.reshape(-1, *shape[-3:]) if x.dim() > 4 else x
        flat = F.pad(flat, (0, pad_w, 0, pad_h), mode="replicate")
        x = flat.reshape(*shape[:-2], height + pad_h, width + pad_w)
    return x, height, width


def check_input(x: Tensor, in_channels: int) -> None:
    """Raise a clear error if ``x`` is not a ``[B, 2, C, H, W]`` batch with ``C == in_channels``.

    Args:
        x: The model input.
        in_channels: Bands the model was built for.

    Raises:
        ConfigurationError: On a wrong rank, date count or band count.
    """
    if x.dim() != 5 or x.shape[1] != 2:
        raise ConfigurationError(
            f"change models expect input [B, 2, C, H, W] (two dates), got shape {tuple(x.shape)}"
        )
    if x.shape[2] != in_channels:
        raise ConfigurationError(
            f"model was built for {in_channels} bands but the input has {x.shape[2]} "
            f"(shape {tuple(x.shape)})"
        )


class ChangeModel(nn.Module):
    """Base class of geochange models: an ``encoder`` attribute, freezing and ``config``.

    Subclasses must create ``self.encoder`` and implement ``forward``. ``config`` holds the
    keyword arguments that rebuild the model through ``build_model(model_name, **config)``;
    :func:`geochange.models.build_model` fills it in.

    Attributes:
        task: ``"binary"`` (change only) or ``"semantic"`` (also per-date class logits); the
            value trainers store as ``checkpoint["geochange"]["task"]``.
        model_name: Registry name of the model (``""`` when built directly).
        config: Keyword arguments for ``build_model`` (without ``name`` and ``weights``).
    """

    task: str = "binary"
    encoder: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.model_name: str = ""
        self.config: dict[str, Any] = {}
        self.backbone_frozen = False

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the encoder: no gradients and BatchNorm statistics kept fixed.

        Args:
            frozen: ``True`` to freeze, ``False`` to make the encoder trainable again.
        """
        self.backbone_frozen = frozen
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> ChangeModel:
        """Set training mode, keeping a frozen encoder in eval mode (fixed BatchNorm stats).

        Args:
            mode: Training mode for everything except a frozen encoder.

        Returns:
            ``self``.
        """
        super().train(mode)
        if getattr(self, "backbone_frozen", False):
            self.encoder.eval()
        return self

    @property
    def pad_multiple(self) -> int:
        """Spatial size multiple the encoder needs (its output stride)."""
        return int(getattr(self.encoder, "output_stride", 32))

    def encode_dates(self, x: Tensor, in_channels: int) -> tuple[list[Tensor], int, int]:
        """Pad both dates and run the shared encoder on them in a single batched call.

        Args:
            x: Input ``[B, 2, C, H, W]``.
            in_channels: Expected band count ``C``.

        Returns:
            Encoder features ``[2B, ...]`` per level, dates interleaved per sample
            (``[b0 pre, b0 post, b1 pre, ...]``), and the original ``H`` and ``W``.
        """
        check_input(x, in_channels)
        x, height, width = pad_to_multiple(x, self.pad_multiple)
        # One encoder call over 2B images: better throughput than two calls.
        return list(self.encoder(x.flatten(0, 1))), height, width

    def encode_pair(
        self, x: Tensor, in_channels: int
    ) -> tuple[list[Tensor], list[Tensor], int, int]:
        """Encode both dates (see :meth:`encode_dates`) and split the features per date.

        Args:
            x: Input ``[B, 2, C, H, W]``.
            in_channels: Expected band count ``C``.

        Returns:
            Feature lists of the pre and post date, and the original ``H`` and ``W``.
        """
        features, height, width = self.encode_dates(x, in_channels)
        batch = x.shape[0]
        pre, post = [], []
        for feature in features:
            pair = feature.reshape(batch, 2, *feature.shape[1:])
            pre.append(pair[:, 0])
            post.append(pair[:, 1])
        return pre, post, height, width


class SiameseChangeModel(ChangeModel):
    """Siamese encoder + per-scale fusion + UNet decoder, with optional DiffMatch components.

    Subclasses define how the two dates' features are fused at each scale
    (:meth:`fused_channels` and :meth:`fuse`). The DiffMatch components are switched on with
    ``dual_head`` and ``aux_semantic``.

    Outputs of ``forward``:

    - ``"change"``: change logits ``[B, 1, H, W]`` (with ``dual_head``, the *consistency* head
      trained by ground truth and FixMatch pseudo labels; it is the prediction).
    - ``"change_generated"`` (``dual_head=True``): logits ``[B, 1, H, W]`` of the *generated*
      head, trained by change pseudo labels derived from per-date semantic maps.
    - ``"aux_semantic_pre"``, ``"aux_semantic_post"`` (``aux_semantic=True``, training mode
      only): class logits ``[B, K, H, W]`` of the two auxiliary semantic decoders.
    - ``"feature_distance"`` (``aux_semantic=True``, training mode only): per-pixel L2 distance
      ``[B, 1, H, W]`` between the two auxiliary decoders' features, for
      :class:`geochange.losses.BatchBalancedContrastiveLoss`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_depth: int = 5,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        dual_head: bool = False,
        aux_semantic: bool = False,
        aux_decoder_channels: Sequence[int] = (128, 64, 32, 32, 32),
    ) -> None:
        """Build the encoder, fusion, decoder and heads.

        Args:
            backbone: smp encoder name.
            in_channels: Bands per date.
            num_classes: Semantic classes ``K`` of the auxiliary decoders (needed with
                ``aux_semantic``).
            encoder_depth: Encoder stages (3-5); ``decoder_channels`` is cut to this length.
            encoder_weights: smp pretrained weights name, or ``None`` (random init).
            decoder_channels: Channels of the UNet decoder blocks.
            dual_head: Add the DiffMatch ``"change_generated"`` head.
            aux_semantic: Add the DiffMatch auxiliary semantic decoders (pre, post).
            aux_decoder_channels: Channels of the auxiliary decoders' blocks.

        Raises:
            ConfigurationError: On inconsistent arguments.
        """
        super().__init__()
        if aux_semantic and not num_classes:
            raise ConfigurationError("aux_semantic=True needs num_classes (the class count K)")
        decoder_channels = tuple(decoder_channels)[:encoder_depth]
        aux_decoder_channels = tuple(aux_decoder_channels)[:encoder_depth]
        if len(decoder_channels) != encoder_depth or len(aux_decoder_channels) != encoder_depth:
            raise ConfigurationError(
                f"decoder_channels needs {encoder_depth} entries (one per encoder stage)"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.encoder = make_encoder(backbone, in_channels, encoder_depth, encoder_weights)
        encoder_channels: list[int] = list(self.encoder.out_channels)  # type: ignore[arg-type]
        self.build_fusion(encoder_channels)
        self.decoder = UnetDecoder(
            encoder_channels=self.fused_channels(encoder_channels),
            decoder_channels=decoder_channels,
            n_blocks=encoder_depth,
            add_center_block=backbone.startswith("vgg"),
        )
        self.change_head = SegmentationHead(decoder_channels[-1], 1, kernel_size=3)
        self.generated_head = (
            SegmentationHead(decoder_channels[-1], 1, kernel_size=3) if dual_head else None
        )
        self.aux_decoder_pre: UnetDecoder | None = None
        self.aux_decoder_post: UnetDecoder | None = None
        if aux_semantic:
            assert num_classes is not None
            self.aux_decoder_pre = UnetDecoder(
                encoder_channels, aux_decoder_channels, encoder_depth
            )
            self.aux_decoder_post = UnetDecoder(
                encoder_channels, aux_decoder_channels, encoder_depth
            )
            self.aux_head_pre = SegmentationHead(aux_decoder_channels[-1], num_classes, 3)
            self.aux_head_post = SegmentationHead(aux_decoder_channels[-1], num_classes, 3)

    def build_fusion(self, encoder_channels: list[int]) -> None:
        """Create the fusion layers (if any) for the encoder's feature channels.

        Args:
            encoder_channels: ``encoder.out_channels`` (level 0 is the input itself).
        """

    def fused_channels(self, encoder_channels: list[int]) -> list[int]:
        """Return the channels of the fused features at each level.

        Args:
            encoder_channels: ``encoder.out_channels``.

        Returns:
            Channels per level, level 0 included (ignored by the decoder).
        """
        raise NotImplementedError

    def fuse(self, pre: list[Tensor], post: list[Tensor]) -> list[Tensor]:
        """Fuse the two dates' features level by level.

        Args:
            pre: Features of the pre date, one per level.
            post: Features of the post date.

        Returns:
            Fused features, one per level (level 0 is ignored by the decoder).
        """
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Predict change logits (and DiffMatch outputs) for a bi-temporal batch.

        Args:
            x: Input ``[B, 2, C, H, W]``; any ``H``, ``W``.

        Returns:
            Dict of outputs, see the class docstring for the keys.
        """
        pre, post, height, width = self.encode_pair(x, self.in_channels)
        decoded = self.decoder(self.fuse(pre, post))
        outputs = {CHANGE: self.change_head(decoded)[..., :height, :width]}
        if self.generated_head is not None:
            outputs[CHANGE_GENERATED] = self.generated_head(decoded)[..., :height, :width]
        if self.aux_decoder_pre is not None and self.aux_decoder_post is not None and self.training:
            features_pre = self.aux_decoder_pre(pre)
            features_post = self.aux_decoder_post(post)
            outputs[AUX_SEMANTIC_PRE] = self.aux_head_pre(features_pre)[..., :height, :width]
            outputs[AUX_SEMANTIC_POST] = self.aux_head_post(features_post)[..., :height, :width]
            # The small epsilon keeps the gradient finite where the features coincide.
            squared = (features_pre - features_post).pow(2).sum(dim=1, keepdim=True)
            distance = torch.sqrt(squared + 1e-12)
            outputs[FEATURE_DISTANCE] = distance[..., :height, :width]
        return outputs

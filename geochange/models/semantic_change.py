"""ClearSCD-style semantic change detection network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from geochange.classes import LSSCD_NUM_CLASSES
from geochange.errors import ConfigurationError
from geochange.keys import (
    CHANGE,
    EMBEDDING_POST,
    EMBEDDING_PRE,
    SEMANTIC_FEATURES_POST,
    SEMANTIC_FEATURES_PRE,
    SEMANTIC_POST,
    SEMANTIC_PRE,
)
from geochange.models.base import (
    ChangeModel,
    conv_bn_relu,
    make_encoder,
)


class SemanticChangeNet(ChangeModel):
    """Semantic change detection in the style of ClearSCD.

    A shared siamese encoder + UNet decoder (smp) gives per-date semantic features; a shared
    semantic head turns them into K-class logits for each date. The *deep CVAPS* change branch
    (change vector analysis in posterior space) is a conv stack -- ``cvaps_layers`` x
    conv-BN-ReLU, then a 1-channel conv, upsampled to the input size -- applied to the change
    vector between the two dates' class logits (``|logits_pre - logits_post|`` for
    ``fusion="diff"``, or their concatenation for ``fusion="concat"``), not to the
    high-dimensional features. A 1x1-conv projection head maps the semantic features to
    ``projection_dim`` embeddings for supervised contrastive learning (SACL).

    Outputs of ``forward``:

    - ``"change"``: change logits ``[B, 1, H, W]``.
    - ``"semantic_pre"``, ``"semantic_post"``: class logits ``[B, K, H, W]``.
    - ``"semantic_features_pre"``, ``"semantic_features_post"``: decoder features
      ``[B, D, H, W]`` (``D = decoder_channels[-1]``), used by the BSCC loss.
    - ``"embedding_pre"``, ``"embedding_post"`` (training mode only): projected features
      ``[B, projection_dim, H, W]`` (not normalised) for the SACL loss.
    """

    task = "semantic"

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_depth: int = 5,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 32),
        fusion: Literal["diff", "concat"] = "diff",
        cvaps_layers: int = 3,
        cvaps_channels: int = 32,
        cvaps_stride: int = 1,
        projection_dim: int = 32,
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name.
            in_channels: Bands per date.
            num_classes: Semantic classes ``K`` (default 7, the LsSCD classes).
            encoder_depth: Encoder stages (3-5).
            encoder_weights: smp pretrained weights name, or ``None`` (random init).
            decoder_channels: Channels of the UNet decoder blocks (last = feature dim ``D``).
            fusion: ``"diff"`` (absolute logit difference) or ``"concat"``.
            cvaps_layers: conv-BN-ReLU layers of the change branch.
            cvaps_channels: Width of the change branch.
            cvaps_stride: Run the change branch at ``1/cvaps_stride`` resolution (average
                pooled) and upsample its logits bilinearly; 1 keeps full resolution.
            projection_dim: Embedding size of the SACL projection head.

        Raises:
            ConfigurationError: On inconsistent arguments.
        """
        super().__init__()
        num_classes = LSSCD_NUM_CLASSES if num_classes is None else int(num_classes)
        if num_classes < 2:
            raise ConfigurationError(f"semantic_change needs num_classes >= 2, got {num_classes}")
        if fusion not in ("diff", "concat"):
            raise ConfigurationError(f"fusion must be 'diff' or 'concat', got {fusion!r}")
        if cvaps_layers < 1 or cvaps_stride < 1:
            raise ConfigurationError("cvaps_layers and cvaps_stride must be >= 1")
        decoder_channels = tuple(decoder_channels)[:encoder_depth]
        if len(decoder_channels) != encoder_depth:
            raise ConfigurationError(
                f"decoder_channels needs {encoder_depth} entries (one per encoder stage)"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.fusion = fusion
        self.cvaps_stride = cvaps_stride
        self.encoder = make_encoder(backbone, in_channels, encoder_depth, encoder_weights)
        self.decoder = UnetDecoder(
            encoder_channels=list(self.encoder.out_channels),  # type: ignore[arg-type]
            decoder_channels=decoder_channels,
            n_blocks=encoder_depth,
            add_center_block=backbone.startswith("vgg"),
        )
        feature_dim = decoder_channels[-1]
        self.semantic_head = nn.Conv2d(feature_dim, num_classes, kernel_size=3, padding=1)
        branch_in = num_classes if fusion == "diff" else 2 * num_classes
        layers: list[nn.Module] = [conv_bn_relu(branch_in, cvaps_channels)]
        layers += [conv_bn_relu(cvaps_channels, cvaps_channels) for _ in range(cvaps_layers - 1)]
        layers.append(nn.Conv2d(cvaps_channels, 1, kernel_size=1))
        self.cvaps = nn.Sequential(*layers)
        self.projection = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feature_dim, projection_dim, kernel_size=1),
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Predict per-date semantic logits and change logits.

        Args:
            x: Input ``[B, 2, C, H, W]``; any ``H``, ``W``.

        Returns:
            Dict of outputs, see the class docstring for the keys.
        """
        batch = x.shape[0]
        # Encode and decode both dates in one call each: [2B, ...], dates interleaved.
        features, height, width = self.encode_dates(x, self.in_channels)
        decoded = self.decoder(features)
        logits = self.semantic_head(decoded)
        logits_pair = logits.reshape(batch, 2, *logits.shape[1:])
        logits_pre, logits_post = logits_pair[:, 0], logits_pair[:, 1]
        if self.fusion == "diff":
            change_vector = (logits_pre - logits_post).abs()
        else:
            change_vector = torch.cat([logits_pre, logits_post], dim=1)
        padded_size = change_vector.shape[-2:]
        if self.cvaps_stride > 1:
            change_vector = F.avg_pool2d(change_vector, self.cvaps_stride, ceil_mode=True)
        change = self.cvaps(change_vector)
        if change.shape[-2:] != padded_size:
            change = F.interpolate(change, size=padded_size, mode="bilinear", align_corners=False)
        features_pair = decoded.reshape(batch, 2, *decoded.shape[1:])
        outputs = {
            CHANGE: change[..., :height, :width],
            SEMANTIC_PRE: logits_pre[..., :height, :width],
            SEMANTIC_POST: logits_post[..., :height, :width],
            SEMANTIC_FEATURES_PRE: features_pair[:, 0, :, :height, :width],
            SEMANTIC_FEATURES_POST: features_pair[:, 1, :, :height, :width],
        }
        if self.training:
            embeddings = self.projection(decoded).reshape(batch, 2, -1, *decoded.shape[-2:])
            outputs[EMBEDDING_PRE] = embeddings[:, 0, :, :height, :width]
            outputs[EMBEDDING_POST] = embeddings[:, 1, :, :height, :width]
        return outputs

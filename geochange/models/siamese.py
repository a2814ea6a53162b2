"""Siamese change models: multi-scale feature fusion UNet, FC-Siam-diff and FC-Siam-conc.

All three share one smp encoder between the dates and an smp ``UnetDecoder``; they differ in
how the two dates' features are combined at each scale before the decoder sees them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from geochange.models.base import SiameseChangeModel, conv_bn_relu


class FusionUNet(SiameseChangeModel):
    """Siamese multi-scale feature fusion UNet.

    One shared encoder is applied to each date; at every scale the two feature maps are
    concatenated and fused by conv-BN-ReLU layers (a 1x1 conv that halves the concatenation,
    then ``fusion_layers - 1`` 3x3 convs); a UNet decoder with skip connections from the fused
    features produces the change map. Freezing a pretrained encoder (``freeze_backbone=True``
    in :func:`geochange.models.build_model`, the classic setting is a frozen ResNet-50) trains
    only the fusion layers, decoder and heads.

    Output keys are those of :class:`geochange.models.base.SiameseChangeModel`.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        fusion_layers: int = 2,
        fusion_max_channels: int = 256,
        **kwargs: Any,
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name.
            in_channels: Bands per date.
            num_classes: Classes of the optional auxiliary semantic decoders.
            fusion_layers: conv-BN-ReLU layers per scale (>= 1).
            fusion_max_channels: Upper bound on the fused channels of a scale; keeps the fusion
                of deep ResNet-50 stages (2048 channels) affordable; 256 matches the
                first decoder block, so wider fusion would be squeezed right after.
            **kwargs: Further :class:`~geochange.models.base.SiameseChangeModel` arguments
                (``encoder_depth``, ``decoder_channels``, ``dual_head``, ``aux_semantic``, ...).
        """
        self.fusion_layers = max(1, int(fusion_layers))
        self.fusion_max_channels = int(fusion_max_channels)
        super().__init__(backbone, in_channels, num_classes, **kwargs)

    def _width(self, channels: int) -> int:
        return min(channels, self.fusion_max_channels)

    def build_fusion(self, encoder_channels: list[int]) -> None:
        """Create one fusion stack per encoder level (level 0, the raw input, is skipped).

        Args:
            encoder_channels: ``encoder.out_channels``.
        """
        stacks = []
        for channels in encoder_channels[1:]:
            width = self._width(channels)
            layers = [conv_bn_relu(2 * channels, width, kernel_size=1)]
            layers += [conv_bn_relu(width, width) for _ in range(self.fusion_layers - 1)]
            stacks.append(nn.Sequential(*layers))
        self.fusion = nn.ModuleList(stacks)

    def fused_channels(self, encoder_channels: list[int]) -> list[int]:
        """Channels of the fused features per level.

        Args:
            encoder_channels: ``encoder.out_channels``.

        Returns:
            Fused channels per level (level 0 unchanged).
        """
        return [encoder_channels[0]] + [self._width(c) for c in encoder_channels[1:]]

    def fuse(self, pre: list[Tensor], post: list[Tensor]) -> list[Tensor]:
        """Concatenate and fuse the two dates at each level.

        Args:
            pre: Pre-date features per level.
            post: Post-date features per level.

        Returns:
            Fused features per level.
        """
        fused = [post[0]]
        for stack, feature_pre, feature_post in zip(self.fusion, pre[1:], post[1:], strict=True):
            fused.append(stack(torch.cat([feature_pre, feature_post], dim=1)))
        return fused


class SiamDiff(SiameseChangeModel):
    """FC-Siam-diff: the decoder sees ``|f_pre - f_post|`` at every scale.

    The absolute difference makes the model symmetric in the two dates. Output keys are those
    of :class:`geochange.models.base.SiameseChangeModel`.
    """

    def fused_channels(self, encoder_channels: list[int]) -> list[int]:
        """Channels per level (unchanged by the difference).

        Args:
            encoder_channels: ``encoder.out_channels``.

        Returns:
            The same channel list.
        """
        return list(encoder_channels)

    def fuse(self, pre: list[Tensor], post: list[Tensor]) -> list[Tensor]:
        """Absolute feature difference per level.

        Args:
            pre: Pre-date features per level.
            post: Post-date features per level.

        Returns:
            ``|pre - post|`` per level.
        """
        return [post[0]] + [(a - b).abs() for a, b in zip(pre[1:], post[1:], strict=True)]


class SiamConc(SiameseChangeModel):
    """FC-Siam-conc: the decoder sees the concatenation ``[f_pre, f_post]`` at every scale.

    Output keys are those of :class:`geochange.models.base.SiameseChangeModel`.
    """

    def fused_channels(self, encoder_channels: list[int]) -> list[int]:
        """Channels per level (doubled by the concatenation).

        Args:
            encoder_channels: ``encoder.out_channels``.

        Returns:
            Doubled channels per level (level 0 unchanged).
        """
        return [encoder_channels[0]] + [2 * c for c in encoder_channels[1:]]

    def fuse(self, pre: list[Tensor], post: list[Tensor]) -> list[Tensor]:
        """Concatenate the dates per level.

        Args:
            pre: Pre-date features per level.
            post: Post-date features per level.

        Returns:
            ``cat(pre, post)`` per level.
        """
        return [post[0]] + [
            torch.cat([a, b], dim=1) for a, b in zip(pre[1:], post[1:], strict=True)
        ]

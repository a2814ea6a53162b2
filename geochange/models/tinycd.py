"""TinyCD: a lightweight change model (Codegoni, Lombardi & Ferrari 2022).

"TinyCD: A (Not So) Deep Learning Model For Change Detection", arXiv:2207.13159 (Neural
Computing and Applications, 2023). Written from the paper's description: the early layers
of a small siamese backbone, a Mix and Attention Mask Block (MAMB) per scale that mixes the
two dates channel by channel with a grouped convolution and weights the result with a
learned spatial mask, an upsampling path in which each scale's MAMB output gates the
upsampled features, and a pixel-wise MLP classifier (PW-MLP).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE
from geochange.models.base import ChangeModel
from geochange.models.truncate import make_truncated_encoder


def conv_bn_prelu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Return ``Conv2d -> BatchNorm2d -> PReLU`` keeping the spatial size.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size.

    Returns:
        The block.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(out_channels),
    )


class MixBlock(nn.Module):
    """Channel-wise mixing of the two dates' features.

    The channels are interleaved (``pre_0, post_0, pre_1, post_1, ...``) and a 3x3 grouped
    convolution with one group per channel pair mixes each pair into one channel, so the
    block costs ``9 * 2 * C`` weights whatever the width.
    """

    def __init__(self, channels: int) -> None:
        """Build the block.

        Args:
            channels: Channels ``C`` of each date's feature.
        """
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1, groups=channels, bias=False)
        # BatchNorm rather than the paper's InstanceNorm: per-tile statistics would make the
        # output depend on the tile a pixel is predicted in (seams), and BatchNorm folds.
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, pre: Tensor, post: Tensor) -> Tensor:
        """Interleave the dates' channels and mix each pair: two ``[B, C, h, w]`` -> one."""
        interleaved = torch.stack([pre, post], dim=2).flatten(1, 2)
        return self.act(self.norm(self.conv(interleaved)))


class MixAttentionMask(nn.Module):
    """MAMB: :class:`MixBlock` output weighted by a spatial mask from a pixel-wise MLP."""

    def __init__(self, channels: int, hidden: int) -> None:
        """Build the block.

        Args:
            channels: Channels of each date's feature.
            hidden: Hidden width of the mask MLP.
        """
        super().__init__()
        self.mix = MixBlock(channels)
        self.mask = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.PReLU(hidden), nn.Conv2d(hidden, 1, 1)
        )

    def forward(self, pre: Tensor, post: Tensor) -> Tensor:
        """The mixed features of both dates, weighted by their spatial mask: ``[B, C, h, w]``."""
        mixed = self.mix(pre, post)
        return mixed * torch.sigmoid(self.mask(mixed))


class UpMix(nn.Module):
    """Upsampling step: bilinear x2, conv, gating by the scale's MAMB output, conv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        """Build the step.

        Args:
            in_channels: Channels of the coarser decoder feature.
            skip_channels: Channels of this scale's MAMB output.
            out_channels: Channels of the result.
        """
        super().__init__()
        self.up_conv = conv_bn_prelu(in_channels, out_channels)
        self.skip = nn.Conv2d(skip_channels, out_channels, 1)
        self.out_conv = conv_bn_prelu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` to ``skip``'s size and mix them.

        Args:
            x: ``[B, in, h, w]``.
            skip: ``[B, skip, 2h, 2w]``.

        Returns:
            ``[B, out, 2h, 2w]``.
        """
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.out_conv(self.up_conv(x) * self.skip(skip))


class TinyCD(ChangeModel):
    """TinyCD (Codegoni et al. 2022): a change model of a few hundred thousand parameters.

    1. Siamese backbone: the first ``encoder_depth`` stages of the smp encoder ``backbone``
       (stages beyond are removed). The paper uses the early blocks of an ImageNet
       EfficientNet-B4: ``backbone="timm-efficientnet-b4"`` (3 stages: 0.27 M parameters,
       features at 1/2, 1/4, 1/8). smp's ``efficientnet-b4`` runs one stage more than it
       returns, so it cannot be cut as short; the registry default ``resnet18`` works too
       (0.68 M parameters for 3 stages).
    2. A MAMB (:class:`MixAttentionMask`) per scale, the input bands included, mixes the two
       dates channel-wise and weights them with a learned spatial mask; the deepest scale is
       only mixed (:class:`MixBlock`) and starts the decoder.
    3. Upsampling (:class:`UpMix`): each step doubles the resolution and multiplies the
       features with the (projected) MAMB output of that scale.
    4. PW-MLP classifier: 1x1 convs ``decoder_channels[-1] -> classifier_channels -> 1``.

    Inputs are padded (replicate) to a multiple of ``2**encoder_depth`` and the logits cropped
    back. Outputs: ``"change"`` logits ``[B, 1, H, W]``.

    State-dict layout (top-level prefixes): ``encoder.`` (the truncated smp encoder),
    ``mix.<l>.`` (MAMB of level ``l``; ``l = 0`` the input bands, the last one a plain
    :class:`MixBlock`), ``up.<i>.`` (upsampling steps, coarsest first) and ``classifier.``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_depth: int = 3,
        encoder_weights: str | None = None,
        decoder_channels: Sequence[int] | None = None,
        mask_hidden: int = 8,
        classifier_channels: Sequence[int] = (16, 8),
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name (``"timm-efficientnet-b4"`` as in the paper).
            in_channels: Bands per date.
            num_classes: Unused (TinyCD is a binary change model); accepted for the registry.
            encoder_depth: Backbone stages used (3 in the paper: down to 1/8).
            encoder_weights: smp pretrained weights name, or ``None`` (random init).
            decoder_channels: Channels of the ``encoder_depth`` upsampling steps, coarsest
                first; default ``32`` for each step.
            mask_hidden: Hidden width of the MAMB mask MLPs.
            classifier_channels: Hidden widths of the PW-MLP classifier.

        Raises:
            ConfigurationError: On inconsistent arguments.
        """
        super().__init__()
        if decoder_channels is None:
            decoder_channels = (32,) * encoder_depth
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != encoder_depth:
            raise ConfigurationError(
                f"decoder_channels needs {encoder_depth} entries (one per upsampling step)"
            )
        self.in_channels = in_channels
        self.encoder = make_truncated_encoder(backbone, in_channels, encoder_depth, encoder_weights)
        levels = [int(c) for c in self.encoder.out_channels]  # type: ignore[union-attr]
        mixes: list[nn.Module] = [MixAttentionMask(c, mask_hidden) for c in levels[:-1]]
        self.mix = nn.ModuleList([*mixes, MixBlock(levels[-1])])
        widths = [levels[-1], *decoder_channels]
        self.up = nn.ModuleList(
            UpMix(widths[i], levels[-2 - i], widths[i + 1]) for i in range(encoder_depth)
        )
        layers: list[nn.Module] = []
        width = decoder_channels[-1]
        for hidden in classifier_channels:
            layers.append(conv_bn_prelu(width, hidden, kernel_size=1))
            width = hidden
        layers.append(nn.Conv2d(width, 1, 1))
        self.classifier = nn.Sequential(*layers)

    @property
    def pad_multiple(self) -> int:
        """Spatial size multiple the model needs: ``2**encoder_depth``."""
        return 2 ** (len(self.up))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Change logits ``[B, 1, H, W]`` of ``[B, 2, C, H, W]``: mix, gate, classify."""
        pre, post, height, width = self.encode_pair(x, self.in_channels)
        mixed = [mix(a, b) for mix, a, b in zip(self.mix, pre, post, strict=True)]
        decoded = mixed[-1]
        for step, skip in zip(self.up, reversed(mixed[:-1]), strict=True):
            decoded = step(decoded, skip)
        return {CHANGE: self.classifier(decoded)[..., :height, :width]}

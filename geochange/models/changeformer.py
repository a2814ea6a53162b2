"""ChangeFormer: a hierarchical transformer encoder with per-scale differences and an MLP decoder.

Bandara & Patel, "A Transformer-Based Siamese Network for Change Detection", IGARSS 2022
(arXiv:2201.01293). Both dates go through one shared SegFormer-style MiT encoder (smp's
``mit_b*``); at every scale a difference module turns the two dates' features into a
difference map; a SegFormer-style MLP decoder projects every difference map to one width,
upsamples it to 1/4 of the input, and fuses the concatenation; a transposed convolution and a
residual block bring it to full size for the change classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE
from geochange.models.base import ChangeModel, conv_bn_relu, make_encoder


class DifferenceModule(nn.Sequential):
    """The paper's difference module: ``cat(pre, post)`` -> conv-ReLU-BN -> conv-ReLU.

    Learned rather than ``|pre - post|``, so the model can weigh which feature changes matter.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Build the module.

        Args:
            in_channels: Channels of one date's features.
            out_channels: Channels of the difference map.
        """
        # Not in-place: BatchNorm folding must see that this BatchNorm follows a ReLU, not the
        # convolution (an in-place ReLU hands on the convolution's own output tensor).
        super().__init__(
            nn.Conv2d(2 * in_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(),
        )


class ResidualBlock(nn.Module):
    """``relu(x + bn(conv(relu(bn(conv(x))))))`` at a constant width."""

    def __init__(self, channels: int) -> None:
        """Build the block.

        Args:
            channels: Input and output channels.
        """
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: Features ``[B, C, H, W]``.

        Returns:
            Features of the same shape.
        """
        return torch.relu(x + self.body(x))


class ChangeFormer(ChangeModel):
    """ChangeFormer (Bandara & Patel 2022) on an smp hierarchical transformer encoder.

    The encoder's feature maps at strides 4, 8, 16 and 32 (``encoder_depth=5``; depth 4 drops
    stride 32, depth 3 keeps strides 4 and 8) are computed for both dates in one batched call.
    Per scale, a :class:`DifferenceModule` maps ``cat(pre, post)`` to a difference map with
    the scale's encoder width. The MLP decoder projects each difference map to ``embed_dim``
    channels (a 1x1 convolution is the per-pixel linear layer of the paper), upsamples them
    bilinearly to stride 4, concatenates and fuses them (1x1 conv-BN-ReLU). A transposed
    convolution (kernel 4, stride 4; the paper's has kernel 3) upsamples to full size at
    ``head_channels``, a residual block refines, and a 1x1 convolution gives the logits.
    Inputs are padded (replicate) to the encoder's output stride and cropped back.

    The paper's encoder has MiT-b1 widths (64, 128, 320, 512); the default ``mit_b0`` (32, 64,
    160, 256) is the CPU-friendly choice. Any smp encoder with at least three stages whose
    level 2 has stride 4 also works (``"resnet18"``, ``"tu-convnext_tiny"``, ...), giving a
    ChangeFormer decoder on a CNN.

    State-dict layout (top-level prefixes): ``encoder.`` (the smp encoder; smp/SegFormer
    ``mit_b*`` weights load here), ``differences.<i>.`` (one per scale, stride 4 first),
    ``projections.<i>.``, ``fuse.``, ``upsample.``, ``refine.``, ``classifier.``.

    Output: ``{"change": logits [B, 1, H, W]}``.
    """

    def __init__(
        self,
        backbone: str = "mit_b0",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_depth: int = 5,
        encoder_weights: str | None = None,
        embed_dim: int = 256,
        head_channels: int = 32,
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name: ``"mit_b0"`` ... ``"mit_b5"``, or any smp encoder
                whose level 2 has stride 4.
            in_channels: Bands per date (any count; the patch embedding is adapted).
            num_classes: Unused (binary change model); accepted for the registry contract.
            encoder_depth: Encoder stages (3-5); the decoder uses stages 2..depth.
            encoder_weights: smp pretrained weights name (``"imagenet"``) or ``None``.
            embed_dim: Common width of the MLP decoder (``C_ebd`` in the paper, 256 there).
            head_channels: Width of the full-resolution upsampling head.

        Raises:
            ConfigurationError: On an invalid encoder, depth or width.
        """
        super().__init__()
        del num_classes  # binary model
        if not 3 <= encoder_depth <= 5:
            raise ConfigurationError(
                f"changeformer needs encoder_depth in 3..5 (>= 2 scales), got {encoder_depth}"
            )
        if embed_dim < 1 or head_channels < 1:
            raise ConfigurationError("embed_dim and head_channels must be >= 1")
        self.in_channels = in_channels
        self.encoder = make_encoder(backbone, in_channels, encoder_depth, encoder_weights)
        widths = list(self.encoder.out_channels)[2:]  # type: ignore[arg-type]
        self.differences = nn.ModuleList(DifferenceModule(c, c) for c in widths)
        self.projections = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in widths)
        self.fuse = conv_bn_relu(len(widths) * embed_dim, embed_dim, kernel_size=1)
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, head_channels, kernel_size=4, stride=4, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
        )
        self.refine = ResidualBlock(head_channels)
        self.classifier = nn.Conv2d(head_channels, 1, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Change logits ``[B, 1, H, W]`` of ``[B, 2, C, H, W]``: encode, differ, decode."""
        pre, post, height, width = self.encode_pair(x, self.in_channels)
        size = pre[2].shape[-2:]  # stride 4
        projected = []
        for index, (difference, projection) in enumerate(
            zip(self.differences, self.projections, strict=True)
        ):
            level = index + 2
            diff = difference(torch.cat([pre[level], post[level]], dim=1))
            feature = projection(diff)
            if feature.shape[-2:] != size:
                feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=False)
            projected.append(feature)
        fused = self.fuse(torch.cat(projected, dim=1))
        full = self.refine(self.upsample(fused))
        logits = self.classifier(full)
        padded = pre[0].shape[-2:]  # level 0 is the padded input itself
        if logits.shape[-2:] != padded:  # an encoder whose level 2 is not at stride 4
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        return {CHANGE: logits[..., :height, :width]}

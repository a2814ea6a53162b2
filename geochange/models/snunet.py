"""SNUNet-CD: a siamese nested UNet with dense skips and ensemble channel attention.

Fang, Li, Shi & Wang, "SNUNet-CD: A Densely Connected Siamese Network for Change Detection of
VHR Images", IEEE GRSL 19, 2022 (published online 2021). One encoder of VGG-style conv blocks
is shared by the two dates; a UNet++-style grid of decoder nodes ``X^{i,j}`` sees, at its
level ``i``, both dates' encoder features, every earlier node of the level and the upsampled
node below; the Ensemble Channel Attention Module (ECAM) weighs the top-level nodes' outputs
(the nested UNet's semantic levels) before the change classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE
from geochange.models.base import ChangeModel, conv_bn_relu

#: Backbone names SNUNet accepts: it builds its own encoder.
SNUNET_BACKBONES = (None, "snunet")


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return the VGG-style unit of every SNUNet node: two conv3x3-BN-ReLU layers.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.

    Returns:
        The block.
    """
    return nn.Sequential(
        conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels)
    )


class SNUNetEncoder(nn.Module):
    """Max-pool + conv block per level: widths ``base * 2**i``, stride ``2**i`` at level ``i``."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        """Build the encoder.

        Args:
            in_channels: Bands of one date.
            widths: Output channels per level.
        """
        super().__init__()
        inputs = [in_channels, *widths[:-1]]
        self.blocks = nn.ModuleList(conv_block(a, b) for a, b in zip(inputs, widths, strict=True))
        self.out_channels = list(widths)
        self.output_stride = 2 ** (len(widths) - 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode a batch of single-date images.

        Args:
            x: Images ``[N, C, H, W]`` with ``H``, ``W`` multiples of ``output_stride``.

        Returns:
            Features per level, full resolution first.
        """
        features = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            features.append(block(F.max_pool2d(features[-1], 2)))
        return features


class ChannelAttention(nn.Module):
    """CBAM-style channel attention: ``sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        """Build the module.

        Args:
            channels: Channels of the input.
            hidden: Width of the shared two-layer MLP (1x1 convolutions).
        """
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Channel weights of ``x``.

        Args:
            x: Features ``[B, C, H, W]``.

        Returns:
            Weights in ``(0, 1)``, ``[B, C, 1, 1]``.
        """
        average = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        maximum = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(average + maximum)


class EnsembleChannelAttention(nn.Module):
    """ECAM over the ``n`` top-level outputs ``F_1..F_n`` of the nested decoder.

    ``M_intra = CA(sum_k F_k)`` weighs the channels the outputs share; ``M_inter =
    CA(cat_k F_k)`` weighs every channel of the ensemble; the result is
    ``M_inter * (cat_k F_k + repeat_n(M_intra))``.
    """

    def __init__(self, channels: int, outputs: int, hidden: int) -> None:
        """Build the module.

        Args:
            channels: Channels of one top-level output.
            outputs: Number of top-level outputs ``n``.
            hidden: MLP width of both channel attentions.
        """
        super().__init__()
        self.outputs = outputs
        self.intra = ChannelAttention(channels, hidden)
        self.inter = ChannelAttention(channels * outputs, hidden)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Weigh the ensemble of top-level outputs.

        Args:
            features: The ``n`` outputs, each ``[B, C, H, W]``.

        Returns:
            Weighted ensemble ``[B, n * C, H, W]``.
        """
        ensemble = torch.cat(features, dim=1)
        intra = self.intra(torch.stack(features).sum(dim=0)).repeat(1, self.outputs, 1, 1)
        return self.inter(ensemble) * (ensemble + intra)


class SNUNet(ChangeModel):
    """SNUNet-CD (Fang et al. 2021): siamese nested UNet with dense skips and ECAM.

    The encoder has ``encoder_depth`` levels (5 in the paper) of widths ``width * 2**i``.
    Decoder node ``X^{i,j}`` (``j >= 1``, ``i + j < depth``) is a conv block over
    ``cat(X_pre^{i,0}, X_post^{i,0}, X^{i,1}, ..., X^{i,j-1}, up(X^{i+1,j-1}))``, where the
    column-0 node below is the *post*-date encoder feature (as in the paper's figure) and
    ``up`` is a bilinear x2 upsampling (parameter-free; the paper's upsampling is not
    specified further). ECAM weighs the ``depth - 1`` top-level nodes ``X^{0,1..depth-1}``
    and a 1x1 convolution gives the change logit (one logit, not the paper's two-class
    softmax). Inputs are padded (replicate) to a multiple of ``2**(depth - 1)`` and cropped
    back.

    SNUNet builds its own encoder: ``backbone`` must be ``None`` (the registry default) or
    ``"snunet"``, and there are no smp pretrained weights; load a trained SNUNet state dict
    with ``build_model("snunet", weights=path)``.

    State-dict layout (top-level prefixes): ``encoder.blocks.<i>.`` (level ``i``, shared by
    both dates), ``nodes.x<i>_<j>.`` (decoder node ``X^{i,j}``), ``ecam.intra.``,
    ``ecam.inter.``, ``classifier.``.

    Output: ``{"change": logits [B, 1, H, W]}``.
    """

    def __init__(
        self,
        backbone: str | None = None,
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        width: int = 32,
        encoder_depth: int = 5,
        encoder_weights: str | None = None,
        attention_hidden: int | None = None,
    ) -> None:
        """Build the model.

        Args:
            backbone: ``None`` or ``"snunet"`` (SNUNet has its own encoder).
            in_channels: Bands per date (any count).
            num_classes: Unused (binary change model); accepted for the registry contract.
            width: Channels of the first level (32 in the paper's SNUNet-CD/32; 16 and 48
                are the paper's other variants).
            encoder_depth: Encoder levels (3-5); ECAM sees ``encoder_depth - 1`` outputs.
            encoder_weights: Must be ``None``: no smp weights exist for this encoder.
            attention_hidden: MLP width of the ECAM channel attentions; ``width // 4`` when
                ``None``.

        Raises:
            ConfigurationError: On a backbone name, pretrained weights or invalid sizes.
        """
        super().__init__()
        del num_classes  # binary model
        if backbone not in SNUNET_BACKBONES:
            raise ConfigurationError(
                f"snunet builds its own VGG-style encoder; backbone must be None or 'snunet', "
                f"got {backbone!r} (use width= and encoder_depth= to size it)"
            )
        if encoder_weights is not None:
            raise ConfigurationError(
                "snunet has no smp pretrained weights; pass the path of a trained SNUNet state "
                "dict as weights= instead"
            )
        if not 3 <= encoder_depth <= 5 or width < 1:
            raise ConfigurationError(
                f"snunet needs encoder_depth in 3..5 and width >= 1, got {encoder_depth}, {width}"
            )
        self.in_channels = in_channels
        self.depth = encoder_depth
        widths = [width * 2**level for level in range(encoder_depth)]
        self.encoder = SNUNetEncoder(in_channels, widths)
        self.nodes = nn.ModuleDict()
        for column in range(1, encoder_depth):
            for level in range(encoder_depth - column):
                inputs = (column + 1) * widths[level] + widths[level + 1]
                self.nodes[f"x{level}_{column}"] = conv_block(inputs, widths[level])
        hidden = attention_hidden or max(1, width // 4)
        self.ecam = EnsembleChannelAttention(width, encoder_depth - 1, hidden)
        self.classifier = nn.Conv2d(width * (encoder_depth - 1), 1, 1)

    @property
    def node_count(self) -> int:
        """Number of nested decoder nodes ``X^{i,j}`` (``j >= 1``): 10 at depth 5."""
        return len(self.nodes)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Change logits ``[B, 1, H, W]`` of ``[B, 2, C, H, W]``: nested decoder, ECAM."""
        pre, post, height, width = self.encode_pair(x, self.in_channels)
        # grid[level][column] is X^{level,column}; column 0 keeps the post-date encoder output.
        grid: list[list[Tensor]] = [[feature] for feature in post]
        for column in range(1, self.depth):
            for level in range(self.depth - column):
                below = grid[level + 1][column - 1]
                up = F.interpolate(
                    below, size=pre[level].shape[-2:], mode="bilinear", align_corners=False
                )
                inputs = [pre[level], post[level], *grid[level][1:column], up]
                grid[level].append(self.nodes[f"x{level}_{column}"](torch.cat(inputs, dim=1)))
        logits = self.classifier(self.ecam(grid[0][1:]))
        return {CHANGE: logits[..., :height, :width]}

"""Early fusion: the two dates stacked as channels of one image.

:class:`EarlyFusionUNet` is a UNet whose encoder sees ``[B, 2C, H, W]`` (the architecture of
TorchGeo's ``ChangeDetection(model="unet")``, with the same parameter names, so that task's
weights load into it). :class:`StackedDates` adapts any network taking the stacked layout to the
geochange model contract (``[B, 2, C, H, W]`` in, a dict with ``"change"`` out), so predictors
and exported engines see an ordinary bi-temporal model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE
from geochange.models.base import ChangeModel, check_input, make_encoder, pad_to_multiple

__all__ = ["INPUT_LAYOUTS", "EarlyFusionUNet", "StackedDates", "adapt_input_layout"]

#: How a model takes the two dates: ``"temporal"`` ``[B, 2, C, H, W]`` (the geochange contract)
#: or ``"stacked"`` ``[B, 2C, H, W]`` (channels of the pre date first, as TorchGeo stacks them).
INPUT_LAYOUTS = ("temporal", "stacked")


class EarlyFusionUNet(ChangeModel):
    """UNet on the two dates stacked as channels (early fusion).

    The encoder's first convolution takes ``2 * in_channels`` bands (pre date first); an smp
    ``UnetDecoder`` and a 3x3 head give one change logit per pixel. Parameter names are those of
    ``segmentation_models_pytorch.Unet`` (``encoder.*``, ``decoder.*``, ``segmentation_head.*``),
    which TorchGeo's ``ChangeDetection(model="unet")`` trains. Inputs of any size are padded
    (replicate) to the encoder's stride and cropped back. Binary change only.

    Outputs of ``forward``: ``"change"`` logits ``[B, 1, H, W]``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name.
            in_channels: Bands per date (the encoder gets twice as many).
            num_classes: Accepted for the registry's signature; the model has no class head.
            encoder_weights: smp pretrained weights of the encoder (``None``: random init).
            encoder_depth: Encoder stages (1-5).
            decoder_channels: Channels of the decoder blocks (cut to ``encoder_depth``).
        """
        super().__init__()
        del num_classes  # binary: no semantic head
        self.in_channels = in_channels
        self.encoder = make_encoder(backbone, 2 * in_channels, encoder_depth, encoder_weights)
        channels = tuple(decoder_channels)[:encoder_depth]
        self.decoder = UnetDecoder(
            encoder_channels=list(self.encoder.out_channels),  # type: ignore[arg-type]
            decoder_channels=channels,
            n_blocks=encoder_depth,
            add_center_block=backbone.startswith("vgg"),
        )
        self.segmentation_head = SegmentationHead(channels[-1], 1, kernel_size=3)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Change logits for a bi-temporal batch.

        Args:
            x: Input ``[B, 2, C, H, W]``; any ``H``, ``W``.

        Returns:
            ``{"change": [B, 1, H, W]}``.
        """
        check_input(x, self.in_channels)
        stacked, height, width = pad_to_multiple(x.flatten(1, 2), self.pad_multiple)
        decoded = self.decoder(self.encoder(stacked))
        return {CHANGE: self.segmentation_head(decoded)[..., :height, :width]}


class StackedDates(nn.Module):
    """Run a network that takes the dates stacked as channels on ``[B, 2, C, H, W]`` batches.

    ``forward`` reshapes ``[B, 2, C, H, W]`` to ``[B, 2C, H, W]`` (pre-date bands first) and
    returns the network's output, a dict as given or a tensor as ``{"change": logits}``. The
    wrapped network's parameters sit under ``model.``.

    Attributes:
        model: The wrapped network.
        in_channels: Bands per date, checked on every batch when given.
    """

    def __init__(self, model: nn.Module, in_channels: int | None = None) -> None:
        """Wrap ``model``.

        Args:
            model: Network taking ``[B, 2C, H, W]``.
            in_channels: Bands per date ``C`` (checked when given).
        """
        super().__init__()
        self.model = model
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> dict[str, Any]:
        """The wrapped network's output for the stacked batch.

        Args:
            x: Input ``[B, 2, C, H, W]``.

        Returns:
            A dict with ``"change"`` logits (``[B, 1, H, W]``, or ``[B, 2, H, W]`` for a
            two-class network).
        """
        check_input(x, self.in_channels if self.in_channels is not None else x.shape[2])
        out = self.model(x.flatten(1, 2))
        return out if isinstance(out, dict) else {CHANGE: out}


def adapt_input_layout(
    model: nn.Module, input_layout: str, in_channels: int | None = None
) -> nn.Module:
    """``model`` as a bi-temporal model: wrapped in :class:`StackedDates` for ``"stacked"``.

    A model that is already a :class:`StackedDates` is returned as it is.

    Args:
        model: The network.
        input_layout: ``"temporal"`` or ``"stacked"`` (see :data:`INPUT_LAYOUTS`).
        in_channels: Bands per date, checked by the adapter when given.

    Returns:
        A module taking ``[B, 2, C, H, W]``.

    Raises:
        ConfigurationError: An unknown layout.
    """
    if input_layout not in INPUT_LAYOUTS:
        raise ConfigurationError(
            f"input_layout must be one of {INPUT_LAYOUTS}, got {input_layout!r}"
        )
    if input_layout == "temporal" or isinstance(model, StackedDates):
        return model
    return StackedDates(model, in_channels)

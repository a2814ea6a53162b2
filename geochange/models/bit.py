"""BIT: the Bitemporal Image Transformer change model (Chen, Qi & Shi 2021).

"Remote Sensing Image Change Detection with Transformers", IEEE TGRS 60 (2022),
doi:10.1109/TGRS.2021.3095166. Written from the paper's description: a CNN backbone gives a
feature map per date; a semantic tokenizer pools each map into a few tokens through learned
spatial attention; a transformer encoder models the context of the tokens of both dates; a
transformer decoder projects the refined tokens back onto the pixels of each date; the
absolute difference of the two refined maps goes through a small prediction head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.errors import ConfigurationError
from geochange.keys import CHANGE
from geochange.models.base import ChangeModel, conv_bn_relu
from geochange.models.truncate import make_truncated_encoder


class TokenAttention(nn.Module):
    """Multi-head attention of ``query`` over ``context`` (self-attention when they coincide)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        """Build the projections.

        Args:
            dim: Channels of the queries and the context.
            heads: Attention heads.
            head_dim: Channels per head (the inner width is ``heads * head_dim``).
            dropout: Dropout on the attention weights (training only).
        """
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = heads * head_dim
        self.to_query = nn.Linear(dim, inner, bias=False)
        self.to_key = nn.Linear(dim, inner, bias=False)
        self.to_value = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, query: Tensor, context: Tensor) -> Tensor:
        """Attend.

        Args:
            query: ``[N, Q, dim]``.
            context: ``[N, K, dim]``.

        Returns:
            ``[N, Q, dim]``.
        """
        attended = F.scaled_dot_product_attention(
            self._split(self.to_query(query)),
            self._split(self.to_key(context)),
            self._split(self.to_value(context)),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.to_out(attended.transpose(1, 2).flatten(2))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: (cross-)attention then an MLP, each with a residual.

    Without a context it is the encoder layer (self-attention over the tokens); with one it is
    BIT's decoder layer, in which the pixels are the queries and the tokens the keys/values
    (the paper's decoder has no self-attention among pixels).
    """

    def __init__(
        self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float, cross: bool
    ) -> None:
        """Build the layer.

        Args:
            dim: Channels of the sequence.
            heads: Attention heads.
            head_dim: Channels per head.
            mlp_dim: Hidden width of the MLP.
            dropout: Dropout of the attention weights and the MLP.
            cross: Attend to a separate context (decoder) instead of the input itself.
        """
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attention = TokenAttention(dim, heads, head_dim, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the layer.

        Args:
            x: ``[N, S, dim]``.
            context: ``[N, K, dim]`` for a cross-attention layer.

        Returns:
            ``[N, S, dim]``.
        """
        query = self.norm_query(x)
        if self.norm_context is not None:
            assert context is not None
            keys = self.norm_context(context)
        else:
            keys = query
        x = x + self.attention(query, keys)
        return x + self.mlp(self.norm_mlp(x))


class BIT(ChangeModel):
    """Bitemporal Image Transformer (BIT, Chen et al. 2021).

    1. Backbone: the smp encoder ``backbone`` cut after ``encoder_depth`` stages (default: the
       first four of resnet18, up to ``layer3``), its deepest stages dilated so the feature
       keeps ``output_stride`` 8; upsampled ``feature_upsample`` times (to 1/4 by default, as
       in the paper) and reduced to ``token_channels`` ``C`` by a 1x1 conv.
    2. Semantic tokenizer: a 1x1 conv gives ``num_tokens`` ``L`` attention maps per date,
       softmax-normalised over the pixels; each token is the attention-weighted sum of the
       features (:meth:`tokenize`).
    3. Transformer encoder (``encoder_layers``, 1 in the paper) over the ``2L`` tokens of both
       dates, with a learned positional embedding.
    4. Transformer decoder (``decoder_layers``, 8 in the paper) per date: the pixels attend to
       that date's refined tokens.
    5. Prediction: ``|X_pre - X_post|``, bilinear upsampling to the input size, then two 3x3
       convs (conv-BN-ReLU, conv) to the change logits.

    Inputs of any size are padded (replicate) to a multiple of the encoder's output stride and
    the logits cropped back. Outputs: ``"change"`` logits ``[B, 1, H, W]``.

    State-dict layout (top-level prefixes): ``encoder.`` (the smp encoder; stages beyond
    ``encoder_depth`` absent, so full smp/timm encoder weights load with ``strict=False`` or
    through :func:`geochange.models.load_pretrained`), ``reduce.`` (1x1 conv),
    ``tokenizer.`` (1x1 conv to the ``L`` attention maps), ``token_position`` (``[1, 2L, C]``),
    ``token_encoder.<i>.``, ``token_decoder.<i>.`` (transformer layers: ``norm_query``,
    ``norm_context`` (decoder only), ``attention.to_query/to_key/to_value/to_out``,
    ``norm_mlp``, ``mlp.0``, ``mlp.3``) and ``head.`` (``head.0`` conv-BN-ReLU,
    ``head.1`` conv).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 3,
        num_classes: int | None = None,
        *,
        encoder_depth: int = 4,
        encoder_weights: str | None = None,
        output_stride: int | None = 8,
        feature_upsample: int = 2,
        token_channels: int = 32,
        num_tokens: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 8,
        heads: int = 8,
        head_dim: int = 64,
        mlp_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        """Build the model.

        Args:
            backbone: smp encoder name.
            in_channels: Bands per date.
            num_classes: Unused (BIT is a binary change model); accepted for the registry.
            encoder_depth: Encoder stages kept (the feature of the last one is tokenized).
            encoder_weights: smp pretrained weights name, or ``None`` (random init).
            output_stride: Dilate the deepest kept stages to this stride (8 or 16); ``None``
                keeps the encoder's own downsampling (needed for encoders without dilation).
            feature_upsample: Bilinear upsampling of the backbone feature before the tokenizer.
            token_channels: Feature and token width ``C`` (32 in the paper).
            num_tokens: Tokens per date ``L`` (4 in the paper).
            encoder_layers: Transformer encoder layers (1 in the paper).
            decoder_layers: Transformer decoder layers (8 in the paper).
            heads: Attention heads (8 in the paper).
            head_dim: Channels per attention head (64 in the paper).
            mlp_dim: Hidden width of the transformer MLPs (``2C`` in the paper).
            dropout: Dropout in the transformer layers (training only).

        Raises:
            ConfigurationError: On invalid sizes.
        """
        super().__init__()
        if min(num_tokens, token_channels, heads, head_dim, mlp_dim, feature_upsample) < 1:
            raise ConfigurationError("BIT sizes (tokens, channels, heads, ...) must be >= 1")
        if encoder_layers < 0 or decoder_layers < 0:
            raise ConfigurationError("encoder_layers and decoder_layers must be >= 0")
        self.in_channels = in_channels
        self.num_tokens = num_tokens
        self.feature_upsample = feature_upsample
        self.encoder = make_truncated_encoder(
            backbone, in_channels, encoder_depth, encoder_weights, output_stride
        )
        deepest = int(self.encoder.out_channels[-1])  # type: ignore[index]
        self.reduce = nn.Conv2d(deepest, token_channels, kernel_size=1)
        self.tokenizer = nn.Conv2d(token_channels, num_tokens, kernel_size=1)
        # Small init, as for ViT position embeddings: tokens start close to the pooled features.
        self.token_position = nn.Parameter(0.02 * torch.randn(1, 2 * num_tokens, token_channels))
        sizes = (token_channels, heads, head_dim, mlp_dim, dropout)
        self.token_encoder = nn.ModuleList(
            TransformerLayer(*sizes, cross=False) for _ in range(encoder_layers)
        )
        self.token_decoder = nn.ModuleList(
            TransformerLayer(*sizes, cross=True) for _ in range(decoder_layers)
        )
        self.head = nn.Sequential(
            conv_bn_relu(token_channels, token_channels),
            nn.Conv2d(token_channels, 1, kernel_size=3, padding=1),
        )

    def tokenize(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Pool a feature map into ``L`` semantic tokens by spatial attention.

        Args:
            features: ``[N, C, h, w]``.

        Returns:
            Tokens ``[N, L, C]`` and the attention maps ``[N, L, h * w]`` (each sums to 1
            over the pixels).
        """
        attention = self.tokenizer(features).flatten(2).softmax(dim=-1)
        tokens = torch.einsum("nlp,ncp->nlc", attention, features.flatten(2))
        return tokens, attention

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Predict change logits for a bi-temporal batch.

        Args:
            x: Input ``[B, 2, C, H, W]``; any ``H``, ``W``.

        Returns:
            ``{"change": logits [B, 1, H, W]}``.
        """
        batch = x.shape[0]
        # Both dates in one encoder call: [2B, ...], dates interleaved per sample.
        features, height, width = self.encode_dates(x, self.in_channels)
        padded_size = features[0].shape[-2:]
        feature = features[-1]
        if self.feature_upsample > 1:
            feature = F.interpolate(
                feature, scale_factor=self.feature_upsample, mode="bilinear", align_corners=False
            )
        feature = self.reduce(feature)
        tokens, _ = self.tokenize(feature)
        # Context over the tokens of both dates together: [B, 2L, C].
        tokens = tokens.reshape(batch, 2 * self.num_tokens, -1) + self.token_position
        for layer in self.token_encoder:
            tokens = layer(tokens)
        tokens = tokens.reshape(2 * batch, self.num_tokens, -1)
        pixels = feature.flatten(2).transpose(1, 2)
        for layer in self.token_decoder:
            pixels = layer(pixels, tokens)
        refined = pixels.transpose(1, 2).reshape(batch, 2, *feature.shape[1:])
        difference = (refined[:, 0] - refined[:, 1]).abs()
        difference = F.interpolate(
            difference, size=padded_size, mode="bilinear", align_corners=False
        )
        return {CHANGE: self.head(difference)[..., :height, :width]}

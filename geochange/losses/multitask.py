"""Multitask loss of semantic change detection (ClearSCD-style models)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from geochange import keys
from geochange.classes import IGNORE_INDEX
from geochange.errors import DataError
from geochange.losses.binary import BCEDiceLoss, masked_cross_entropy
from geochange.losses.contrastive import BSCCLoss, SACLLoss


class SCDMultitaskLoss(nn.Module):
    """Semantic change detection loss: CE x2 + change (BCE + Dice) + BSCC + SACL.

    Consumes the output dict of :class:`geochange.models.SemanticChangeNet`:

    - ``semantic_weight * (CE(semantic_pre, mask_pre) + CE(semantic_post, mask_post))``, with
      unlabeled pixels (``ignore_index``) ignored;
    - ``change_weight * (BCE + Dice)(change, mask)``;
    - ``bscc_weight * BSCC(semantic_features_pre, semantic_features_post, change, mask)``
      (skipped if the features are missing);
    - ``sacl_weight * SACL(embedding_pre, embedding_post, mask_pre, mask_post)`` (skipped if
      the embeddings are missing, e.g. in eval mode, or if ``sacl_weight`` is 0).

    Semantic terms are skipped when ``mask_pre``/``mask_post`` are ``None`` (change-only
    labels). The forward returns a dict: ``"loss"`` (the weighted total, to back-propagate) and
    the unweighted terms ``"semantic_pre"``, ``"semantic_post"``, ``"change"``, ``"bscc"``,
    ``"sacl"`` for logging.
    """

    def __init__(
        self,
        num_classes: int = 7,
        *,
        semantic_weight: float = 1.0,
        change_weight: float = 1.0,
        bscc_weight: float = 1.0,
        sacl_weight: float = 0.1,
        margin: float = 2.0,
        pos_weight: float | None = None,
        embedding_dim: int = 32,
        temperature: float = 0.1,
        pixel_queue_size: int = 512,
        region_queue_size: int = 64,
        pixels_per_class: int = 64,
        hard_queries_per_class: int = 32,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        """Create the loss.

        Args:
            num_classes: Semantic classes ``K``.
            semantic_weight: Weight of each date's cross-entropy.
            change_weight: Weight of the change BCE + Dice.
            bscc_weight: Weight of BSCC.
            sacl_weight: Weight of SACL (0 disables it).
            margin: BSCC margin.
            pos_weight: BCE positive weight of the change loss.
            embedding_dim: SACL embedding size (the model's ``projection_dim``).
            temperature: SACL temperature.
            pixel_queue_size: SACL pixel queue length per class.
            region_queue_size: SACL region queue length per class.
            pixels_per_class: SACL local-level samples per class.
            hard_queries_per_class: SACL global-level queries per class.
            ignore_index: Unlabeled value in all label maps.
        """
        super().__init__()
        self.semantic_weight = semantic_weight
        self.change_weight = change_weight
        self.bscc_weight = bscc_weight
        self.sacl_weight = sacl_weight
        self.ignore_index = ignore_index
        self.change_loss = BCEDiceLoss(pos_weight=pos_weight, ignore_index=ignore_index)
        self.bscc = BSCCLoss(margin=margin, ignore_index=ignore_index)
        self.sacl = SACLLoss(
            num_classes,
            embedding_dim=embedding_dim,
            temperature=temperature,
            pixel_queue_size=pixel_queue_size,
            region_queue_size=region_queue_size,
            pixels_per_class=pixels_per_class,
            hard_queries_per_class=hard_queries_per_class,
            ignore_index=ignore_index,
        )

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        mask: Tensor,
        mask_pre: Tensor | None = None,
        mask_post: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute all terms.

        Args:
            outputs: Model outputs (see the class docstring for the keys used).
            mask: Change labels ``[B, H, W]``.
            mask_pre: Pre-date class labels ``[B, H, W]`` or ``None``.
            mask_post: Post-date class labels ``[B, H, W]`` or ``None``.

        Returns:
            ``{"loss": total, "semantic_pre", "semantic_post", "change", "bscc", "sacl"}``.
        """
        if keys.CHANGE not in outputs:
            raise DataError(f"model outputs lack the {keys.CHANGE!r} key (got {sorted(outputs)})")
        change_logits = outputs[keys.CHANGE]
        zero = change_logits.sum() * 0.0
        terms = {"semantic_pre": zero, "semantic_post": zero, "bscc": zero, "sacl": zero}
        terms["change"] = self.change_loss(change_logits, mask)
        has_semantic = mask_pre is not None and mask_post is not None
        if has_semantic and keys.SEMANTIC_PRE in outputs and keys.SEMANTIC_POST in outputs:
            assert mask_pre is not None and mask_post is not None
            terms["semantic_pre"] = masked_cross_entropy(
                outputs[keys.SEMANTIC_PRE], mask_pre, self.ignore_index
            )
            terms["semantic_post"] = masked_cross_entropy(
                outputs[keys.SEMANTIC_POST], mask_post, self.ignore_index
            )
        if self.bscc_weight and keys.SEMANTIC_FEATURES_PRE in outputs:
            terms["bscc"] = self.bscc(
                outputs[keys.SEMANTIC_FEATURES_PRE],
                outputs[keys.SEMANTIC_FEATURES_POST],
                change_logits,
                mask,
            )
        if self.sacl_weight and has_semantic and keys.EMBEDDING_PRE in outputs:
            assert mask_pre is not None and mask_post is not None
            terms["sacl"] = self.sacl(
                outputs[keys.EMBEDDING_PRE],
                outputs[keys.EMBEDDING_POST],
                mask_pre,
                mask_post,
                outputs.get(keys.SEMANTIC_PRE),
                outputs.get(keys.SEMANTIC_POST),
            )
        total = (
            self.semantic_weight * (terms["semantic_pre"] + terms["semantic_post"])
            + self.change_weight * terms["change"]
            + self.bscc_weight * terms["bscc"]
            + self.sacl_weight * terms["sacl"]
        )
        return {"loss": total, **terms}

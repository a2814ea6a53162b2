"""Metric and contrastive losses: BSCC, batch-balanced contrastive loss and SACL."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError, DataError


def feature_distance(features_pre: Tensor, features_post: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-pixel L2 distance between two feature maps.

    Args:
        features_pre: ``[B, D, H, W]``.
        features_post: ``[B, D, H, W]``.
        eps: Added under the square root so the gradient stays finite at distance 0.

    Returns:
        Distances ``[B, H, W]``.
    """
    if features_pre.shape != features_post.shape:
        raise DataError(
            f"feature maps differ in shape: {tuple(features_pre.shape)} vs "
            f"{tuple(features_post.shape)}"
        )
    return torch.sqrt((features_pre - features_post).pow(2).sum(dim=1) + eps)


def _squeeze_channel(x: Tensor) -> Tensor:
    return x[:, 0] if x.dim() == 4 and x.shape[1] == 1 else x


class BSCCLoss(nn.Module):
    """Bi-temporal semantic-change consistency (BSCC) loss of ClearSCD-style models.

    With ``d`` the L2 distance between the two dates' semantic features at a pixel and ``p``
    the change branch's probability there::

        unchanged pixels (label 0):  (1 - p) * d^2
        changed pixels   (label 1):  p * max(0, margin - d)^2

    summed and divided by the number of labelled pixels. Features are pulled together where
    the change branch says "unchanged" and pushed beyond the margin where it says "changed",
    each term weighted by the branch's probability and restricted to pixels whose true change
    label agrees. ``p`` is detached by default so BSCC shapes the semantic features only; the
    weights would otherwise push ``p`` towards the wrong class.
    """

    def __init__(
        self,
        margin: float = 2.0,
        ignore_index: int | None = IGNORE_INDEX,
        detach_probability: bool = True,
    ) -> None:
        """Create the loss.

        Args:
            margin: Distance beyond which changed pixels are not penalised.
            ignore_index: Change label value excluded from the loss.
            detach_probability: Stop gradients into the change branch.
        """
        super().__init__()
        self.margin = margin
        self.ignore_index = ignore_index
        self.detach_probability = detach_probability

    def forward(
        self, features_pre: Tensor, features_post: Tensor, change_logits: Tensor, target: Tensor
    ) -> Tensor:
        """Compute the loss.

        Args:
            features_pre: Semantic features of the pre date ``[B, D, H, W]``.
            features_post: Semantic features of the post date ``[B, D, H, W]``.
            change_logits: Change logits ``[B, 1, H, W]``.
            target: Change labels ``[B, H, W]`` (0, 1, ``ignore_index``).

        Returns:
            Scalar loss.
        """
        distance = feature_distance(features_pre, features_post)
        probability = torch.sigmoid(_squeeze_channel(change_logits))
        if self.detach_probability:
            probability = probability.detach()
        target = _squeeze_channel(target)
        if distance.shape != target.shape or probability.shape != target.shape:
            raise DataError(
                f"BSCC inputs differ in size: distance {tuple(distance.shape)}, change "
                f"{tuple(probability.shape)}, target {tuple(target.shape)}"
            )
        unchanged = target == 0
        changed = target == 1
        count = (unchanged | changed).sum()
        if int(count) == 0:
            return distance.sum() * 0.0
        pull = ((1.0 - probability) * distance.pow(2))[unchanged].sum()
        push = (probability * F.relu(self.margin - distance).pow(2))[changed].sum()
        return (pull + push) / count


class BatchBalancedContrastiveLoss(nn.Module):
    """Batch-balanced contrastive loss (BCL) on a bi-temporal feature distance map.

    ``0.5 * mean_{unchanged}(d^2) + 0.5 * mean_{changed}(max(0, margin - d)^2)``: unchanged
    pixels are pulled to distance 0, changed ones pushed beyond ``margin``; each class is
    averaged separately so rare change is not swamped. A class absent from the batch adds 0.
    Used with the ``"feature_distance"`` output of the DiffMatch auxiliary decoders.
    """

    def __init__(self, margin: float = 2.0, ignore_index: int | None = IGNORE_INDEX) -> None:
        """Create the loss.

        Args:
            margin: Distance beyond which changed pixels are not penalised.
            ignore_index: Label value excluded from the loss.
        """
        super().__init__()
        self.margin = margin
        self.ignore_index = ignore_index

    def forward(self, distance: Tensor, target: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            distance: Distances ``[B, 1, H, W]`` or ``[B, H, W]`` (non-negative).
            target: Change labels ``[B, H, W]``.

        Returns:
            Scalar loss.
        """
        distance = _squeeze_channel(distance)
        target = _squeeze_channel(target)
        if distance.shape != target.shape:
            raise DataError(
                f"distance {tuple(distance.shape)} and target {tuple(target.shape)} differ"
            )
        loss = distance.sum() * 0.0
        unchanged = target == 0
        changed = target == 1
        if bool(unchanged.any()):
            loss = loss + 0.5 * distance[unchanged].pow(2).mean()
        if bool(changed.any()):
            loss = loss + 0.5 * F.relu(self.margin - distance[changed]).pow(2).mean()
        return loss


def supervised_info_nce(
    queries: Tensor,
    query_labels: Tensor,
    keys: Tensor,
    key_labels: Tensor,
    temperature: float,
    exclude_self: bool = False,
) -> Tensor:
    """Supervised InfoNCE (SupCon) loss of L2-normalised queries against keys.

    For query ``i`` with positives ``P(i)`` (keys of the same label)::

        loss_i = -1/|P(i)| * sum_{p in P(i)} log(exp(q_i.k_p / T) / sum_a exp(q_i.k_a / T))

    averaged over the queries that have at least one positive.

    Args:
        queries: ``[M, D]`` normalised embeddings.
        query_labels: ``[M]`` class ids.
        keys: ``[N, D]`` normalised embeddings.
        key_labels: ``[N]`` class ids.
        temperature: Softmax temperature ``T``.
        exclude_self: The first ``M`` keys are the queries themselves; drop those pairs.

    Returns:
        Scalar loss (0 when no query has a positive).
    """
    if queries.numel() == 0 or keys.shape[0] < (2 if exclude_self else 1):
        return queries.sum() * 0.0
    logits = queries @ keys.T / temperature
    positives = query_labels[:, None] == key_labels[None, :]
    if exclude_self:
        eye = torch.zeros_like(positives)
        eye[:, : queries.shape[0]] = torch.eye(
            queries.shape[0], dtype=torch.bool, device=queries.device
        )
        logits = logits.masked_fill(eye, float("-inf"))
        positives = positives & ~eye
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive_count = positives.sum(dim=1)
    has_positive = positive_count > 0
    if not bool(has_positive.any()):
        return queries.sum() * 0.0
    # where() rather than multiplication: -inf * 0 would give NaN on the self pairs.
    positive_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_query = -positive_log_prob[has_positive] / positive_count[has_positive]
    return per_query.mean()


class SACLLoss(nn.Module):
    """Semantic-aware contrastive learning (SACL) with per-class memory queues.

    Works on the projected pixel embeddings of both dates (``"embedding_pre"``,
    ``"embedding_post"`` of :class:`geochange.models.SemanticChangeNet`) and their semantic
    labels. Positives are pixels/regions of the same class at either date.

    - *Local level*: up to ``pixels_per_class`` randomly sampled pixels per class are
      contrasted (supervised InfoNCE) against each other and against the per-class pixel
      memory queue.
    - *Global level*: mean embeddings of each class region (per image and date) are the keys,
      together with the per-class region memory queue; the queries are up to
      ``hard_queries_per_class`` pixels per class, hard (misclassified by the semantic logits)
      pixels first, topped up with random pixels of the class.

    After each call in training mode, ``enqueue_per_class`` detached pixel embeddings per class
    and the batch's region means are pushed into the ring-buffer queues (length
    ``pixel_queue_size`` / ``region_queue_size`` per class). Queues are buffers, so they move
    with ``.to(device)`` and are saved in checkpoints.
    """

    pixel_queue: Tensor
    pixel_count: Tensor
    pixel_pointer: Tensor
    region_queue: Tensor
    region_count: Tensor
    region_pointer: Tensor

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int = 32,
        temperature: float = 0.1,
        pixel_queue_size: int = 512,
        region_queue_size: int = 64,
        pixels_per_class: int = 64,
        hard_queries_per_class: int = 32,
        enqueue_per_class: int = 16,
        local_weight: float = 1.0,
        global_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        """Create the loss and its (empty) queues.

        Args:
            num_classes: Number of semantic classes ``K``.
            embedding_dim: Embedding size (the model's ``projection_dim``).
            temperature: InfoNCE temperature.
            pixel_queue_size: Pixel embeddings kept per class (0 disables the pixel queue).
            region_queue_size: Region means kept per class (0 disables the region queue).
            pixels_per_class: Pixels sampled per class for the local level.
            hard_queries_per_class: Queries per class for the global level.
            enqueue_per_class: Pixel embeddings pushed per class and call.
            local_weight: Weight of the local level.
            global_weight: Weight of the global level.
            ignore_index: Semantic label excluded from the loss.
        """
        super().__init__()
        if num_classes < 2 or embedding_dim < 1 or temperature <= 0:
            raise ConfigurationError(
                "SACL needs num_classes >= 2, embedding_dim >= 1 and temperature > 0"
            )
        self.num_classes = num_classes
        self.temperature = temperature
        self.pixels_per_class = pixels_per_class
        self.hard_queries_per_class = hard_queries_per_class
        self.enqueue_per_class = enqueue_per_class
        self.local_weight = local_weight
        self.global_weight = global_weight
        self.ignore_index = ignore_index
        self.register_buffer(
            "pixel_queue", torch.zeros(num_classes, pixel_queue_size, embedding_dim)
        )
        self.register_buffer("pixel_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("pixel_pointer", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer(
            "region_queue", torch.zeros(num_classes, region_queue_size, embedding_dim)
        )
        self.register_buffer("region_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("region_pointer", torch.zeros(num_classes, dtype=torch.long))

    @staticmethod
    def _queued(queue: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        keys, labels = [], []
        for cls in range(queue.shape[0]):
            filled = int(count[cls])
            if filled:
                keys.append(queue[cls, :filled])
                labels.append(torch.full((filled,), cls, dtype=torch.long, device=queue.device))
        if not keys:
            return queue.new_zeros(0, queue.shape[2]), torch.zeros(
                0, dtype=torch.long, device=queue.device
            )
        return torch.cat(keys), torch.cat(labels)

    @staticmethod
    @torch.no_grad()
    def _push(queue: Tensor, count: Tensor, pointer: Tensor, cls: int, items: Tensor) -> None:
        size = queue.shape[1]
        if size == 0 or items.numel() == 0:
            return
        items = items[-size:]
        positions = (int(pointer[cls]) + torch.arange(items.shape[0], device=queue.device)) % size
        queue[cls, positions] = items.to(queue.dtype)
        pointer[cls] = (int(pointer[cls]) + items.shape[0]) % size
        count[cls] = min(size, int(count[cls]) + items.shape[0])

    def reset_queues(self) -> None:
        """Empty both memory queues."""
        for buffer in (
            self.pixel_count,
            self.pixel_pointer,
            self.region_count,
            self.region_pointer,
        ):
            buffer.zero_()

    def forward(
        self,
        embedding_pre: Tensor,
        embedding_post: Tensor,
        labels_pre: Tensor,
        labels_post: Tensor,
        logits_pre: Tensor | None = None,
        logits_post: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss (and update the queues in training mode).

        Args:
            embedding_pre: Pre-date embeddings ``[B, D, h, w]``.
            embedding_post: Post-date embeddings ``[B, D, h, w]``.
            labels_pre: Pre-date class labels ``[B, H, W]`` (``ignore_index`` unlabeled);
                resized (nearest) to ``h x w`` if needed.
            labels_post: Post-date class labels ``[B, H, W]``.
            logits_pre: Optional pre-date class logits ``[B, K, h, w]``, to pick hard queries.
            logits_post: Optional post-date class logits.

        Returns:
            Scalar ``local_weight * local + global_weight * global`` loss.
        """
        embeddings = torch.cat([embedding_pre, embedding_post], dim=0)
        if embeddings.shape[1] != self.pixel_queue.shape[2]:
            raise DataError(
                f"SACL was built for {self.pixel_queue.shape[2]}-dim embeddings, got "
                f"{embeddings.shape[1]}"
            )
        labels = torch.cat([labels_pre, labels_post], dim=0)
        if labels.dim() == 4:
            labels = labels[:, 0]
        if labels.shape[-2:] != embeddings.shape[-2:]:
            labels = F.interpolate(
                labels[:, None].float(), size=embeddings.shape[-2:], mode="nearest"
            )[:, 0].long()
        images, dim = embeddings.shape[:2]
        flat = F.normalize(embeddings.permute(0, 2, 3, 1).reshape(-1, dim), dim=1)
        flat_labels = labels.reshape(-1).long()
        image_index = torch.arange(images, device=flat.device).repeat_interleave(
            labels.shape[-1] * labels.shape[-2]
        )
        hard = torch.zeros_like(flat_labels, dtype=torch.bool)
        if logits_pre is not None and logits_post is not None:
            logits = torch.cat([logits_pre, logits_post], dim=0)
            if logits.shape[-2:] != labels.shape[-2:]:
                logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear")
            hard = logits.argmax(dim=1).reshape(-1) != flat_labels
        valid = (flat_labels != self.ignore_index) & (flat_labels >= 0)
        valid &= flat_labels < self.num_classes

        anchors, anchor_labels, queries, query_labels = [], [], [], []
        region_means, region_labels = [], []
        to_enqueue: dict[int, Tensor] = {}
        for cls in range(self.num_classes):
            indices = torch.nonzero(valid & (flat_labels == cls)).reshape(-1)
            if indices.numel() == 0:
                continue
            sampled = indices[torch.randperm(indices.numel(), device=indices.device)]
            anchors.append(flat[sampled[: self.pixels_per_class]])
            anchor_labels.append(flat_labels[sampled[: self.pixels_per_class]])
            # Hard pixels first, then random ones, as global-level queries.
            is_hard = hard[sampled]
            ordered = torch.cat([sampled[is_hard], sampled[~is_hard]])
            queries.append(flat[ordered[: self.hard_queries_per_class]])
            query_labels.append(flat_labels[ordered[: self.hard_queries_per_class]])
            to_enqueue[cls] = flat[sampled[: self.enqueue_per_class]].detach()
            # Class-region mean embedding of every image (date) containing the class.
            owners = image_index[indices]
            sums = flat.new_zeros(images, dim).index_add_(0, owners, flat[indices])
            counts = torch.bincount(owners, minlength=images)
            present = counts > 0
            means = F.normalize(sums[present] / counts[present, None].to(flat.dtype), dim=1)
            region_means.append(means)
            region_labels.append(torch.full((means.shape[0],), cls, device=flat.device))

        if not anchors:
            return embeddings.sum() * 0.0
        anchor_tensor, anchor_label_tensor = torch.cat(anchors), torch.cat(anchor_labels)
        pixel_keys, pixel_key_labels = self._queued(self.pixel_queue, self.pixel_count)
        local = supervised_info_nce(
            anchor_tensor,
            anchor_label_tensor,
            torch.cat([anchor_tensor, pixel_keys.to(flat.dtype)]),
            torch.cat([anchor_label_tensor, pixel_key_labels]),
            self.temperature,
            exclude_self=True,
        )
        region_tensor, region_label_tensor = torch.cat(region_means), torch.cat(region_labels)
        queued_regions, queued_region_labels = self._queued(self.region_queue, self.region_count)
        global_ = supervised_info_nce(
            torch.cat(queries),
            torch.cat(query_labels),
            torch.cat([region_tensor, queued_regions.to(flat.dtype)]),
            torch.cat([region_label_tensor, queued_region_labels]),
            self.temperature,
        )
        if self.training:
            for cls, items in to_enqueue.items():
                self._push(self.pixel_queue, self.pixel_count, self.pixel_pointer, cls, items)
            for means, cls_labels in zip(region_means, region_labels, strict=True):
                cls = int(cls_labels[0])
                self._push(
                    self.region_queue, self.region_count, self.region_pointer, cls, means.detach()
                )
        return self.local_weight * local + self.global_weight * global_

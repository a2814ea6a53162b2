"""Scoring pseudo labels against a reference change map (CEG alone as a change detector).

The ratios come from :func:`geochange.metrics.scores_from_counts`, the project's one scoring of
confusion counts; undecided (ignore) pseudo labels are counted beside them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from geochange._blockwise import BlockGrid
from geochange.classes import IGNORE_INDEX
from geochange.errors import DataError
from geochange.io import check_change_mask, open_raster
from geochange.pseudo.ceg import IntArray
from geochange.pseudo.inputs import _check_grid

__all__ = ["ChangeScore", "evaluate_pseudo_labels", "score_change"]


@dataclass(frozen=True)
class ChangeScore:
    """Confusion counts of change pseudo labels against a reference change map.

    Pixels where the reference is unknown are left out. Pseudo labels set to ignore are
    *undecided*: counted apart, and as "no change" when CEG is used as a change detector.

    Attributes:
        tp: change in both.
        fp: change in the pseudo labels only.
        fn: change in the reference only (pseudo label decided "no change").
        tn: no change in both.
        undecided_change: reference change where the pseudo labels are ignore.
        undecided_no_change: reference no change where the pseudo labels are ignore.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    undecided_change: int
    undecided_no_change: int

    def _detector(self) -> dict[str, float]:
        # As a change detector: undecided reference change is missed change. NaN where a
        # ratio is undefined (see geochange.metrics.scores_from_counts).
        from geochange.metrics import scores_from_counts  # torch: imported on first use

        missed = self.fn + self.undecided_change
        return scores_from_counts(self.tp, self.fp, missed, empty=float("nan"))

    @property
    def iou_change(self) -> float:
        """IoU of the change class (IoU^c), ignored pixels counted as "no change"."""
        return float(self._detector()["iou"])

    @property
    def iou_change_decided(self) -> float:
        """IoU^c over the pixels the pseudo labels decide (the quality of the labels used)."""
        from geochange.metrics import scores_from_counts

        return float(scores_from_counts(self.tp, self.fp, self.fn, empty=float("nan"))["iou"])

    @property
    def precision(self) -> float:
        """Precision of the change class."""
        return float(self._detector()["precision"])

    @property
    def recall(self) -> float:
        """Recall of the change class, ignored pixels counted as "no change"."""
        return float(self._detector()["recall"])

    @property
    def f1(self) -> float:
        """F1 of the change class, ignored pixels counted as "no change" (NaN when empty)."""
        return float(self._detector()["f1"])

    @property
    def coverage(self) -> float:
        """Fraction of the reference's known pixels the pseudo labels decide (0 or 1)."""
        known = self.tp + self.fp + self.fn + self.tn
        total = known + self.undecided_change + self.undecided_no_change
        return known / total if total else float("nan")

    def __add__(self, other: ChangeScore) -> ChangeScore:
        return ChangeScore(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))

    def as_dict(self) -> dict[str, float]:
        """Counts and derived metrics as a flat dictionary (for printing or logging)."""
        return {
            **{k: float(v) for k, v in asdict(self).items()},
            "iou_change": self.iou_change,
            "iou_change_decided": self.iou_change_decided,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "coverage": self.coverage,
        }


def _fields(score: ChangeScore) -> tuple[int, ...]:
    return (
        score.tp, score.fp, score.fn, score.tn, score.undecided_change, score.undecided_no_change
    )  # fmt: skip


def score_change(
    pseudo: IntArray,
    reference: IntArray,
    *,
    ignore_index: int = IGNORE_INDEX,
    reference_ignore: int | None = None,
) -> ChangeScore:
    """Compare change pseudo labels (0/1/``ignore_index``) with a reference change map.

    Args:
        pseudo: pseudo labels from :func:`change_event_generation`.
        reference: reference change labels (0/1; other values are unknown and left out).
        ignore_index: the pseudo labels' ignore value.
        reference_ignore: the reference's unknown value (default ``ignore_index``).

    Returns:
        The :class:`ChangeScore`.

    Raises:
        DataError: if the shapes differ.
    """
    pseudo = np.asarray(pseudo)
    reference = np.asarray(reference)
    if pseudo.shape != reference.shape:
        raise DataError(f"pseudo labels {pseudo.shape} and reference {reference.shape} differ")
    unknown = ignore_index if reference_ignore is None else reference_ignore
    known = (reference != unknown) & ((reference == 0) | (reference == 1))
    ref_change = known & (reference == 1)
    ref_stable = known & (reference == 0)
    decided = pseudo != ignore_index
    change = decided & (pseudo == 1)
    stable = decided & (pseudo == 0)
    return ChangeScore(
        tp=int(np.count_nonzero(change & ref_change)),
        fp=int(np.count_nonzero(change & ref_stable)),
        fn=int(np.count_nonzero(stable & ref_change)),
        tn=int(np.count_nonzero(stable & ref_stable)),
        undecided_change=int(np.count_nonzero(~decided & ref_change)),
        undecided_no_change=int(np.count_nonzero(~decided & ref_stable)),
    )


def evaluate_pseudo_labels(
    pseudo: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    *,
    block_size: int = 4096,
    mask_values: str = "auto",
) -> ChangeScore:
    """Score a pseudo-label raster against a reference change raster, block by block.

    This is the unsupervised mode: CEG used alone as a change detector, its IoU^c is
    :attr:`ChangeScore.iou_change`.

    Args:
        pseudo: pseudo-label raster from :func:`generate_pseudo_labels` (nodata = ignore).
        reference: reference change raster on the same grid (0/1, nodata or 255 unknown;
            the change-mask convention of :func:`geochange.io.check_change_mask`).
        block_size: block side in pixels.
        mask_values: how the reference stores change: ``"auto"`` (0/1; a 0/255 reference is
            refused with a message naming this option), ``"0,1"`` or ``"0,255"`` (255 =
            change).

    Returns:
        The accumulated :class:`ChangeScore`.

    Raises:
        DataError: unreadable rasters, rasters on different grids, or a reference holding
            values other than 0, 1, 255 and its nodata (or a 0/255 one under ``"auto"``).
    """
    import torch

    from geochange.metrics import BinaryChangeMetrics

    # The detector view (ignore -> "no change") goes through the project's metric, which also
    # rejects references holding values other than 0/1/nodata; the undecided pixels are counted
    # beside it.
    metric = BinaryChangeMetrics(ignore_index=IGNORE_INDEX)
    undecided_change = undecided_no_change = 0
    with open_raster(pseudo) as ds_pseudo, open_raster(reference) as ds_ref:
        _check_grid(ds_ref, ds_pseudo, "reference")
        if ds_ref.count != 1 or not np.issubdtype(np.dtype(ds_ref.dtypes[0]), np.integer):
            raise DataError(
                f"reference raster {ds_ref.name!r} must be one integer band of 0/1 change labels"
            )
        pseudo_ignore = int(ds_pseudo.nodata) if ds_pseudo.nodata is not None else 255
        ref_mask = check_change_mask(
            reference, mask_values=mask_values, what="reference change raster"
        )
        for window in BlockGrid(ds_pseudo.height, ds_pseudo.width, block_size).windows():
            labels = ds_pseudo.read(1, window=window)
            ref = ref_mask.decode(ds_ref.read(1, window=window)).astype(np.int64)
            metric.update(torch.from_numpy((labels == 1).astype(np.int64)), torch.from_numpy(ref))
            undecided = labels == pseudo_ignore
            undecided_change += int(np.count_nonzero(undecided & (ref == 1)))
            undecided_no_change += int(np.count_nonzero(undecided & (ref == 0)))
    confusion = metric.confusion.cpu().numpy()  # rows: reference, columns: prediction
    return ChangeScore(
        tp=int(confusion[1, 1]),
        fp=int(confusion[0, 1]),
        fn=int(confusion[1, 0]) - undecided_change,
        tn=int(confusion[0, 0]) - undecided_no_change,
        undecided_change=undecided_change,
        undecided_no_change=undecided_no_change,
    )

"""Change event generation (CEG): change pseudo labels from per-date semantic maps.

Change labels are scarce; per-date semantic maps (e.g. from an open-vocabulary segmenter run
offline on each date) are cheap. Following DiffMatch, :func:`change_event_generation` turns a pair
of class maps (and optional class probabilities) into change pseudo labels for the classes of
interest (typically ``building``):

* ``"pixel"``: a pixel is change when it belongs to a class of interest at one date and to
  another class at the other date.
* ``"instance"``: connected instances of each class of interest are found at both dates; an
  instance is a *change event* when its IoU with every instance of the same class at the other
  date is ``<= overlap_threshold`` (``0.0``: it appeared or vanished as a whole). The union of
  the change events is the change map. Boundary noise and registration shifts of a building
  that exists at both dates never produce change.
* ``"mixed"`` (DiffMatch's default): the pixel-level change kept only inside change events.

In every mode a pixel is ``ignore_index`` where either date is uncertain: its class is
``ignore_index`` (or the raster's nodata), or, with probabilities, no class reaches
``confidence``. Instances smaller than ``min_instance_pixels`` pixels are treated as segmentation
noise: they are never change events, do not count when matching the other date, and their
pixel-level change is set to ``ignore_index`` in the instance and mixed modes.

:func:`generate_pseudo_labels` runs the same generation over whole georeferenced scenes block by
block with bounded memory. Instances that cross block edges are stitched exactly (labels on both
sides of every seam are linked and merged with a connected-components pass over the block
graph), so the output is identical to processing the whole scene as one array.
:func:`evaluate_pseudo_labels` scores the pseudo labels against a reference change raster
(unsupervised change detection: CEG alone as the detector).

Modules: :mod:`~geochange.pseudo.ceg` (generation on arrays), :mod:`~geochange.pseudo.inputs`
(class names, input rasters), :mod:`~geochange.pseudo.instances` (scene-wide instances across
block seams), :mod:`~geochange.pseudo.scene` (:func:`generate_pseudo_labels`),
:mod:`~geochange.pseudo.scoring` (:class:`ChangeScore`), :mod:`~geochange.pseudo.degrade` (a
simulated segmenter).
"""

from __future__ import annotations

# Names the single-module ``geochange.pseudo`` had, kept importable from it.
from geochange.io import CLASS_NAMES_TAG as CLASS_NAMES_TAG
from geochange.io import PSEUDO_LABELS_TAG as PSEUDO_LABELS_TAG
from geochange.pseudo.ceg import (
    DEFAULT_CLASS_NAMES,
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_INSTANCE_AREA,
    DEFAULT_MIN_INSTANCE_PIXELS,
    DEFAULT_OVERLAP_THRESHOLD,
    CEGMode,
    change_event_generation,
    change_event_generation_batch,
)
from geochange.pseudo.ceg import BoolArray as BoolArray
from geochange.pseudo.ceg import FloatArray as FloatArray
from geochange.pseudo.ceg import IntArray as IntArray
from geochange.pseudo.degrade import DEFAULT_CONFUSIONS, degrade_class_map
from geochange.pseudo.inputs import resolve_change_classes
from geochange.pseudo.scene import PseudoLabelSummary, generate_pseudo_labels
from geochange.pseudo.scoring import ChangeScore, evaluate_pseudo_labels, score_change

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_CONFUSIONS",
    "DEFAULT_MIN_INSTANCE_AREA",
    "DEFAULT_MIN_INSTANCE_PIXELS",
    "DEFAULT_OVERLAP_THRESHOLD",
    "CEGMode",
    "ChangeScore",
    "PseudoLabelSummary",
    "change_event_generation",
    "change_event_generation_batch",
    "degrade_class_map",
    "evaluate_pseudo_labels",
    "generate_pseudo_labels",
    "resolve_change_classes",
    "score_change",
]

"""Bi-temporal change-detection datasets: TorchGeo geo datasets over scene pairs, and folders.

* :class:`BiTemporalRasterDataset`: a TorchGeo ``GeoDataset`` over a pre/post scene pair with
  raster or vector labels, streamed window by window.
* :class:`ChangeFolderDataset`: the ``A/B/label`` layout of LEVIR-CD, WHU-CD, DSIFN.
* :class:`SemanticChangeFolderDataset`: SECOND and Hi-UCD semantic change layouts.
* :func:`stack_samples`: the collate function for their DataLoaders (TorchGeo's batches,
  without the copies: batches read by ``BiTemporalRasterDataset.__getitems__`` are kept).
* :func:`spatial_split`: leak-free train/val/test regions of one scene (stripes, or blocks
  when stripes would be thinner than a window); :func:`region_boxes`: the rectangles of such
  a region, to draw windows in.
"""

from geochange.datasets.batches import stack_samples
from geochange.datasets.folder import ChangeFolderDataset, SemanticChangeFolderDataset
from geochange.datasets.geo import IGNORE_INDEX, LSSCD_CLASSES, BiTemporalRasterDataset
from geochange.datasets.splits import spatial_split
from geochange.regions import region_boxes

__all__ = [
    "IGNORE_INDEX",
    "LSSCD_CLASSES",
    "BiTemporalRasterDataset",
    "ChangeFolderDataset",
    "SemanticChangeFolderDataset",
    "region_boxes",
    "spatial_split",
    "stack_samples",
]

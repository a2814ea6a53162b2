"""Deterministic synthetic georeferenced bi-temporal scenes, generated block by block.

:func:`make_scene` writes a pair of co-registered (up to a deliberate sub-pixel shift) images of
the same place at two dates, the LsSCD land-cover maps of both dates, the binary change raster and
a GeoPackage of the buildings that appeared or disappeared. Any size up to LsSCD scale
(48000 x 32500 pixels per date) is generated in bounded memory.

How it stays exact, seamless and bounded:

* The scene is a *function of absolute pixel coordinates*. Land-cover parcels are the cells of a
  jittered-grid Voronoi diagram, rivers and roads are analytic curves, lakes and textures are
  hash-based value noise, and every random choice is a hash of the seed and of a lattice or cell
  index. Any block can therefore be computed on its own, and blocks join without seams: the
  output does not depend on the block size.
* Buildings are vector objects (rotated rectangles) generated per 256-pixel cell from a per-cell
  hash, inside disjoint slots, so they never overlap. Each block rasterises only the buildings of
  the cells around it (:func:`rasterio.features.rasterize`), and the changed ones are written to
  the GeoPackage as the exact polygons that were rasterised.
* The change raster is computed as ``semantic_pre != semantic_post`` on each block, so it agrees
  with the class rasters by construction.
* Nuisance differences that are not change: seasonal colours (crops ripen or are harvested, trees
  yellow), a different sun azimuth and elevation (shadows), global illumination and haze, sensor
  noise, and a sub-pixel to 1-pixel misregistration of the post image. ``realism=`` turns on
  harder, documented perturbations (:mod:`geochange.synthetic.realism`, preset ``"levir"``).

Where each part lives:

* :mod:`geochange.synthetic.noise`: hash-based randomness and value-noise fields.
* :mod:`geochange.synthetic.layout`: the scene model of a seed (parcels, water, roads, buildings).
* :mod:`geochange.synthetic.render`: class maps and images of one block.
* :mod:`geochange.synthetic.realism`: the realism options and presets;
  :mod:`geochange.synthetic.effects` renders them.
* :mod:`geochange.synthetic.scene`: the :class:`Scene` on disk and its manifest.
* :mod:`geochange.synthetic.generate`: :func:`make_scene`, block by block, in worker processes.
"""

from __future__ import annotations

# Class names, ids and the palette of the class rasters live in geochange.classes; they are
# re-exported here, where the scenes are drawn in them.
from geochange.classes import (
    BARE_LAND,
    BUILDING,
    CHANGE_CLASS_NAMES,
    CLASS_COLORS,
    CROPLAND,
    IGNORE_INDEX,
    LSSCD_CLASS_NAMES,
    OTHERS,
    ROAD,
    TREE,
    WATER,
)
from geochange.synthetic.generate import DEFAULT_BLOCK_SIZE, make_scene
from geochange.synthetic.layout import CELL
from geochange.synthetic.realism import (
    PERTURBATIONS,
    PRESETS,
    Distractors,
    Lean,
    Misregistration,
    Phenology,
    Radiometry,
    Realism,
    SunAngle,
    resolve_realism,
)
from geochange.synthetic.scene import (
    CLASS_NAMES,
    FORMAT_VERSION,
    LABEL_NODATA,
    MANIFEST_NAME,
    Scene,
)

# Every public name of the old geochange/synthetic.py module, class constants included.
__all__ = [
    "BARE_LAND",
    "BUILDING",
    "CELL",
    "CHANGE_CLASS_NAMES",
    "CLASS_COLORS",
    "CLASS_NAMES",
    "CROPLAND",
    "DEFAULT_BLOCK_SIZE",
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "LABEL_NODATA",
    "LSSCD_CLASS_NAMES",
    "MANIFEST_NAME",
    "OTHERS",
    "PERTURBATIONS",
    "PRESETS",
    "ROAD",
    "TREE",
    "WATER",
    "Distractors",
    "Lean",
    "Misregistration",
    "Phenology",
    "Radiometry",
    "Realism",
    "Scene",
    "SunAngle",
    "make_scene",
    "resolve_realism",
]

"""Samplers for bi-temporal scenes.

* :class:`ChangeBalancedGeoSampler`: random windows, a configurable fraction of which are drawn
  around change (change pixels are typically only 1-5% of a scene).
* :class:`InsideGridGeoSampler`: regular grid windows that never leave the region of interest
  (for leak-free validation/test on spatial splits).
"""

from geochange.samplers.balanced import ChangeBalancedGeoSampler
from geochange.samplers.grid import InsideGridGeoSampler

__all__ = ["ChangeBalancedGeoSampler", "InsideGridGeoSampler"]

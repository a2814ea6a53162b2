"""Tests of geochange.synthetic, one file per module of the package.

The shared scene (fixture ``scene`` in ``conftest.py``): seed and size chosen so that it holds
new and demolished buildings, every class, and a size that is not a multiple of the block size
(partial edge blocks).
"""

SEED = 4
HEIGHT, WIDTH = 768, 1100

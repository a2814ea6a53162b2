"""The :class:`Scene` a synthetic-scene job writes: its files, its manifest, reading it back."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rasterio.transform import Affine

from geochange.classes import IGNORE_INDEX, LSSCD_CLASS_NAMES
from geochange.errors import DataError
from geochange.io import CHANGE_FILE, SEMANTIC_POST_FILE, SEMANTIC_PRE_FILE

#: LsSCD land-cover classes, in class-id order (home: :mod:`geochange.classes`).
CLASS_NAMES: tuple[str, ...] = LSSCD_CLASS_NAMES
#: Nodata value of the label rasters (the generator never writes it; it is declared so that
#: readers treat 255 as "ignore", as everywhere else in geochange).
LABEL_NODATA = IGNORE_INDEX
MANIFEST_NAME = "scene.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Scene:
    """A synthetic bi-temporal scene on disk (see :func:`make_scene`).

    Attributes:
        root: directory holding the files.
        height: rows per date.
        width: columns per date.
        crs: coordinate reference system (as given to :func:`make_scene`, e.g. ``"EPSG:32650"``).
        res: pixel size in CRS units.
        transform: affine pixel-to-map transform of every raster.
        bands: image bands (1-3 RGB, 4 NIR-like, further bands mix red and NIR).
        seed: generator seed.
        class_names: LsSCD class names in class-id order.
        shift: misregistration of the post image in pixels (rows, cols): post pixel
            ``(r, c)`` shows the ground of pre pixel ``(r + shift[0], c + shift[1])`` (plus the
            warp of a realism misregistration, if any).
        realism: the realism perturbations that are on, with their parameters (empty: none;
            see :mod:`geochange.synthetic.realism`).
        stats: summary figures (changed pixels, changed buildings, generation time).
    """

    root: Path
    height: int
    width: int
    crs: str
    res: float
    transform: Affine
    bands: int = 3
    seed: int = 0
    class_names: tuple[str, ...] = CLASS_NAMES
    shift: tuple[float, float] = (0.0, 0.0)
    realism: dict[str, Any] = field(default_factory=dict, hash=False)
    stats: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pre(self) -> Path:
        """Image of the first date (uint8 GeoTIFF, ``bands`` bands)."""
        return self.root / "pre.tif"

    @property
    def post(self) -> Path:
        """Image of the second date (uint8 GeoTIFF, ``bands`` bands, slightly misregistered)."""
        return self.root / "post.tif"

    @property
    def change(self) -> Path:
        """Binary change raster (uint8: 0 no change, 1 change, nodata 255)."""
        return self.root / CHANGE_FILE

    @property
    def semantic_pre(self) -> Path:
        """LsSCD class raster of the first date (uint8, nodata 255, colour table)."""
        return self.root / SEMANTIC_PRE_FILE

    @property
    def semantic_post(self) -> Path:
        """LsSCD class raster of the second date (uint8, nodata 255, colour table)."""
        return self.root / SEMANTIC_POST_FILE

    @property
    def changed_buildings(self) -> Path:
        """GeoPackage of new and demolished building footprints (``change_type`` attribute)."""
        return self.root / "changed_buildings.gpkg"

    @property
    def manifest(self) -> Path:
        """JSON description of the scene, read by :meth:`load`."""
        return self.root / MANIFEST_NAME

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Map bounds ``(left, bottom, right, top)`` in CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.width * self.transform.a
        bottom = top + self.height * self.transform.e
        return (left, min(bottom, top), right, max(bottom, top))

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> Scene:
        """Reopen a scene written by :func:`make_scene`.

        Args:
            out_dir: the directory given to :func:`make_scene`.

        Returns:
            The scene description.

        Raises:
            DataError: if the directory holds no complete scene.
        """
        root = Path(out_dir)
        manifest = root / MANIFEST_NAME
        try:
            meta = json.loads(manifest.read_text())
            scene = cls(
                root=root,
                height=int(meta["height"]),
                width=int(meta["width"]),
                crs=str(meta["crs"]),
                res=float(meta["res"]),
                transform=Affine(*meta["transform"][:6]),
                bands=int(meta["bands"]),
                seed=int(meta["seed"]),
                class_names=tuple(meta["class_names"]),
                shift=(float(meta["shift"][0]), float(meta["shift"][1])),
                realism=dict(meta.get("realism", {})),
                stats=dict(meta.get("stats", {})),
            )
        except FileNotFoundError as err:
            raise DataError(
                f"no synthetic scene in {str(root)!r}: {manifest.name} missing"
            ) from err
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DataError(f"corrupt scene manifest {str(manifest)!r}: {err}") from err
        missing = [
            p.name
            for p in (scene.pre, scene.post, scene.change, scene.semantic_pre, scene.semantic_post)
            if not p.exists()
        ]
        if missing:
            raise DataError(f"incomplete synthetic scene in {str(root)!r}: missing {missing}")
        return scene

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (the content of the manifest)."""
        return {
            "format_version": FORMAT_VERSION,
            "height": self.height,
            "width": self.width,
            "crs": self.crs,
            "res": self.res,
            "transform": list(self.transform)[:6],
            "bounds": list(self.bounds),
            "bands": self.bands,
            "seed": self.seed,
            "class_names": list(self.class_names),
            "shift": list(self.shift),
            "realism": self.realism,
            "files": {
                name: getattr(self, name).name
                for name in ("pre", "post", "change", "semantic_pre", "semantic_post")
            }
            | {"changed_buildings": self.changed_buildings.name},
            "stats": self.stats,
        }

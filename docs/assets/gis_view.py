"""Draw docs/assets/gis-view.png: styled class and change rasters over the post image.

The layers are drawn as a GIS shows them, from what GDAL reads beside each raster (the colour
table with opacity of its ``.aux.xml``): the post image, its land-cover classes at 60 %
opacity, and the change map, where "no change" is transparent. Run from the repository root:

    python docs/assets/gis_view.py [--out docs/assets/gis-view.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.patches import Patch

from geochange.io import read_class_names_tag
from geochange.synthetic import make_scene


def styled(path: Path) -> tuple[np.ndarray, list[tuple[str, tuple[float, ...]]]]:
    """RGBA pixels of a class raster in its own colours, and its legend (name, colour)."""
    with rasterio.open(path) as ds:
        values = ds.read(1)
        table = ds.colormap(1)  # the PAM sidecar's table: opacity included
        names = read_class_names_tag(ds) or []
    lut = np.array([table.get(v, (0, 0, 0, 0)) for v in range(256)], dtype=np.uint8)
    legend = [(name, tuple(c / 255 for c in table[i])) for i, name in enumerate(names)]
    return lut[values], legend


def main() -> None:
    """Generate a small synthetic scene and draw its styled label rasters."""
    plt.switch_backend("Agg")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/assets/gis-view.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(Path(tmp) / "scene", 512, 512, seed=4, block_size=512)
        with rasterio.open(scene.post) as ds:
            post = np.moveaxis(ds.read([1, 2, 3]), 0, -1)
        classes, class_legend = styled(scene.semantic_post)
        change, change_legend = styled(scene.change)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 5.2), constrained_layout=True)
    layers = [
        ("post image", None, []),
        ("semantic_post.tif (60 % opacity)", classes, class_legend),
        ("change.tif (no change transparent)", change, change_legend[1:]),
    ]
    for ax, (title, overlay, legend) in zip(axes, layers, strict=True):
        ax.imshow(post)
        if overlay is not None:
            alpha = 0.6 if overlay is classes else 1.0
            ax.imshow(overlay, alpha=alpha, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
        if legend:
            handles = [Patch(facecolor=colour, edgecolor="k", label=n) for n, colour in legend]
            ax.legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.85)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

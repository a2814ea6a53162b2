"""Draw docs/assets/architecture.png: geochange's stages and the data flowing between them.

Run from the repository root after changing the layout: ``python docs/assets/architecture.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("architecture.png")
W, H = 2.3, 1.0  # box size (axis units)

# name -> (x, y of the centre, title, home in geochange/, colour)
BOXES = {
    "scene": (1.5, 6.0, "synthetic scene\nor GeoTIFFs", "synthetic/ · your files", "#e8eef7"),
    "data": (4.6, 6.0, "datasets + samplers", "datasets/ · samplers/", "#e8eef7"),
    "dm": (7.7, 6.0, "datamodule", "datamodules/", "#e8eef7"),
    "trainer": (10.8, 6.0, "trainer", "trainers/ models/ losses/", "#fdf0e0"),
    "ckpt": (13.9, 6.0, "checkpoint", "checkpoint.py", "#fdf0e0"),
    "predictor": (13.9, 3.6, "predictor", "predict/", "#e6f4ea"),
    "products": (10.8, 3.6, "products (COGs)", "io/products.py", "#e6f4ea"),
    "vectorize": (7.7, 3.6, "vectorize", "vectorize/", "#e6f4ea"),
    "gpkg": (4.6, 3.6, "GeoPackage", "io/vector.py", "#e6f4ea"),
    "evaluate": (1.5, 3.6, "evaluate", "evaluate/ · metrics.py", "#f3e8f7"),
    "report": (1.5, 1.2, "report", "report.md/json, figures", "#f3e8f7"),
    "pseudo": (13.9, 1.2, "pseudo labels (CEG)", "pseudo/", "#fff7d6"),
}

# (from, to, label of the data that flows, label offset in y)
ARROWS = [
    ("scene", "data", "pre / post rasters,\nchange + class labels", 0.55),
    ("data", "dm", "samples\n(keys.py)", 0.55),
    ("dm", "trainer", "batches\n(patches)", 0.55),
    ("trainer", "ckpt", "weights +\nmetadata", 0.55),
    ("ckpt", "predictor", "load_model()\n(no Lightning)", 0.0),
    ("predictor", "products", "whole scene,\ntile by tile", 0.55),
    ("products", "vectorize", "change.tif, probability.tif,\nsemantic_*.tif", 0.55),
    ("vectorize", "gpkg", "polygons\n(block by block)", 0.55),
    ("gpkg", "evaluate", "predicted\npolygons", 0.55),
    ("evaluate", "report", "pixel + object\nscores", 0.0),
    ("products", "pseudo", "semantic maps", 0.0),
]
#: The pseudo labels go back to training: routed around the right edge, into the trainer's top.
FEEDBACK = [(15.05, 1.2), (15.35, 1.2), (15.35, 6.95), (10.8, 6.95), (10.8, 6.5)]
FEEDBACK_LABEL = "change events as labels (semi-supervised trainer)"


def _anchor(name: str, towards: str) -> tuple[float, float]:
    """The midpoint of the side of box ``name`` that faces box ``towards``."""
    x, y = BOXES[name][:2]
    tx, ty = BOXES[towards][:2]
    if abs(tx - x) / W >= abs(ty - y) / H:
        return (x + W / 2 if tx > x else x - W / 2), y
    return x, (y + H / 2 if ty > y else y - H / 2)


def main() -> None:
    """Draw the figure and save it next to this script."""
    fig, ax = plt.subplots(figsize=(13, 6.6))
    ax.set_xlim(0, 15.6)
    ax.set_ylim(0.2, 7.2)
    ax.axis("off")
    for x, y, title, home, colour in BOXES.values():
        ax.add_patch(
            FancyBboxPatch(
                (x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.05",
                facecolor=colour, edgecolor="#444", linewidth=1.2,
            )
        )  # fmt: skip
        ax.text(x, y + 0.12, title, ha="center", va="center", fontsize=10.5, weight="bold")
        ax.text(x, y - 0.3, home, ha="center", va="center", fontsize=8.5, family="monospace")
    for start, end, label, dy in ARROWS:
        (x0, y0), (x1, y1) = _anchor(start, end), _anchor(end, start)
        ax.add_patch(
            FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=16, color="#333")
        )
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        horizontal = abs(y1 - y0) < 1e-6
        ax.text(
            mx + (0 if horizontal else 0.12), my + (dy if horizontal else 0), label,
            ha="center" if horizontal else "left", va="center", fontsize=8, color="#333",
        )  # fmt: skip
    xs, ys = zip(*FEEDBACK[:-1], strict=True)
    ax.plot(xs, ys, color="#b08a00", linewidth=1.3)
    ax.add_patch(
        FancyArrowPatch(
            FEEDBACK[-2], FEEDBACK[-1], arrowstyle="-|>", mutation_scale=16, color="#b08a00"
        )
    )
    ax.text(13.1, 7.07, FEEDBACK_LABEL, ha="center", va="center", fontsize=8, color="#7a5f00")
    ax.text(0.2, 6.85, "training", fontsize=11, style="italic", color="#666", va="center")
    ax.text(0.2, 4.45, "inference", fontsize=11, style="italic", color="#666", va="center")
    ax.text(
        7.75, 0.45,
        "contracts between stages: classes.py (class names, palette, 255 = ignore) · "
        "keys.py (sample / output keys) · io/products.py (file names, tags, scale)",
        ha="center", fontsize=8.5, color="#333",
    )  # fmt: skip
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()

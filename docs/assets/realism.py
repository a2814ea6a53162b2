"""Draw the pictures of docs/synthetic.md's realism section: pre/post crops per perturbation.

Run from the repository root after changing the generator or the preset (about a minute), then
commit the PNGs with it::

    python docs/assets/realism.py

Each picture shows one crop of seed 7: the pre and post images of the clean scene, then the pre
and post images with the perturbation (the pre image changes only with radiometry and lean,
which act on both dates).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from geochange.synthetic.realism import resolve_realism
from geochange.synthetic.render import _HALO, _Renderer

OUT = Path(__file__).parent / "realism"
SEED = 7
# Picture name -> (realism, crop (row, col, size) of seed 7 showing what it acts on).
PICTURES = {
    "misregistration": ("misregistration", (1700, 430, 128)),
    "radiometry": ("radiometry", (1216, 1472, 192)),
    "phenology": ("phenology", (128, 1792, 192)),
    "sun": ("sun", (1728, 384, 160)),
    "lean": ("lean", (1728, 384, 160)),
    "distractors": ("distractors", (1728, 384, 192)),
    "distractors-water": ("distractors", (1728, 1280, 192)),
    "levir": ("levir", (1728, 384, 192)),
}


def render(name: str, date: int, row: int, col: int, size: int) -> np.ndarray:
    """One date of the crop, (size, size, 3) uint8, with realism ``name``."""
    renderer = _Renderer(SEED, 3, resolve_realism(name))
    shift = (0.0, 0.0) if date == 0 else renderer.shift
    halo = _HALO if date == 0 else renderer.post_halo
    grid = renderer.grid(row, col, size, size, shift, halo)
    return renderer.image(grid, date, halo, row, col).transpose(1, 2, 0)


def picture(name: str) -> Path:
    """Write ``realism/<name>.png``: clean pre and post, then pre and post with the realism."""
    realism, (row, col, size) = PICTURES[name]
    panels = [
        ("pre, clean", render("none", 0, row, col, size)),
        ("post, clean", render("none", 1, row, col, size)),
        (f"pre, {realism}", render(realism, 0, row, col, size)),
        (f"post, {realism}", render(realism, 1, row, col, size)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.8), dpi=80)
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    # A 128-colour palette keeps each picture under 200 KB.
    with Image.open(path) as image:
        image.convert("RGB").quantize(128).save(path, optimize=True)
    return path


def main() -> None:
    """Draw every picture and print its size."""
    for name in PICTURES:
        path = picture(name)
        print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()

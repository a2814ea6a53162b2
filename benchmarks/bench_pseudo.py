"""Benchmark of change event generation (geochange.pseudo).

Prints:

1. Rate (Mpx/s, median of ``--repeats`` runs) and peak RSS of the block-wise scene tool
   :func:`geochange.pseudo.generate_pseudo_labels` on synthetic class rasters of several sizes,
   next to a baseline measured in the same run: whole-array CEG (read both rasters whole,
   :func:`change_event_generation`, write the result). Every measurement runs in a fresh
   process so its peak RSS (``resource.getrusage``) is its own.
2. Unsupervised CEG: IoU^c of the pseudo labels (each mode) against the true building change
   of a synthetic scene, from the true semantic maps and from maps degraded like a real
   segmenter's output (boundary erosion, class confusions, missed small buildings).

Usage::

    .venv/bin/python benchmarks/bench_pseudo.py                 # 4096^2 and 8192^2
    .venv/bin/python benchmarks/bench_pseudo.py --sizes 8192 16384 --repeats 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.windows
import scipy.ndimage as ndi
from affine import Affine

from geochange.io import TILED_GTIFF_OPTIONS
from geochange.pseudo import (
    change_event_generation,
    degrade_class_map,
    evaluate_pseudo_labels,
    generate_pseudo_labels,
    score_change,
)

BUILDING, ROAD, WATER, BARE, TREE, CROP, OTHERS = range(7)
CLASSES = ["building", "road", "water", "bare land", "tree", "cropland", "others"]
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)


def make_building_scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two LsSCD-like class maps: land cover, a road grid, buildings built and demolished."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((size // 16 + 1, size // 16 + 1))
    field = ndi.zoom(ndi.gaussian_filter(coarse, 2), 16, order=1)[:size, :size]
    land = np.digitize(field, np.quantile(field, [0.08, 0.35, 0.6, 0.8]))
    pre = np.array([WATER, TREE, CROP, BARE, OTHERS], dtype=np.uint8)[land]
    for offset in range(int(rng.integers(50, 150)), size, 240):  # road grid, 6 px wide
        pre[offset : offset + 6] = ROAD
        pre[:, offset : offset + 6] = ROAD
    post = pre.copy()
    # Land-cover change that is no building change (tree <-> cropland).
    crop_field = ndi.zoom(rng.standard_normal((size // 64 + 1,) * 2), 64, order=1)[:size, :size]
    flip = crop_field > 1.6
    post[flip & (pre == TREE)] = CROP
    post[flip & (pre == CROP)] = TREE
    count = size * size // 2500
    heights = rng.integers(5, 40, count)
    widths = rng.integers(5, 40, count)
    rows = rng.integers(0, size - 40, count)
    cols = rng.integers(0, size - 40, count)
    fate = rng.random(count)  # < 0.08 demolished, < 0.16 newly built, else stable
    for r, c, h, w, f in zip(rows, cols, heights, widths, fate, strict=True):
        window = (slice(r, r + h), slice(c, c + w))
        # Keep a 1 px gap to other buildings so every building is its own instance.
        around = (slice(max(r - 1, 0), r + h + 1), slice(max(c - 1, 0), c + w + 1))
        if np.isin(pre[window], (WATER, ROAD)).any() or (
            (pre[around] == BUILDING).any() or (post[around] == BUILDING).any()
        ):
            continue
        if f < 0.08:
            pre[window] = BUILDING
            post[window] = BARE
        elif f < 0.16:
            post[window] = BUILDING
        else:
            pre[window] = BUILDING
            post[window] = BUILDING
    return pre, post


def write_classes(path: Path, array: np.ndarray) -> Path:
    profile = {
        **TILED_GTIFF_OPTIONS,
        "height": array.shape[0],
        "width": array.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32650",
        "transform": TRANSFORM,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)
        ds.update_tags(GEOCHANGE_CLASS_NAMES=str(CLASSES).replace("'", '"'))
    return path


def _write_scene(size: int, pre_path: str, post_path: str, tile: int = 8192) -> None:
    """Write a size x size scene, generated in tiles of at most ``tile`` px to bound memory."""
    profile = {
        **TILED_GTIFF_OPTIONS, "height": size, "width": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32650", "transform": TRANSFORM,
    }  # fmt: skip
    with (
        rasterio.open(pre_path, "w", **profile) as a,
        rasterio.open(post_path, "w", **profile) as b,
    ):
        for row in range(0, size, tile):
            for col in range(0, size, tile):
                pre, post = make_building_scene(tile, seed=size + row + 7 * col)
                h, w = min(tile, size - row), min(tile, size - col)
                window = rasterio.windows.Window(col, row, w, h)
                a.write(pre[:h, :w], 1, window=window)
                b.write(post[:h, :w], 1, window=window)
        for ds in (a, b):
            ds.update_tags(GEOCHANGE_CLASS_NAMES=str(CLASSES).replace("'", '"'))


def _blockwise(pre: str, post: str, out: str, block: int) -> None:
    generate_pseudo_labels(pre, post, out, change_classes="building", block_size=block)


def _whole_array(pre: str, post: str, out: str, block: int) -> None:
    with rasterio.open(pre) as ds_pre, rasterio.open(post) as ds_post:
        labels = change_event_generation(ds_pre.read(1), ds_post.read(1), change_classes=[BUILDING])
        profile = {**ds_pre.profile, **TILED_GTIFF_OPTIONS, "nodata": 255}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(labels, 1)


def _child(target: Any, args: tuple[Any, ...], queue: Any) -> None:
    start = time.perf_counter()
    target(*args)
    seconds = time.perf_counter() - start
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(target: Any, *args: Any) -> tuple[float, float]:
    """Run ``target(*args)`` in a fresh process; returns (seconds, peak RSS in MiB)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(target, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def bench_rate(
    sizes: list[int], repeats: int, block: int, workdir: Path, baseline_max: int
) -> None:
    print(f"== block-wise CEG rate (mixed mode, block {block}, median of {repeats} runs) ==")
    print(f"{'size':>12} {'tool s':>8} {'Mpx/s':>7} {'RSS MiB':>8} | "
          f"{'whole s':>8} {'Mpx/s':>7} {'RSS MiB':>8} | {'time x':>6} {'RSS x':>6}")  # fmt: skip
    for size in sizes:
        pre_path = str(workdir / f"pre_{size}.tif")
        post_path = str(workdir / f"post_{size}.tif")
        # Inputs are made in a child too: a child forked from a big parent would inherit the
        # parent's RSS high-water mark.
        measure(_write_scene, size, pre_path, post_path)
        mpx = size * size / 1e6
        runs = [measure(_blockwise, pre_path, post_path, str(workdir / "o.tif"), block)]
        runs += [
            measure(_blockwise, pre_path, post_path, str(workdir / "o.tif"), block)
            for _ in range(repeats - 1)
        ]
        if size > baseline_max:  # the whole-array baseline needs ~100 bytes per pixel
            print(f"{size:>5}x{size:<6} {statistics.median(r[0] for r in runs):8.2f} "
                  f"{mpx / statistics.median(r[0] for r in runs):7.2f} "
                  f"{max(r[1] for r in runs):8.0f} | whole-array baseline skipped")  # fmt: skip
            continue
        whole = [
            measure(_whole_array, pre_path, post_path, str(workdir / "w.tif"), block)
            for _ in range(repeats)
        ]
        with rasterio.open(workdir / "o.tif") as a, rasterio.open(workdir / "w.tif") as b:
            same = all(
                np.array_equal(a.read(1, window=w), b.read(1, window=w))
                for _, w in a.block_windows(1)
            )
        tool_s = statistics.median(r[0] for r in runs)
        tool_rss = max(r[1] for r in runs)
        whole_s = statistics.median(r[0] for r in whole)
        whole_rss = max(r[1] for r in whole)
        print(
            f"{size:>5}x{size:<6} {tool_s:8.2f} {mpx / tool_s:7.2f} {tool_rss:8.0f} | "
            f"{whole_s:8.2f} {mpx / whole_s:7.2f} {whole_rss:8.0f} | "
            f"{tool_s / whole_s:6.2f} {tool_rss / whole_rss:6.2f}"
            f"  identical={same}"
        )
        sys.stdout.flush()


def _scene_maps(size: int, workdir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """True class maps of a geochange.synthetic scene (or of the built-in generator)."""
    try:
        from geochange.synthetic import make_scene
    except ImportError:
        pre, post = make_building_scene(size, seed=1)
        return pre, post, "built-in generator"
    scene = make_scene(workdir / "scene", size, size, seed=0)
    with rasterio.open(scene.semantic_pre) as a, rasterio.open(scene.semantic_post) as b:
        return a.read(1), b.read(1), f"geochange.synthetic.make_scene seed 0, {scene.stats}"


def bench_unsupervised(size: int, block: int, workdir: Path) -> None:
    print(f"\n== unsupervised CEG IoU^c on a synthetic {size}x{size} scene (building change) ==")
    pre, post, source = _scene_maps(size, workdir)
    print(f"scene: {source}")
    truth = ((pre == BUILDING) ^ (post == BUILDING)).astype(np.uint8)
    with rasterio.open(workdir / "truth.tif", "w", **{
        **TILED_GTIFF_OPTIONS, "height": size, "width": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32650", "transform": TRANSFORM, "nodata": 255,
    }) as ds:  # fmt: skip
        ds.write(truth, 1)
    settings = {
        "true maps": {},
        "degraded (erosion 1 px, 3% confusion, 50% of small missed)": dict(
            erosion_px=1, confusion_fraction=0.03, miss_area=80, miss_probability=0.5
        ),
        "degraded harder (erosion 2 px, 6% confusion, 80% of small missed)": dict(
            erosion_px=2, confusion_fraction=0.06, miss_area=120, miss_probability=0.8
        ),
    }
    print(f"{'maps':<68} {'mode':<9} {'IoU^c':>6} {'F1':>6} {'prec':>6} {'recall':>6} "
          f"{'IoU^c dec':>9} {'cover':>6}")  # fmt: skip
    for name, degrade in settings.items():
        if degrade:
            sem_pre = degrade_class_map(pre, seed=11, **degrade).astype(np.uint8)
            sem_post = degrade_class_map(post, seed=12, **degrade).astype(np.uint8)
        else:
            sem_pre, sem_post = pre, post
        pre_path = write_classes(workdir / "sem_pre.tif", sem_pre)
        post_path = write_classes(workdir / "sem_post.tif", sem_post)
        for mode in ("mixed", "instance", "pixel"):
            out = workdir / f"pseudo_{mode}.tif"
            generate_pseudo_labels(
                pre_path, post_path, out, change_classes="building", mode=mode, block_size=block
            )
            score = evaluate_pseudo_labels(out, workdir / "truth.tif")
            print(
                f"{name:<68} {mode:<9} {score.iou_change:6.3f} {score.f1:6.3f} "
                f"{score.precision:6.3f} {score.recall:6.3f} {score.iou_change_decided:9.3f} "
                f"{score.coverage:6.3f}"
            )
        if not degrade:  # sanity: on true maps CEG is exactly the building change
            labels = change_event_generation(pre, post, change_classes=[BUILDING])
            assert np.array_equal(labels, truth), score_change(labels, truth)
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--iou-size", type=int, default=2048)
    parser.add_argument("--skip-rate", action="store_true")
    parser.add_argument(
        "--baseline-max", type=int, default=8192, help="largest size run whole-array too"
    )
    parser.add_argument("--skip-iou", action="store_true")
    args = parser.parse_args()
    print("timings on a loaded shared 2-core CPU; single process")
    with tempfile.TemporaryDirectory(prefix="bench_pseudo_") as tmp:
        workdir = Path(tmp)
        if not args.skip_rate:
            bench_rate(args.sizes, args.repeats, args.block_size, workdir, args.baseline_max)
        if not args.skip_iou:
            bench_unsupervised(args.iou_size, args.block_size, workdir)


if __name__ == "__main__":
    main()

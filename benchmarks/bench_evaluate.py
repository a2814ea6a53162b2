"""Benchmark: whole-scene evaluation (pixel + object level) of an LsSCD-scale change map.

Generates once, row band by row band, a reference change raster and a prediction derived from it
in bench_data/ (git-ignored): rectangular "building" changes of 8-48 px; the prediction keeps
70 % of them slightly shifted / resized, misses 10 %, splits 10 % in two, erodes 10 %, and adds
8 % false alarms. Then, each in a fresh subprocess so peak RSS is measured per phase
(``resource.getrusage``; main process and vectorizer worker processes separately):

* baseline ``read``: read both rasters block by block and count changed pixels (the I/O floor);
* ``pixel``: ``evaluate_scene(..., objects=False)`` (pixel metrics + overview);
* ``full``: ``evaluate_scene(...)`` (pixel metrics, vectorizing both sides, matching) and
  ``report.save(...)`` (JSON, Markdown, GeoPackage with status, figures).

Prints the medians over ``--repeats`` runs, their ratio to the read baseline, objects/s and
peak RSS against the 2 GB budget.

    python benchmarks/bench_evaluate.py                          # 48000 x 32500
    python benchmarks/bench_evaluate.py --size 8192x8192 --objects 6000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rss import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
CRS = "EPSG:32650"
RES = 0.5
BAND = 512
BUDGET_MB = 2048


def make_rectangles(
    height: int, width: int, objects: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and predicted rectangles as [N, 4] int arrays (row0, col0, row1, col1)."""
    rng = np.random.default_rng(seed)
    size = rng.integers(8, 49, (objects, 2))
    row0 = rng.integers(0, height - size[:, 0])
    col0 = rng.integers(0, width - size[:, 1])
    ref = np.column_stack([row0, col0, row0 + size[:, 0], col0 + size[:, 1]])

    fate = rng.random(objects)
    pred_parts = []
    kept = ref[fate < 0.7].copy()
    kept += rng.integers(-2, 3, kept.shape)  # shifted / resized
    pred_parts.append(kept)
    split = ref[(fate >= 0.8) & (fate < 0.9)]
    mid = (split[:, 1] + split[:, 3]) // 2
    pred_parts.append(np.column_stack([split[:, 0], split[:, 1], split[:, 2], mid - 1]))
    pred_parts.append(np.column_stack([split[:, 0], mid + 1, split[:, 2], split[:, 3]]))
    eroded = ref[fate >= 0.9].copy()
    margin = rng.integers(1, 4, (len(eroded), 1))
    eroded[:, :2] += margin
    eroded[:, 2:] -= margin
    pred_parts.append(eroded)
    n_false = int(objects * 0.08)
    size = rng.integers(8, 49, (n_false, 2))
    r0 = rng.integers(0, height - size[:, 0])
    c0 = rng.integers(0, width - size[:, 1])
    pred_parts.append(np.column_stack([r0, c0, r0 + size[:, 0], c0 + size[:, 1]]))
    pred = np.concatenate(pred_parts)
    pred[:, [0, 2]] = pred[:, [0, 2]].clip(0, height)
    pred[:, [1, 3]] = pred[:, [1, 3]].clip(0, width)
    pred = pred[(pred[:, 2] > pred[:, 0]) & (pred[:, 3] > pred[:, 1])]
    return ref, pred


def write_rectangles(path: Path, rects: np.ndarray, height: int, width: int) -> None:
    """Burn rectangles into a tiled uint8 0/1 raster, one row band at a time (bounded memory)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from geochange.io import TILED_GTIFF_OPTIONS, atomic_output

    order = np.argsort(rects[:, 0], kind="stable")
    rects = rects[order]
    max_h = int((rects[:, 2] - rects[:, 0]).max()) if len(rects) else 0
    profile = {
        **TILED_GTIFF_OPTIONS,
        "height": height,
        "width": width,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": CRS,
        "transform": Affine(RES, 0, 400_000.0, 0, -RES, 3_500_000.0),
    }
    with atomic_output(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        for top in range(0, height, BAND):
            bottom = min(top + BAND, height)
            band = np.zeros((bottom - top, width), np.uint8)
            lo = np.searchsorted(rects[:, 0], top - max_h)
            hi = np.searchsorted(rects[:, 0], bottom)
            for r0, c0, r1, c1 in rects[lo:hi]:
                if r1 > top:
                    band[max(r0, top) - top : min(r1, bottom) - top, c0:c1] = 1
            ds.write(band, 1, window=Window(0, top, width, bottom - top))


def child(mode: str, pred: Path, ref: Path, out: Path, block_size: int) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    start = time.perf_counter()
    result: dict[str, object] = {"mode": mode}
    if mode == "read":
        import rasterio
        from rasterio.windows import Window

        changed = 0
        # Same GDAL cache bound as evaluate_scene, so the baseline is comparable.
        with (
            rasterio.Env(GDAL_CACHEMAX=64 * 2**20),
            rasterio.open(pred) as p,
            rasterio.open(ref) as r,
        ):
            for row in range(0, p.height, block_size):
                for col in range(0, p.width, block_size):
                    window = Window(
                        col, row, min(block_size, p.width - col), min(block_size, p.height - row)
                    )
                    changed += int(np.count_nonzero(p.read(1, window=window) == 1))
                    changed += int(np.count_nonzero(r.read(1, window=window) == 1))
        result["changed_pixels"] = changed
    else:
        from geochange.evaluate import evaluate_scene

        report = evaluate_scene(pred, ref, objects=mode == "full", block_size=block_size)
        result["evaluate_s"] = time.perf_counter() - start
        result["pixel"] = report.pixel
        result["phases_s"] = report.settings.get("timings_s")
        if mode == "full":
            save_start = time.perf_counter()
            report.save(out)
            result["save_s"] = time.perf_counter() - save_start
            result["objects"] = report.objects
    result["wall_s"] = time.perf_counter() - start
    result["rss_main_mb"] = peak_rss_mb()
    result["rss_workers_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="48000x32500", help="WIDTHxHEIGHT in pixels")
    parser.add_argument("--objects", type=int, default=200_000, help="reference objects")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--modes", default="read,pixel,full")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        pred, ref, out = (Path(p) for p in args.paths)
        child(args.child, pred, ref, out, args.block_size)
        return

    width, height = (int(v) for v in args.size.lower().split("x"))
    data = ROOT / "bench_data"
    data.mkdir(exist_ok=True)
    ref_path = data / f"evaluate_ref_{width}x{height}_{args.objects}.tif"
    pred_path = data / f"evaluate_pred_{width}x{height}_{args.objects}.tif"
    if not (ref_path.exists() and pred_path.exists()):
        start = time.perf_counter()
        ref_rects, pred_rects = make_rectangles(height, width, args.objects, seed=0)
        write_rectangles(ref_path, ref_rects, height, width)
        write_rectangles(pred_path, pred_rects, height, width)
        print(
            f"generated {ref_path.name} / {pred_path.name}: {len(ref_rects)} reference and "
            f"{len(pred_rects)} predicted rectangles in {time.perf_counter() - start:.0f} s"
        )
    out = ROOT / "bench_output" / "evaluate_report"
    print(f"scene {width} x {height} px ({width * height / 1e9:.2f} Gpx), block {args.block_size}")

    runs: dict[str, list[dict[str, object]]] = {}
    for mode in args.modes.split(","):
        for _ in range(args.repeats):
            command = [sys.executable, __file__, "--child", mode, "--block-size"]
            command += [str(args.block_size), "--paths", str(pred_path), str(ref_path), str(out)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:])
                raise SystemExit(f"{mode} run failed")
            record = json.loads(done.stdout.strip().splitlines()[-1])
            runs.setdefault(mode, []).append(record)
            print(
                f"  {mode:5s} run: {record['wall_s']:.1f} s, peak RSS main "
                f"{record['rss_main_mb']:.0f} MB, workers {record['rss_workers_mb']:.0f} MB"
            )

    print("\nmedians")
    baseline = (
        statistics.median(float(r["wall_s"]) for r in runs.get("read", []))
        if "read" in runs
        else None
    )  # type: ignore[arg-type]
    for mode, records in runs.items():
        wall = statistics.median(float(r["wall_s"]) for r in records)  # type: ignore[arg-type]
        rss = max(max(float(r["rss_main_mb"]), float(r["rss_workers_mb"])) for r in records)  # type: ignore[arg-type]
        ratio = f", {wall / baseline:.2f}x the read baseline" if baseline else ""
        verdict = "OK" if rss < BUDGET_MB else "OVER BUDGET"
        print(
            f"  {mode:5s}: {wall:.1f} s{ratio}, {width * height / wall / 1e6:.1f} Mpx/s, "
            f"peak RSS {rss:.0f} MB (< {BUDGET_MB} MB: {verdict})"
        )
    if "full" in runs:
        last = runs["full"][-1]
        objects = last["objects"]
        assert isinstance(objects, dict)
        total = int(objects["predicted"]) + int(objects["reference"])
        wall = statistics.median(float(r["wall_s"]) for r in runs["full"])  # type: ignore[arg-type]
        print(
            f"  full evaluation: {total} objects, {total / wall:.0f} objects/s end to end, "
            f"evaluate {float(last['evaluate_s']):.1f} s + report {float(last['save_s']):.1f} s"  # type: ignore[arg-type]
        )
        print(f"  phases (s): {last.get('phases_s')}")
        keys = ("true_positives", "false_positives", "misses", "precision", "recall", "f1")
        print("  objects: " + ", ".join(f"{k} {objects[k]}" for k in keys))
        print(
            f"  split references {objects['split_references']}, merging predictions "
            f"{objects['merging_predictions']}"
        )
    for mode in ("pixel", "full"):
        if mode in runs:
            pixel = runs[mode][-1]["pixel"]
            assert isinstance(pixel, dict)
            print(f"  pixel ({mode}): " + ", ".join(f"{k} {v:.4f}" for k, v in pixel.items()))


if __name__ == "__main__":
    main()

"""Benchmark the synthetic scene generator: generation rate (Mpixel/s) and peak RSS.

Each run happens in a fresh Python process, which reports its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS right after the imports, so the
figures are not polluted by earlier runs. The rate counts pixels per date (height x width), for
the whole job: both images, both class maps, the change raster, overviews/COG conversion and
the GeoPackage.

Baseline (same run, same size, same process set-up): writing the same five rasters block by block
with constant content through the same tiled-GTiff + COG path, i.e. the I/O floor of the job.

Examples::

    python benchmarks/bench_synth.py                       # 8192 x 8192, 3 runs + baseline
    python benchmarks/bench_synth.py --size 2048x2048 --repeats 5
    # LsSCD scale, kept on disk for other benchmarks (one run, no baseline):
    python benchmarks/bench_synth.py --size 48000x32500 --out bench_data/lsscd
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, rasterio
    from geochange.synthetic import make_scene
    from geochange.io import TILED_GTIFF_OPTIONS, finalize_cog
    out, height, width, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cpu0 = time.process_time()
    if mode == "synth":
        scene = make_scene(out, height, width, seed=0, progress=sys.stderr.isatty())
        extra = scene.stats
    else:  # I/O baseline: same files, same path, trivial content
        from rasterio.windows import Window
        from pathlib import Path
        Path(out).mkdir(parents=True, exist_ok=True)
        names = [("pre", 3), ("post", 3), ("semantic_pre", 1), ("semantic_post", 1), ("change", 1)]
        with rasterio.Env(GDAL_CACHEMAX=64 * 2**20):
            for name, count in names:
                tiled = Path(out) / f".{name}.tiled.tif"
                profile = dict(TILED_GTIFF_OPTIONS, height=height, width=width, count=count,
                               dtype="uint8", crs="EPSG:32650",
                               transform=rasterio.transform.from_origin(5e5, 4e6, 0.6, 0.6))
                with rasterio.open(tiled, "w", **profile) as ds:
                    for r in range(0, height, 1024):
                        for c in range(0, width, 1024):
                            h, w = min(1024, height - r), min(1024, width - c)
                            block = np.full((count, h, w), (r // 1024 + c // 1024) % 7, np.uint8)
                            ds.write(block, window=Window(c, r, w, h))
                finalize_cog(tiled, Path(out) / f"{name}.tif")
        extra = {}
    seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "rss_after_imports_mib": rss0 / 1024,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{f"scene_{k}": v for k, v in extra.items()},
    }))
    """
)


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def run_child(out: Path, height: int, width: int, mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), str(height), str(width), mode],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=(8192, 8192), help="HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=None, help="runs (default 3, 1 with --out)")
    parser.add_argument("--out", type=Path, help="keep the (last) scene in this directory")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the I/O-only baseline (default: on unless --out)",
    )
    args = parser.parse_args()
    height, width = args.size
    repeats = args.repeats or (1 if args.out else 3)
    baseline = args.baseline if args.baseline is not None else args.out is None
    mpix = height * width / 1e6
    print(f"synthetic scene {height}x{width} ({mpix:.1f} Mpixel per date), {repeats} run(s)")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        for i in range(repeats):
            out = args.out if args.out and i == repeats - 1 else Path(tmp) / f"run{i}"
            figures = run_child(out, height, width, "synth")
            runs.append(figures)
            print(
                f"  run {i + 1}: {figures['seconds']:.1f} s wall, {figures['cpu_seconds']:.1f} s "
                f"CPU, {mpix / figures['seconds']:.2f} Mpixel/s, peak RSS "
                f"{figures['peak_rss_mib']:.0f} MiB (after imports "
                f"{figures['rss_after_imports_mib']:.0f} MiB)",
                flush=True,
            )
        base = run_child(Path(tmp) / "baseline", height, width, "baseline") if baseline else None
    seconds = statistics.median(r["seconds"] for r in runs)
    summary = {
        "size": f"{height}x{width}",
        "runs": repeats,
        "median_seconds": round(seconds, 2),
        "median_mpixel_per_s": round(mpix / seconds, 3),
        "median_cpu_mpixel_per_s": round(
            mpix / statistics.median(r["cpu_seconds"] for r in runs), 3
        ),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        "changed_fraction": runs[-1].get("scene_changed_fraction"),
        "new_buildings": runs[-1].get("scene_new_buildings"),
        "demolished_buildings": runs[-1].get("scene_demolished_buildings"),
    }
    if base is not None:
        summary["baseline_io_seconds"] = round(base["seconds"], 2)
        summary["baseline_io_mpixel_per_s"] = round(mpix / base["seconds"], 3)
        summary["ratio_vs_io_baseline"] = round(seconds / base["seconds"], 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

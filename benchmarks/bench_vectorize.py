"""Benchmark: block-wise vectorize_changes vs whole-array polygonization, same run, same mask.

Generates (once, block-wise) an LsSCD-scale change mask in bench_data/ (git-ignored): rotated
rectangles and L-shaped "buildings" covering ~4 % of the pixels, ~500k objects. Then, each in a
fresh subprocess so peak RSS is measured per method (VmHWM from /proc):

* baseline: read the whole array, ``rasterio.features.shapes`` + shapely + GeoDataFrame +
  GeoPackage write (pyogrio) — what solaris / geoai / Raster Vision do;
* geochange: ``vectorize_changes(mask, out.gpkg, return_frame=False)`` with all cores (what
  ``geochange vectorize`` runs); with ``--with-frame`` also the API call that builds and
  returns the GeoDataFrame;
* with ``--parallel``, the same call with ``parallel="threads"`` (geochange-threads) and with
  ``workers=1`` (geochange-inprocess), against the default worker processes (geochange), and
  a check that the three write identical files.

Prints the CPU (lscpu model and flags), per-phase timings, medians over ``--repeats`` runs,
polygons/s, peak RSS (main process, largest worker, and the whole process tree: the largest
sum of the RSS of the run and its workers), the wall-time ratio, and checks that the baseline
and geochange outputs hold identical polygons.

    python benchmarks/bench_vectorize.py                      # 48000 x 32500, ~530k objects
    python benchmarks/bench_vectorize.py --size 8192x8192 --objects 25000 --repeats 3
    python benchmarks/bench_vectorize.py --size 8192x8192 --objects 25000 --block-size 2048 \
        --skip-baseline --parallel                            # processes vs threads vs 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rss import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
# geochange: the command-line path (return_frame=False, WKB streamed to the GeoPackage);
# geochange-frame: the Python API also building and returning the GeoDataFrame;
# geochange-threads / geochange-inprocess: the command-line path with parallel="threads" /
# with workers=1.
METHODS = ["baseline", "geochange", "geochange-frame", "geochange-threads", "geochange-inprocess"]
CRS = "EPSG:32650"
RES = 0.6


class DescendantPeakRss:
    """Largest peak RSS (VmHWM) among this process's descendants, polled from /proc.

    Descendants are found through /proc (grandchildren too) and their high-water marks sampled
    five times a second, with the largest sum of the current RSS of this process and its
    descendants (``tree_mb``: the memory the whole run holds at once, workers included).
    """

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self.tree_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> DescendantPeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import os

        me = os.getpid()
        while not self._stop.wait(0.2):
            parents: dict[int, int] = {}
            peaks: dict[int, float] = {}
            current: dict[int, float] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    text = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                parents[int(entry)] = int(fields.get("PPid", "0"))
                if "VmHWM" in fields:
                    peaks[int(entry)] = int(fields["VmHWM"].split()[0]) / 1024
                    current[int(entry)] = int(fields["VmRSS"].split()[0]) / 1024
            tree = current.get(me, 0.0)
            for pid, peak in peaks.items():
                ancestor = parents.get(pid, 0)
                while ancestor not in (0, 1, me):
                    ancestor = parents.get(ancestor, 0)
                if ancestor == me:
                    self.peak_mb = max(self.peak_mb, peak)
                    tree += current[pid]
            self.tree_mb = max(self.tree_mb, tree)


def make_mask(path: Path, height: int, width: int, objects: int, seed: int = 0) -> None:
    """Write the benchmark mask band by band (memory: one band + the object table)."""
    import rasterio
    import rasterio.features
    import shapely
    from affine import Affine

    from geochange.io import TILED_GTIFF_OPTIONS, atomic_output

    rng = np.random.default_rng(seed)
    # Building-like objects: rotated rectangles 5-17 px a side, a third with an L-shaped wing.
    cy = rng.uniform(0, height, objects)
    cx = rng.uniform(0, width, objects)
    half_h = rng.uniform(2.5, 8.5, objects)
    half_w = rng.uniform(2.5, 8.5, objects)
    angle = rng.uniform(0, np.pi, objects)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], np.float64)
    local = corners[None, :, :] * np.stack([half_w, half_h], axis=1)[:, None, :]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    xs = cx[:, None] + local[..., 0] * cos - local[..., 1] * sin
    ys = cy[:, None] + local[..., 0] * sin + local[..., 1] * cos
    polygons = shapely.polygons(np.stack([xs, ys], axis=-1))
    wing = rng.random(objects) < 0.33
    offsets = np.stack([half_w * cos[:, 0], half_w * sin[:, 0]], axis=1)
    wings = shapely.buffer(
        shapely.points(np.stack([cx, cy], axis=1) + offsets), half_h * 0.8, quad_segs=1
    )
    polygons[wing] = shapely.union(polygons[wing], wings[wing])
    bounds = shapely.bounds(polygons)
    order = np.argsort(bounds[:, 1])
    polygons, bounds = polygons[order], bounds[order]

    transform = Affine(RES, 0, 500_000.0, 0, -RES, 4_000_000.0)
    profile = dict(TILED_GTIFF_OPTIONS, height=height, width=width, count=1, dtype="uint8")
    profile.update(transform=transform, crs=CRS, nodata=255)
    band = 1024
    with atomic_output(path) as tmp, rasterio.open(tmp, "w", **profile) as ds:
        for row in range(0, height, band):
            rows = min(band, height - row)
            lo = np.searchsorted(bounds[:, 1], row - 30)
            hi = np.searchsorted(bounds[:, 1], row + rows)
            shapes = polygons[lo:hi][bounds[lo:hi, 3] >= row]
            block = np.zeros((rows, width), np.uint8)
            if shapes.size:
                block = rasterio.features.rasterize(
                    ((g, 1) for g in shapes),
                    out_shape=(rows, width),
                    transform=Affine.translation(0, row),
                    dtype="uint8",
                )
            ds.write(block, 1, window=rasterio.windows.Window(0, row, width, rows))
            print(f"\rmask rows {row + rows}/{height}", end="", file=sys.stderr)
        ds.update_tags(BENCH_PARAMS=json.dumps([height, width, objects, seed]))
    print(file=sys.stderr)


def run_baseline(mask: Path, out: Path) -> dict[str, float]:
    import geopandas as gpd
    import pyogrio
    import rasterio
    import rasterio.features
    from shapely.geometry import shape

    t0 = time.perf_counter()
    with rasterio.open(mask) as ds:
        array = ds.read(1)
        transform, crs = ds.transform, ds.crs
    t1 = time.perf_counter()
    features = list(
        rasterio.features.shapes(array, mask=array == 1, connectivity=4, transform=transform)
    )
    t2 = time.perf_counter()
    geoms = [shape(g) for g, _ in features]
    frame = gpd.GeoDataFrame({"area_m2": [g.area for g in geoms]}, geometry=geoms, crs=crs)
    t3 = time.perf_counter()
    pyogrio.write_dataframe(frame, out, layer="changes", driver="GPKG")
    t4 = time.perf_counter()
    return {
        "read_s": t1 - t0,
        "polygonize_s": t2 - t1,
        "geometries_s": t3 - t2,
        "write_s": t4 - t3,
        "wall_s": t4 - t0,
        "polygons": float(len(frame)),
    }


def run_geochange(
    mask: Path,
    out: Path,
    block_size: int,
    workers: int | None,
    return_frame: bool,
    parallel: str = "processes",
) -> dict[str, float]:
    import pyogrio

    from geochange.vectorize import vectorize_changes

    c0 = os.times()
    t0 = time.perf_counter()
    vectorize_changes(
        mask,
        out,
        block_size=block_size,
        workers=workers,
        return_frame=return_frame,
        parallel=parallel,
    )
    t1 = time.perf_counter()
    c1 = os.times()
    # Peak of the job itself: read_info below (counting the written features) is verification.
    peak = peak_rss_mb()
    return {
        "wall_s": t1 - t0,
        # CPU seconds of this process and its (reaped) workers: the work, whatever the load.
        "cpu_s": sum(c1[:4]) - sum(c0[:4]),
        "polygons": float(pyogrio.read_info(out)["features"]),
        "peak_rss_job_mb": peak,
    }


def child(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    mask, out = Path(args.mask), Path(args.out)
    with DescendantPeakRss() as workers:
        if args.child == "baseline":
            result = run_baseline(mask, out)
        else:
            frame = args.child == "geochange-frame"
            parallel = "threads" if args.child == "geochange-threads" else "processes"
            n = 1 if args.child == "geochange-inprocess" else args.workers
            result = run_geochange(mask, out, args.block_size, n, frame, parallel)
    result["peak_rss_main_mb"] = result.pop("peak_rss_job_mb", None) or peak_rss_mb()
    # VmHWM polled from /proc, not RUSAGE_CHILDREN: Linux carries ru_maxrss across exec, so a
    # worker's would start at this process's RSS when it was started.
    result["peak_rss_workers_mb"] = workers.peak_mb
    result["peak_rss_tree_mb"] = workers.tree_mb
    print("RESULT " + json.dumps(result))


def measure(method: str, args: argparse.Namespace, mask: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", method, "--mask", str(mask), "--out", str(out)]
    cmd += ["--block-size", str(args.block_size)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def cpu() -> str:
    """The lscpu model name and flags (from /proc/cpuinfo where lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = Path("/proc/cpuinfo").read_text()
    lines: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "flags") and key not in lines:
            lines[key] = value.strip()
    return (
        f"CPU: {lines.get('model name', '?')}, {os.cpu_count()} logical cores\n"
        f"flags: {lines.get('flags', '?')}"
    )


def same_output(a: Path, b: Path) -> bool:
    """Both files hold the same rows in the same order: attributes and exact geometries."""
    import pyogrio
    import shapely

    fa, fb = pyogrio.read_dataframe(a), pyogrio.read_dataframe(b)
    if len(fa) != len(fb) or not fa.drop(columns="geometry").equals(fb.drop(columns="geometry")):
        return False
    return bool(shapely.equals_exact(fa.geometry.values, fb.geometry.values).all())


def same_polygons(a: Path, b: Path) -> tuple[bool, int, int]:
    import pyogrio
    import shapely

    def load(path: Path) -> np.ndarray:
        frame = pyogrio.read_dataframe(path, columns=[])
        geoms = shapely.normalize(np.asarray(frame.geometry.values, dtype=object))
        bounds = shapely.bounds(geoms)
        order = np.lexsort((shapely.area(geoms), bounds[:, 2], bounds[:, 0], bounds[:, 1]))
        return geoms[order]

    ga, gb = load(a), load(b)
    if ga.size != gb.size:
        return False, int(ga.size), int(gb.size)
    return bool(shapely.equals_exact(ga, gb, tolerance=1e-6).all()), int(ga.size), int(gb.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="48000x32500", help="WIDTHxHEIGHT in pixels")
    parser.add_argument("--objects", type=int, default=560_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--data", default=str(ROOT / "bench_data"))
    parser.add_argument("--with-frame", action="store_true", help="also time return_frame=True")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="also time parallel='threads' and workers=1 against the worker processes",
    )
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(cpu())
    width, height = (int(v) for v in args.size.lower().split("x"))
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    mask = data / f"vectorize_mask_{width}x{height}_{args.objects}.tif"
    if not mask.exists():
        t0 = time.perf_counter()
        make_mask(mask, height, width, args.objects)
        print(f"generated {mask} in {time.perf_counter() - t0:.1f} s")
    import rasterio

    with rasterio.open(mask) as ds:
        changed = sum(
            int(np.count_nonzero(ds.read(1, window=w) == 1)) for _, w in ds.block_windows(1)
        )
    print(f"mask {width} x {height} px, {100 * changed / (width * height):.2f} % changed")

    runs: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    methods = ["geochange"] if args.skip_baseline else ["baseline", "geochange"]
    if args.with_frame:
        methods.append("geochange-frame")
    if args.parallel:
        methods += ["geochange-threads", "geochange-inprocess"]
    for repeat in range(args.repeats):
        for method in methods:  # interleaved, so machine load affects both alike
            out = data / f"vectorize_{method}.gpkg"
            result = measure(method, args, mask, out)
            runs[method].append(result)
            print(
                f"run {repeat + 1} {method}: "
                + ", ".join(f"{k}={v:.2f}" for k, v in result.items())
            )

    def median(method: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[method])

    print("\nmedians")
    for method in methods:
        wall = median(method, "wall_s")
        polygons = runs[method][0]["polygons"]
        print(
            f"  {method:15s}: wall {wall:6.2f} s, {polygons / wall:9.0f} polygons/s, "
            f"{polygons:.0f} polygons, peak RSS main {median(method, 'peak_rss_main_mb'):6.0f} MB"
            f", largest worker {median(method, 'peak_rss_workers_mb'):6.0f} MB"
            f", tree {median(method, 'peak_rss_tree_mb'):6.0f} MB"
            + (f", CPU {median(method, 'cpu_s'):6.2f} s" if method != "baseline" else "")
        )
    if args.parallel:
        reference = data / "vectorize_geochange.gpkg"
        for method in ("geochange-threads", "geochange-inprocess"):
            ratio = median(method, "wall_s") / median("geochange", "wall_s")
            identical = same_output(reference, data / f"vectorize_{method}.gpkg")
            print(f"  {method} / geochange wall time: {ratio:.2f}, identical file: {identical}")
    if not args.skip_baseline:
        for key in ("read_s", "polygonize_s", "geometries_s", "write_s"):
            print(f"  baseline {key}: {median('baseline', key):.2f}")
        ratio = median("geochange", "wall_s") / median("baseline", "wall_s")
        print(f"  wall-time ratio geochange / baseline: {ratio:.2f}")
        identical, n_base, n_ours = same_polygons(
            data / "vectorize_baseline.gpkg", data / "vectorize_geochange.gpkg"
        )
        print(f"  identical polygons: {identical} ({n_base} baseline, {n_ours} geochange)")


if __name__ == "__main__":
    main()

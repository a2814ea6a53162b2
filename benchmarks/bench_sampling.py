"""Sampling throughput of bi-temporal 256x256 windows on an LsSCD-scale scene pair.

Prints, in one run, samples/s (median of ``--repeats`` passes after ``--first-passes`` passes
timed apart) and peak RSS for:

* ``torchgeo-and``: plain TorchGeo baseline, two ``RasterDataset`` joined with ``&``;
* ``torchgeo-ts``: plain TorchGeo baseline, one ``RasterDataset(time_series=True)``;
* ``geochange-random``: :class:`BiTemporalRasterDataset` on the same random windows;
* ``geochange-balanced``: the dataset with :class:`ChangeBalancedGeoSampler` (50% change);
* ``geochange-compact``: random windows of the dataset with ``compact=True`` (uint8 images
  and masks, what ``ChangeDataModule``'s loaders yield; widened to float32 / long on the
  device);
* ``rasterio-raw``: raw ``DatasetReader.read`` of the same windows of both dates, files
  opened once per process, stacked as float32 (the ceiling the issue set);
* ``rasterio-raw-labels``: the same plus the change label's window as int64, i.e. the data a
  geochange sample holds;

each with 0 and 2 DataLoader workers (batch size 8; TorchGeo's ``stack_samples`` for the
TorchGeo and raw configurations, geochange's for geochange's, as ``ChangeDataModule`` uses).
Every configuration runs in a fresh subprocess so its peak RSS (the process plus its largest
worker, times the worker count, an upper bound) is its own. All timed runs read windows
already in the OS page cache (a warm-up pass reads them first), so the figures compare CPU
cost, not disk speed. The first pass of a loader is timed apart: each of its processes (the
main one with 0 workers, every worker otherwise) decodes the file blocks into its own GDAL block
cache then, so it measures decoding; the passes after it measure the steady state a training
run is in from its second epoch (the cache holds the scene when it fits, see
``BiTemporalRasterDataset(gdal_cache_mb=...)``). Each pass reads new random windows.

Generate the scene once (outside CI; ~10 GB of GeoTIFFs at full size)::

    python benchmarks/bench_sampling.py --generate --height 32500 --width 48000

then run::

    python benchmarks/bench_sampling.py --samples 400 --repeats 3 --first-passes 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "bench_data" / "lsscd"


# -- scene generation -----------------------------------------------------------------------


def generate(out: Path, height: int, width: int, seed: int) -> None:
    """Write pre.tif / post.tif / change.tif by tiling a small synthetic scene.

    A 2048 x 2048 scene from :func:`geochange.make_scene` (realistic texture, ~5% change) is
    repeated, with flips varying by position, over the large grid: file layout and compression
    (512-pixel tiles, ZSTD, predictor 2, BigTIFF) match what make_scene writes, at a fraction of
    its generation time.
    """
    import rasterio
    from rasterio.windows import Window

    from geochange.io import TILED_GTIFF_OPTIONS, atomic_output
    from geochange.synthetic import make_scene

    out.mkdir(parents=True, exist_ok=True)
    tile = 2048
    seed_dir = out / "seed_scene"
    scene = make_scene(seed_dir, tile, tile, seed=seed)
    for name in ("pre", "post", "change"):
        src_path = seed_dir / f"{name}.tif"
        with rasterio.open(src_path) as src:
            block = src.read()
            profile = dict(TILED_GTIFF_OPTIONS)
            profile.update(
                count=src.count,
                dtype=src.dtypes[0],
                crs=src.crs,
                transform=src.transform,
                width=width,
                height=height,
                nodata=src.nodata,
            )
        start = time.perf_counter()
        with atomic_output(out / f"{name}.tif") as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for r, row in enumerate(range(0, height, tile)):
                for c, col in enumerate(range(0, width, tile)):
                    data = block
                    if (r + c) % 2:
                        data = data[:, :, ::-1]
                    if r % 3 == 1:
                        data = data[:, ::-1, :]
                    h, w = min(tile, height - row), min(tile, width - col)
                    dst.write(np.ascontiguousarray(data[:, :h, :w]), window=Window(col, row, w, h))
        print(
            f"wrote {name}.tif {width}x{height} in {time.perf_counter() - start:.0f}s", flush=True
        )
    (out / "bench_scene.json").write_text(
        json.dumps({"height": height, "width": width, "seed": seed, "tile_of": str(scene.root)})
    )


# -- one measured configuration (runs in its own subprocess) --------------------------------


def _windows(data: Path, count: int, patch: int, seed: int) -> list[tuple[float, ...]]:
    import rasterio

    with rasterio.open(data / "pre.tif") as src:
        t, h, w = src.transform, src.height, src.width
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        row, col = int(rng.integers(0, h - patch)), int(rng.integers(0, w - patch))
        left, top = t.c + col * t.a, t.f + row * t.e
        out.append((left, top + patch * t.e, left + patch * t.a, top, row, col))
    return out


class _RawPairs:
    """Map-style dataset of raw rasterio window reads (files opened once per process)."""

    def __init__(
        self, data: Path, windows: list[tuple[float, ...]], patch: int, labels: bool = False
    ) -> None:
        self.data, self.windows, self.patch, self.labels = data, windows, patch, labels
        self.handles: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import rasterio
        import torch
        from rasterio.windows import Window

        if self.handles.get("pid") != os.getpid():
            self.handles = {
                "pid": os.getpid(),
                "pre": rasterio.open(self.data / "pre.tif"),
                "post": rasterio.open(self.data / "post.tif"),
                "change": rasterio.open(self.data / "change.tif"),
            }
        *_, row, col = self.windows[i]
        window = Window(int(col), int(row), self.patch, self.patch)
        pre = self.handles["pre"].read(window=window)
        post = self.handles["post"].read(window=window)
        sample = {"image": torch.from_numpy(np.stack([pre, post]).astype(np.float32))}
        if self.labels:
            change = self.handles["change"].read(1, window=window)
            sample["mask"] = torch.from_numpy(change.astype(np.int64))
        return sample


class _Slices:
    """Sampler yielding fixed GeoSlices."""

    def __init__(self, slices: list[Any]) -> None:
        self.slices = slices

    def __len__(self) -> int:
        return len(self.slices)

    def __iter__(self) -> Any:
        return iter(self.slices)


class _PeakPss:
    """Peak of the summed PSS of this process and its DataLoader workers (polled every 0.25 s).

    PSS splits pages shared after ``fork`` between the processes, so the sum is the real memory
    the configuration uses; ``ru_maxrss`` counts shared pages in every worker. The kernel's
    ``smaps_rollup`` is read (psutil's ``memory_full_info`` parses the whole ``smaps``, ~6 ms a
    process, which at 50 ms polls took a tenth of a core from the loader being measured).
    """

    def __init__(self, interval: float = 0.25) -> None:
        import threading

        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                pids = [me.pid, *(child.pid for child in me.children(recursive=True))]
            except psutil.Error:
                pids = [me.pid]
            self.peak = max(self.peak, sum(self._pss(pid) for pid in pids))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(
    method: str, data: Path, workers: int, count: int, patch: int, repeats: int, first: int = 0
) -> None:
    """Time one configuration (``first`` passes apart, then ``repeats``) and print a JSON line."""
    import warnings

    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    # Fresh windows for every repeat: re-reading the same windows would measure GDAL's block
    # cache, not reading. Repeat r uses seed r in every configuration (same windows for all).
    passes = first + repeats
    window_sets = [_windows(data, count, patch, seed=r) for r in range(passes)]
    slice_sets = [
        [(slice(w[0], w[2]), slice(w[1], w[3]), slice(None, None)) for w in ws]  # type: ignore[misc]
        for ws in window_sets
    ]
    setup_s = 0.0
    sampler: Any = None
    if method.startswith("torchgeo"):

        class Pre(RasterDataset):
            filename_glob = "pre.tif"

        class Post(RasterDataset):
            filename_glob = "post.tif"

        if method == "torchgeo-and":
            # Explicit files: a directory is searched recursively and could pick up others.
            dataset: Any = Pre([str(data / "pre.tif")]) & Post([str(data / "post.tif")])
        else:

            class Pair(RasterDataset):
                filename_glob = "p*.tif"
                filename_regex = r"^(pre|post)\.tif$"

            dataset = Pair([str(data / "pre.tif"), str(data / "post.tif")], time_series=True)
        sampler = _Slices(slice_sets[0])
    elif method.startswith("geochange"):
        from geochange.datasets import BiTemporalRasterDataset

        dataset = BiTemporalRasterDataset(
            data / "pre.tif",
            data / "post.tif",
            change=data / "change.tif",
            compact=method == "geochange-compact",
        )
        if method == "geochange-balanced":
            from geochange.samplers import ChangeBalancedGeoSampler

            start = time.perf_counter()
            sampler = ChangeBalancedGeoSampler(
                dataset,
                patch,
                count,
                change_fraction=0.5,
                generator=torch.Generator().manual_seed(0),
            )
            setup_s = time.perf_counter() - start
        else:
            sampler = _Slices(slice_sets[0])
    else:
        # All windows live in the dataset (workers keep their copy); the sampler picks the set.
        windows = [w for ws in window_sets for w in ws]
        dataset = _RawPairs(data, windows, patch, labels=method == "rasterio-raw-labels")
        raw_sets = [list(range(r * count, (r + 1) * count)) for r in range(passes)]
        sampler = _Slices(raw_sets[0])

    collate: Any = stack_samples
    if method.startswith("geochange"):
        from geochange.datasets.batches import stack_samples as collate
    loader_kwargs: dict[str, Any] = {
        "batch_size": 8,
        "num_workers": workers,
        "collate_fn": collate,
        "persistent_workers": workers > 0,
    }
    if sampler is not None:
        loader_kwargs["sampler"] = sampler
    if method.startswith("geochange") and workers > 0:
        # What ChangeDataModule's loaders use: workers' heaps do not grow per sample.
        from geochange.io import worker_init_bound_malloc

        loader_kwargs["worker_init_fn"] = worker_init_bound_malloc
    loader = DataLoader(dataset, **loader_kwargs)
    peak_pss = _PeakPss()
    rates = []
    samples = 0
    for r in range(passes):
        if isinstance(dataset, _RawPairs):
            sampler.slices = raw_sets[r]
        elif isinstance(sampler, _Slices):
            sampler.slices = slice_sets[r]
        start = time.perf_counter()
        samples = 0
        for batch in loader:
            samples += int(batch["image"].shape[0])
        rates.append(samples / (time.perf_counter() - start))
    peak_pss.stop()
    if workers:
        del loader  # stop persistent workers so their peak RSS is accounted to children
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if workers else 0
    print(
        json.dumps(
            {
                "method": method,
                "workers": workers,
                "samples": samples,
                "rate": statistics.median(rates[first:]),
                "rates": rates[first:],
                "first_rates": rates[:first],
                "setup_s": setup_s,
                "rss_mb": (self_kb + child_kb * workers) / 1024,
                "pss_mb": peak_pss.peak / 2**20,
            }
        ),
        flush=True,
    )


def warm_cache(data: Path, count: int, patch: int, passes: int) -> None:
    """Read every benchmark window once so all timed runs start from a warm page cache."""
    for seed in range(passes):
        raw = _RawPairs(data, _windows(data, count, patch, seed=seed), patch, labels=True)
        for i in range(len(raw)):
            raw[i]


def cpu_line() -> str:
    """``lscpu``'s model name and the SIMD/matrix flags that matter here, in one line."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"cpu: unknown, {os.cpu_count()} CPUs"
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                  if ln.startswith("Model name")), "unknown")  # fmt: skip
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines()
                  if ln.startswith("Flags")), [])  # fmt: skip
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"cpu: {model}, {os.cpu_count()} CPUs, flags: {' '.join(shown) or 'no avx2/avx512/amx'}"


def summary(results: dict[tuple[str, int], dict[str, Any]], workers: list[int]) -> None:
    """Print the best TorchGeo baseline, raw reads and geochange per worker count, and ratios."""
    print("summary (samples/s, medians; ratios measured in this run):")
    for w in workers:
        tg = max((results[(m, w)]["rate"] for m in ("torchgeo-and", "torchgeo-ts")
                  if (m, w) in results), default=None)  # fmt: skip
        raw = results.get(("rasterio-raw", w))
        raw_labels = results.get(("rasterio-raw-labels", w))
        line = f"  workers={w}: TorchGeo best {tg or float('nan'):.1f}, raw rasterio "
        line += f"{raw['rate'] if raw else float('nan'):.1f}"
        if raw_labels:
            line += f" (with labels {raw_labels['rate']:.1f})"
        for method in ("geochange-random", "geochange-balanced", "geochange-compact"):
            ours = results.get((method, w))
            if ours is None:
                continue
            line += f"; {method} {ours['rate']:.1f}"
            if tg:
                line += f" = {ours['rate'] / tg:.2f}x TorchGeo"
            if raw:
                line += f", {100 * ours['rate'] / raw['rate']:.0f}% of raw"
            if raw_labels:
                line += f" ({100 * ours['rate'] / raw_labels['rate']:.0f}% with labels)"
        print(line)
    if len(workers) > 1:
        w0, w1 = workers[0], workers[-1]
        for method in ("geochange-random", "geochange-balanced", "geochange-compact",
                       "rasterio-raw", "rasterio-raw-labels"):  # fmt: skip
            if (method, w0) in results and (method, w1) in results:
                ratio = results[(method, w1)]["rate"] / results[(method, w0)]["rate"]
                print(f"  {method}: {w1} workers / {w0} workers = {ratio:.2f}x")


def main() -> None:
    """Parse arguments, then generate the scene or run every configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--height", type=int, default=32500)
    parser.add_argument("--width", type=int, default=48000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="steady-state passes (median)")
    parser.add_argument(
        "--first-passes", type=int, default=1, help="passes timed apart first (cold caches)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "torchgeo-and",
            "torchgeo-ts",
            "geochange-random",
            "geochange-balanced",
            "geochange-compact",
            "rasterio-raw",
            "rasterio-raw-labels",
        ],
    )
    parser.add_argument("--_measure", nargs=2, metavar=("METHOD", "WORKERS"), help="internal")
    args = parser.parse_args()
    if args.generate:
        generate(args.data, args.height, args.width, args.seed)
        return
    if args._measure:
        measure(
            args._measure[0],
            args.data,
            int(args._measure[1]),
            args.samples,
            args.patch,
            args.repeats,
            args.first_passes,
        )
        return
    for name in ("pre.tif", "post.tif", "change.tif"):
        if not (args.data / name).exists():
            sys.exit(f"{args.data / name} is missing: run with --generate first")
    import rasterio

    with rasterio.open(args.data / "pre.tif") as src:
        print(f"scene: {src.width} x {src.height} px, {src.count} bands, {src.dtypes[0]}")
    print(cpu_line())
    print(
        f"{args.samples} windows of {args.patch}px, batch 8; median of {args.repeats} passes "
        f"after {args.first_passes} first pass(es) timed apart (each pass: new windows)"
    )
    warm_cache(args.data, args.samples, args.patch, args.first_passes + args.repeats)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for workers in args.workers:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--data", str(args.data), "--samples",
                   str(args.samples), "--patch", str(args.patch), "--repeats",
                   str(args.repeats), "--first-passes", str(args.first_passes),
                   "--_measure", method, str(workers)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            if done.returncode or not lines:
                print(f"{method} workers={workers} FAILED:\n{done.stderr[-2000:]}")
                continue
            result = json.loads(lines[-1])
            results[(method, workers)] = result
            extra = (
                f", sampler index built in {result['setup_s']:.1f}s" if result["setup_s"] else ""
            )
            cold = ", ".join(f"{r:.0f}" for r in result.get("first_rates", []))
            print(
                f"{method:20s} workers={workers}: {result['rate']:7.1f} samples/s "
                f"(passes {', '.join(f'{r:.0f}' for r in result['rates'])}; first "
                f"{cold or '-'}), "
                f"peak PSS {result['pss_mb']:.0f} MB (parent + workers; ru_maxrss bound "
                f"{result['rss_mb']:.0f} MB){extra}",
                flush=True,
            )
    summary(results, args.workers)


if __name__ == "__main__":
    main()

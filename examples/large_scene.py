"""Large scenes: bounded-memory prediction, partial runs, resuming, COGs, block-wise vectors, Dask.

Run ``python examples/large_scene.py`` (a few minutes on a laptop CPU at the default 2048 x 2048;
``--size 48000x32500`` generates and processes an LsSCD-scale pair, hours on a CPU). It

1. generates a synthetic scene pair (or takes ``--pre/--post``) and trains a small change
   model briefly (or takes ``--checkpoint``),
2. predicts the whole scene in a fresh process and prints its peak memory (RSS),
3. predicts only an area of interest with ``window=``,
4. kills a prediction half-way (as a crashed or pre-empted job would die) and resumes it with
   ``resume=True``, comparing the result with the uninterrupted run,
5. inspects the Cloud-Optimized GeoTIFF outputs (tiles, compression, overviews),
6. vectorizes the change map block by block into a GeoPackage,
7. runs the same prediction on a Dask cluster (a ``LocalCluster`` here; any
   ``distributed.Client`` works) and compares it with the single-process run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

SIDECAR = ".geochange-predict-progress.json"


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (or a single number for a square) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/large_scene"))
    parser.add_argument(
        "--size", type=parse_size, default=(2048, 2048), help="HxW, e.g. 48000x32500 (LsSCD)"
    )
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, help="a trained geochange checkpoint")
    parser.add_argument("--pre", type=Path, help="your pre image (with --post)")
    parser.add_argument("--post", type=Path, help="your post image")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--train-samples", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=1024, help="side of the training scene")
    parser.add_argument("--block-size", type=int, default=1024, help="vectorizer block size")
    parser.add_argument("--dask-workers", type=int, default=2, help="0 skips the Dask step")
    parser.add_argument("--skip-resume", action="store_true", help="skip the kill/resume step")
    return parser


def peak_rss_mib() -> float:
    """Peak resident memory (high-water mark) of this process, in MiB.

    Read from ``/proc/self/status`` (``VmHWM``) rather than ``getrusage``: ``ru_maxrss``
    survives ``exec``, so a freshly spawned interpreter would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    # Not Linux: fall back to getrusage (bytes on macOS, KiB elsewhere).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def predict_job(checkpoint: str, pre: str, post: str, out: str, options: dict[str, Any]) -> dict:
    """Run one prediction (in a fresh process) and report its figures and peak memory."""
    from geochange import ChangePredictor

    window = options.pop("window", None)
    resume = options.pop("resume", False)
    predictor = ChangePredictor.from_checkpoint(checkpoint, progress=False, **options)
    result = predictor.predict(pre, post, out, window=window, resume=resume)
    return {
        "tiles": result.tiles,
        "seconds": round(result.seconds, 1),
        "size": [result.height, result.width],
        "transform": list(result.transform)[:6] if result.transform else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def in_fresh_process(*args: Any) -> dict:
    """Run :func:`predict_job` in a new interpreter so its peak RSS is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(predict_job, *args).result()


def train_briefly(pre: Path, post: Path, change: Path, out: Path, args: argparse.Namespace) -> Path:
    """Train a binary change model for a few steps (skipped with --checkpoint)."""
    import lightning.pytorch as pl

    from geochange import ChangeDataModule, ChangeTrainer

    pl.seed_everything(args.seed, verbose=False)
    datamodule = ChangeDataModule(
        pre=pre,
        post=post,
        change=change,
        patch_size=256,
        batch_size=8,
        samples_per_epoch=args.train_samples,
        splits=(1.0, 0.0, 0.0),  # this tutorial is about prediction: no validation
        seed=args.seed,
    )
    module = ChangeTrainer(model="fusion_unet", task="binary", lr=2e-3, plot_every_n_epochs=0)
    trainer = pl.Trainer(
        max_epochs=args.train_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out / "runs",
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = out / "change_model.ckpt"
    trainer.save_checkpoint(checkpoint)
    return checkpoint


def kill_half_way(
    checkpoint: Path, pre: Path, post: Path, out: Path, args: argparse.Namespace
) -> int:
    """Start ``geochange predict`` and kill it once some rows are on disk; return those rows."""
    command = [
        sys.executable, "-m", "geochange", "predict", "--checkpoint", str(checkpoint),
        "--pre", str(pre), "--post", str(post), "--out-dir", str(out), "--quiet",
        "--tile-size", str(args.tile_size), "--overlap", str(args.overlap),
        "--batch-size", str(args.batch_size),
    ]  # fmt: skip
    # Its own process group, so the kill also takes its DataLoader reader processes.
    job = subprocess.Popen(command, start_new_session=True)
    rows_done = 0
    try:
        while job.poll() is None:
            try:
                rows_done = int(json.loads((out / SIDECAR).read_text())["rows_done"])
            except (OSError, ValueError, KeyError):
                rows_done = 0
            if rows_done > 0:
                os.killpg(job.pid, signal.SIGKILL)  # no clean-up: like a crash
                break
            time.sleep(0.05)
    finally:
        job.wait()
    return rows_done


def compare(first: Path, second: Path) -> dict[str, Any]:
    """Compare the change and probability rasters of two prediction directories.

    The change maps are expected to be identical. Probabilities can differ by one step
    (1/254) in a handful of pixels: tiles are batched differently when a run restarts or is
    split across workers, and convolutions on a different batch size round differently.
    """
    import numpy as np
    import rasterio

    result: dict[str, Any] = {}
    for name in ("change", "probability"):
        with rasterio.open(first / f"{name}.tif") as a, rasterio.open(second / f"{name}.tif") as b:
            diff = np.abs(a.read(1).astype(np.int16) - b.read(1).astype(np.int16))
        result[f"{name}_pixels_differing"] = int(np.count_nonzero(diff))
        result[f"{name}_max_difference"] = int(diff.max())
    return result


def describe_agreement(agreement: dict[str, Any]) -> str:
    """One line for :func:`compare`'s result."""
    return (
        f"change map differs in {agreement['change_pixels_differing']} pixels; probability in "
        f"{agreement['probability_pixels_differing']} pixels, by at most "
        f"{agreement['probability_max_difference']}/254"
    )


def describe_cog(path: Path) -> dict[str, Any]:
    """What a GIS client sees in a Cloud-Optimized GeoTIFF written by the predictor."""
    import rasterio

    with rasterio.open(path) as src:
        return {
            "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
            "size": [src.width, src.height],
            "dtype": src.dtypes[0],
            "nodata": src.nodata,
            "tiles": list(src.block_shapes[0]),
            "compress": src.compression.value if src.compression else None,
            "overviews": src.overviews(1),
            "crs": src.crs.to_string(),
        }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example and return its headline figures."""
    args = build_parser().parse_args(argv)

    import numpy as np
    import rasterio

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}

    # 1. The scene (bounded memory at any size: generated block by block) and a model.
    if args.pre is not None and args.post is not None:
        pre, post = args.pre, args.post
    else:
        from geochange.synthetic import make_scene

        height, width = args.size
        started = time.perf_counter()
        scene = make_scene(out / "scene", height, width, seed=args.seed, progress=height > 8192)
        pre, post = scene.pre, scene.post
        print(f"scene: {width} x {height} px per date in {time.perf_counter() - started:.0f} s")
    checkpoint = args.checkpoint
    if checkpoint is None:
        from geochange.synthetic import make_scene

        side = args.train_size
        train = make_scene(out / "scene_train", side, side, seed=args.seed + 100)
        checkpoint = train_briefly(train.pre, train.post, train.change, out, args)
        print(f"trained briefly: {checkpoint}")
    options = {
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
    }
    paths = (str(checkpoint), str(pre), str(post))

    # 2. Whole scene in a fresh process: memory depends on tile size and width, not height.
    full = in_fresh_process(*paths, str(out / "full"), dict(options))
    with rasterio.open(out / "full" / "change.tif") as src:
        changed = float(np.mean(src.read(1, out_shape=(1024, 1024)) == 1))
    print(
        f"full scene: {full['tiles']} tiles in {full['seconds']} s, peak RSS of the predicting "
        f"process {full['peak_rss_mib']:.0f} MiB, {changed:.2%} of pixels changed"
    )
    figures["full"] = full

    # 3. Only an area of interest: bounds (left, bottom, right, top) in the pre image's CRS.
    with rasterio.open(pre) as src:
        left, bottom, right, top = src.bounds
        aoi = (
            left + 0.25 * (right - left),
            bottom + 0.25 * (top - bottom),
            left + 0.75 * (right - left),
            bottom + 0.75 * (top - bottom),
        )
    part = in_fresh_process(*paths, str(out / "aoi"), {**options, "window": aoi})
    aoi_text = ", ".join(f"{v:.0f}" for v in aoi)
    origin = (part["transform"][2], part["transform"][5])
    print(
        f"area of interest ({aoi_text}): {part['size'][1]} x {part['size'][0]} px, "
        f"{part['tiles']} tiles, top-left corner {origin}"
    )
    figures["aoi"] = part

    # 4. Interrupt and resume: the sidecar records the rows already on disk.
    if not args.skip_resume:
        rows = kill_half_way(Path(paths[0]), pre, post, out / "resumed", args)
        left_behind = sorted(p.name for p in (out / "resumed").iterdir())
        print(f"killed after {rows} rows were flushed; left behind: {left_behind}")
        resumed = in_fresh_process(*paths, str(out / "resumed"), {**options, "resume": True})
        agreement = compare(out / "full", out / "resumed")
        print(f"resumed: {resumed['tiles']} of {full['tiles']} tiles inferred again")
        print(f"  vs the uninterrupted run: {describe_agreement(agreement)}")
        figures["resume"] = {"rows_before_kill": rows, "tiles": resumed["tiles"], **agreement}

    # 5. The outputs are Cloud-Optimized GeoTIFFs: tiled, compressed, with overviews.
    cog = describe_cog(out / "full" / "change.tif")
    print("change.tif:", json.dumps(cog))
    figures["cog"] = cog

    # 6. Block-wise vectorization: memory bounded by the block size, polygons identical to a
    #    whole-raster polygonization; written straight to the GeoPackage.
    import pyogrio

    from geochange import vectorize_changes

    started = time.perf_counter()
    vectorize_changes(
        out / "full" / "change.tif",
        out / "changes.gpkg",
        probability=out / "full" / "probability.tif",
        min_area=20.0,
        block_size=args.block_size,
        workers=2,
        return_frame=False,
    )
    info = pyogrio.read_info(out / "changes.gpkg", layer="changes")
    print(
        f"vectorized in {time.perf_counter() - started:.1f} s: {info['features']} polygons, "
        f"{info['crs']}, fields {list(info['fields'][:4])}..."
    )
    figures["polygons"] = int(info["features"])

    # 7. Scaling out with Dask: blocks of tile rows go to the workers, the client assembles them.
    if args.dask_workers > 0:
        from distributed import Client, LocalCluster

        from geochange import ChangePredictor

        predictor = ChangePredictor.from_checkpoint(checkpoint, progress=False, **options)
        with (
            LocalCluster(
                n_workers=args.dask_workers,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            result = predictor.predict(pre, post, out / "dask", client=client)
        agreement = compare(out / "full", out / "dask")
        print(f"Dask ({args.dask_workers} workers): {result.tiles} tiles in {result.seconds:.1f} s")
        print(f"  vs the single-process run: {describe_agreement(agreement)}")
        figures["dask"] = {"seconds": round(result.seconds, 1), **agreement}
    (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()

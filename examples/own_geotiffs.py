"""Bring your own GeoTIFFs: two dates in different CRSs and resolutions, nodata, vector labels.

Run ``python examples/own_geotiffs.py`` (a few minutes on a laptop CPU). Real projects rarely
get two images on one grid: the dates come from different providers, in different projections
and pixel sizes, with nodata where a swath ends, and the labels are polygons digitized in yet
another CRS. This example builds such a set from a synthetic scene, then

1. prepares "your" data: a pre image in UTM 50N (EPSG:32650) at 0.6 m, a post image warped to
   Web Mercator (EPSG:3857) at 0.8 m with a slanted nodata swath edge, and the changed
   buildings as a GeoPackage in WGS 84 (EPSG:4326);
2. opens them with ``BiTemporalRasterDataset``: both dates and the labels are read on the pre
   image's grid, nodata becomes ignore (255) in the masks;
3. cuts the scene into leak-free spatial stripes (``spatial_split``) and trains on the
   training stripe with ``ChangeDataModule``, testing on the test stripe;
4. predicts the whole scene with ``ChangePredictor`` (the post image is warped on the fly) and
   vectorizes the changes into a GeoPackage with areas in m².

Use your own files with ``--pre A.tif --post B.tif --labels changes.gpkg`` (any CRS each;
labels as polygons of change, or a 0/1 change raster).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path
from typing import Any


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (or a single number for a square) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        return int(parts[0]), int(parts[1])
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must look like 1024x1024, got {text!r}") from err


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/own_geotiffs"))
    parser.add_argument("--pre", type=Path, help="your pre image (default: generated)")
    parser.add_argument("--post", type=Path, help="your post image (default: generated)")
    parser.add_argument("--labels", type=Path, help="change polygons or 0/1 change raster")
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="generated HxW")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--post-crs", default="EPSG:3857", help="CRS of the generated post image")
    parser.add_argument(
        "--post-res", type=float, default=0.8, help="its pixel size on the ground (m)"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--samples", type=int, default=96, help="training windows per epoch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--tile-size", type=int, default=256, help="prediction tile size")
    parser.add_argument("--threshold", type=float, default=0.5, help="change probability cut")
    parser.add_argument("--min-area", type=float, default=20.0, help="m², smaller polygons dropped")
    parser.add_argument("--simplify", type=float, default=0.6, help="m, 0 keeps pixel outlines")
    parser.add_argument(
        "--regularize", choices=("rectangle", "orthogonal", "none"), default="rectangle"
    )
    parser.add_argument("--figure", type=Path, default=None, help="PNG (default OUT/map.png)")
    return parser


def quiet_lightning() -> None:
    """Keep the example's output readable: no Lightning banners or third-party deprecations."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # pyogrio notes the temporary ".partial" name of atomic writes; the final name is .gpkg.
    warnings.filterwarnings("ignore", message=".*filename extension should be.*")


def ground_to_crs_units(crs: str, ground_res: float, lon: float, lat: float) -> float:
    """Pixel size in ``crs`` units that covers ``ground_res`` metres on the ground at lon/lat.

    Web Mercator "metres" are not ground metres: at latitude 42° one EPSG:3857 unit is only
    cos(42°) = 0.74 m on the ground. The projection's scale factor converts between them.
    """
    import pyproj

    projection = pyproj.Proj(crs)
    if projection.crs.is_geographic:
        raise SystemExit(f"--post-crs {crs} is geographic; pick a projected CRS")
    scale = projection.get_factors(lon, lat).meridional_scale
    return ground_res * float(scale)


def make_post_image(
    source: Path, dst: Path, crs: str, ground_res: float, swath_fraction: float = 0.3
) -> Path:
    """Warp ``source`` to ``crs`` at ``ground_res`` m and cut a slanted nodata swath edge into it.

    The image is streamed block by block through a ``WarpedVRT`` (never read whole), like a
    delivery from another provider: another projection and pixel size, nodata 0 outside the
    footprint and beyond the swath edge (a line crossing the left part of the image).
    """
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import calculate_default_transform, transform

    from geochange.io import TILED_GTIFF_OPTIONS, atomic_output

    with rasterio.open(source) as src:
        centre_x = (src.bounds.left + src.bounds.right) / 2
        centre_y = (src.bounds.bottom + src.bounds.top) / 2
        (lon,), (lat,) = transform(src.crs, "EPSG:4326", [centre_x], [centre_y])
        resolution = ground_to_crs_units(crs, ground_res, lon, lat)
        dst_transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=resolution
        )
        profile = {
            **TILED_GTIFF_OPTIONS,
            "count": src.count,
            "dtype": "uint8",
            "crs": crs,
            "transform": dst_transform,
            "width": width,
            "height": height,
            "nodata": 0,
            "blockxsize": 256,
            "blockysize": 256,
        }
        with (
            WarpedVRT(
                src,
                crs=crs,
                transform=dst_transform,
                width=width,
                height=height,
                nodata=0,
                resampling=Resampling.bilinear,
            ) as vrt,
            atomic_output(dst) as tmp,
            rasterio.open(tmp, "w", **profile) as out,
        ):
            for _, window in out.block_windows(1):
                block = vrt.read(window=window)
                valid = vrt.read_masks(1, window=window) > 0
                # The swath edge: x/width + 0.5 * y/height < swath_fraction is not imaged.
                rows, cols = np.mgrid[
                    window.row_off : window.row_off + window.height,
                    window.col_off : window.col_off + window.width,
                ]
                valid &= cols / width + 0.5 * rows / height >= swath_fraction
                # 0 is nodata, so valid pixels are at least 1.
                block = np.where(valid, np.maximum(block, 1), 0).astype("uint8")
                out.write(block, window=window)
    return dst


def make_labels(changed_buildings: Path, dst: Path) -> Path:
    """Write the changed buildings as a GeoPackage in WGS 84, as digitized in a web tool."""
    import geopandas as gpd

    from geochange.io import atomic_output

    polygons = gpd.read_file(changed_buildings, layer="changed_buildings")
    polygons = polygons[["change_type", "geometry"]].to_crs("EPSG:4326")
    with atomic_output(dst) as tmp:
        polygons.to_file(tmp, driver="GPKG", layer="changes")
    return dst


def prepare_data(args: argparse.Namespace, out: Path) -> tuple[Path, Path, Path]:
    """Return ``(pre, post, labels)``: the user's files, or a generated set in mixed CRSs."""
    if args.pre or args.post or args.labels:
        if not (args.pre and args.post and args.labels):
            raise SystemExit("--pre, --post and --labels go together")
        return args.pre, args.post, args.labels
    from geochange.synthetic import make_scene

    height, width = args.size
    scene = make_scene(out / "scene", height, width, seed=args.seed)
    data = out / "my_data"
    data.mkdir(parents=True, exist_ok=True)
    post = make_post_image(scene.post, data / "post_3857.tif", args.post_crs, args.post_res)
    labels = make_labels(scene.changed_buildings, data / "changed_buildings_wgs84.gpkg")
    return scene.pre, post, labels


def is_raster(path: Path) -> bool:
    """Whether a label file is a raster (GeoTIFF/VRT) rather than a vector file."""
    return path.suffix.lower() in (".tif", ".tiff", ".vrt", ".img")


def describe(path: Path) -> str:
    """One line about a raster: CRS, pixel size in CRS units, size, nodata."""
    import rasterio

    with rasterio.open(path) as src:
        return (
            f"{path.name}: {src.crs.to_string()}, pixel {src.res[0]:.3f} {src.crs.linear_units}, "
            f"{src.width} x {src.height} px, nodata {src.nodata}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example and return its headline figures (also written to OUT/summary.json)."""
    args = build_parser().parse_args(argv)

    import geopandas as gpd
    import lightning.pytorch as pl
    import rasterio

    from geochange import ChangeDataModule, ChangePredictor, ChangeTrainer, vectorize_changes
    from geochange.datasets import BiTemporalRasterDataset, spatial_split

    quiet_lightning()
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. The data: two dates on different grids, labels in a third CRS.
    pre, post, labels = prepare_data(args, out)
    print("pre   ", describe(pre))
    print("post  ", describe(post))
    label_crs = None if is_raster(labels) else gpd.read_file(labels, rows=1).crs
    print(f"labels {labels.name}: {label_crs.to_string() if label_crs else 'raster'}")

    # 2. One dataset on the pre image's grid: the post image is warped on read (bilinear), the
    #    polygons reprojected once and rasterized per window. Nodata -> 255 (ignored).
    dataset = BiTemporalRasterDataset(pre, post, change=labels)
    left, bottom, right, top = dataset.index.total_bounds
    print(
        f"dataset: {dataset.crs.to_string()}, {dataset.res[0]:.2f} m, {dataset.in_channels} "
        f"bands, extent {right - left:.0f} x {top - bottom:.0f} m"
    )
    window = dataset.read_window((left, top - 64 * dataset.res[1], left + 64 * dataset.res[0], top))
    ignored = float((window["mask"] == 255).mean())
    print(f"top-left 64 x 64 window: {ignored:.0%} of the mask ignored (post nodata)")

    # 3. Spatial splits: rectangular stripes, so no training window overlaps a test window.
    splits = (0.7, 0.15, 0.15)
    stripes = spatial_split(dataset, splits, min_size=args.patch_size * dataset.res[0])
    for name, stripe in zip(("train", "val", "test"), stripes, strict=True):
        x0, y0, x1, y1 = stripe.bounds
        print(
            f"  {name:5s} stripe {x1 - x0:4.0f} x {y1 - y0:4.0f} m, lower left ({x0:.0f}, {y0:.0f})"
        )

    datamodule = ChangeDataModule(
        pre=pre,
        post=post,
        change=labels,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples,
        splits=splits,
        seed=args.seed,
    )
    module = ChangeTrainer(
        model="fusion_unet",
        backbone="resnet18",
        in_channels=dataset.in_channels,
        task="binary",
        lr=args.lr,
        warmup_steps=10,
        plot_every_n_epochs=0,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        max_steps=args.max_steps,
        accelerator="cpu",
        precision="32-true",
        default_root_dir=out / "runs",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = out / "building_change.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=True)  # model + geochange metadata
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    test_scores = {k.removeprefix("test/"): round(float(v), 3) for k, v in sorted(tested.items())}
    print("test stripe:", json.dumps(test_scores))

    # 4. Whole-scene prediction on the pre grid; the post date is warped on the fly.
    predictor = ChangePredictor.from_checkpoint(
        checkpoint,
        tile_size=args.tile_size,
        overlap=args.tile_size // 4,
        threshold=args.threshold,
        progress=False,
    )
    result = predictor.predict(pre, post, out / "prediction")
    with rasterio.open(result.change) as src, rasterio.open(pre) as ref:
        change = src.read(1)
        same_grid = src.crs == ref.crs and src.transform == ref.transform
        print(
            f"prediction: {result.change.name} {src.crs.to_string()}, "
            f"{src.width} x {src.height} px, on the pre grid: {same_grid}"
        )
    nodata_share = float((change == 255).mean())
    change_share = float((change == 1).mean())
    print(f"  nodata (outside the post swath) {nodata_share:.1%}, change {change_share:.1%}")

    polygons = vectorize_changes(
        result,
        out / "changed_buildings.gpkg",
        min_area=args.min_area,
        simplify=args.simplify,
        regularize=None if args.regularize == "none" else args.regularize,
    )
    area = float(polygons["area_m2"].sum()) if len(polygons) else 0.0
    print(
        f"vectorized: {len(polygons)} polygons, {area:.0f} m² in total, "
        f"CRS {polygons.crs.to_string()}"
    )

    figure_path = args.figure or out / "map.png"
    draw_map(pre, post, result.change, labels, stripes, figure_path)
    print(f"figure: {figure_path}")
    summary: dict[str, Any] = {
        "crs": str(polygons.crs),
        "same_grid": bool(same_grid),
        "test": test_scores,
        "nodata_share": round(nodata_share, 4),
        "change_share": round(change_share, 4),
        "changed_pixels": int((change == 1).sum()),
        "ignored_share_corner": round(ignored, 4),
        "polygons": len(polygons),
        "polygon_area_m2": round(area, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def draw_map(
    pre: Path, post: Path, change: Path, labels: Path, stripes: list[Any], path: Path
) -> None:
    """Post image in its own CRS | pre with split stripes | predicted change with labels."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from matplotlib.patches import Rectangle
    from rasterio.plot import plotting_extent

    def read_rgb(file: Path, rows: int = 400) -> tuple[Any, Any, Any]:
        with rasterio.open(file) as src:
            shape = (rows, max(1, rows * src.width // src.height))
            rgb = src.read((1, 2, 3), out_shape=(3, *shape)).transpose(1, 2, 0)
            alpha = src.dataset_mask(out_shape=shape) > 0
            rgba = np.dstack([rgb, np.where(alpha, 255, 0).astype("uint8")])
            return rgba, plotting_extent(src), src.crs

    post_rgba, post_extent, post_crs = read_rgb(post)
    pre_rgba, pre_extent, pre_crs = read_rgb(pre)
    with rasterio.open(change) as src:
        change_map = src.read(1, out_shape=pre_rgba.shape[:2])
    truth = None if is_raster(labels) else gpd.read_file(labels).to_crs(pre_crs)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    axes[0].imshow(post_rgba, extent=post_extent)
    axes[0].set_title(f"post as delivered ({post_crs.to_string()}, nodata white)", fontsize=10)
    axes[1].imshow(pre_rgba, extent=pre_extent)
    colours = {"train": "yellow", "val": "orange", "test": "magenta"}
    for (name, colour), stripe in zip(colours.items(), stripes, strict=True):
        x0, y0, x1, y1 = stripe.bounds
        axes[1].add_patch(
            Rectangle((x0, y0), x1 - x0, y1 - y0, fc=colour, ec=colour, alpha=0.3, label=name)
        )
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].set_title(f"pre ({pre_crs.to_string()}) and spatial splits", fontsize=10)
    axes[2].imshow(pre_rgba, extent=pre_extent, alpha=0.55)
    overlay = np.full(change_map.shape, np.nan)
    overlay[change_map == 1] = 1.0
    overlay[change_map == 255] = 0.0
    axes[2].imshow(overlay, extent=pre_extent, cmap="autumn", alpha=0.6, interpolation="nearest")
    if truth is not None and len(truth):
        truth.boundary.plot(ax=axes[2], color="cyan", linewidth=0.7)
    axes[2].set_title("predicted change (yellow), nodata (red), labels (cyan)", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        ax.set_ylabel("")
    save_small_png(fig, path)
    plt.close(fig)


def save_small_png(fig: Any, path: Path, dpi: int = 72) -> None:
    """Save a figure as a palette PNG (256 colours): a fraction of the RGB file's size."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    with Image.open(buffer) as image:
        path.parent.mkdir(parents=True, exist_ok=True)
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
        palette.save(path, optimize=True)


if __name__ == "__main__":
    main()

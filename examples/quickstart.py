"""Quickstart: synthetic scene -> short training -> whole-scene prediction -> changed buildings.

Run ``python examples/quickstart.py`` (about 1-2 minutes on a laptop CPU). It

1. generates a georeferenced synthetic scene pair (``geochange.synthetic.make_scene``),
2. trains a ``fusion_unet`` building-change detector briefly with ``ChangeTrainer``, using the
   scene's GeoPackage of changed buildings directly as the (vector) label,
3. predicts the whole scene with ``ChangePredictor`` (seamless sliding window, COG outputs),
4. vectorizes the predicted change into a GeoPackage of changed buildings,
5. scores it against the reference and draws a map figure (pre / post / change and polygons).

Flags scale it up: ``--size 4096x4096 --epochs 20 --samples 2000``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (or a single number for a square) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the quickstart."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("quickstart_output"))
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="HxW pixels")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--samples", type=int, default=96, help="training windows per epoch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-area", type=float, default=20.0, help="m², smaller polygons dropped")
    parser.add_argument("--figure", type=Path, default=None, help="PNG map (default OUT/map.png)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    """Run the quickstart and return its headline figures."""
    args = build_parser().parse_args(argv)

    import lightning.pytorch as pl
    import torch

    from geochange import ChangeDataModule, ChangePredictor, ChangeTrainer, vectorize_changes
    from geochange.evaluate import evaluate_scene
    from geochange.synthetic import make_scene

    torch.manual_seed(args.seed)
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    height, width = args.size

    # 1. A synthetic georeferenced pair: EPSG:32650, 0.6 m pixels, RGB, with exact labels.
    scene = make_scene(out / "scene", height, width, seed=args.seed)
    print(f"scene: {width} x {height} px, {scene.crs}, bounds {scene.bounds}")

    # 2. Train a binary building-change detector. The change label is the GeoPackage of new and
    #    demolished buildings: vector labels are rasterized per window on the fly.
    datamodule = ChangeDataModule(
        pre=scene.pre,
        post=scene.post,
        change=scene.changed_buildings,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples,
        splits=(0.7, 0.15, 0.15),
        seed=args.seed,
    )
    module = ChangeTrainer(
        model="fusion_unet",
        backbone="resnet18",
        in_channels=3,
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
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = out / "building_change.ckpt"
    trainer.save_checkpoint(checkpoint)
    validation = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    print("validation:", json.dumps({k: round(v, 3) for k, v in sorted(validation.items())}))

    # 3. Whole-scene prediction: normalization, bands and tile size come from the checkpoint.
    predictor = ChangePredictor.from_checkpoint(checkpoint, tile_size=256, overlap=64)
    result = predictor.predict(scene.pre, scene.post, out / "prediction")
    print(f"prediction: {result.change.name}, {result.probability.name} in {result.change.parent}")

    # 4. Changed buildings as polygons: squared-up outlines, tiny blobs dropped.
    buildings = vectorize_changes(
        result,
        out / "changed_buildings.gpkg",
        min_area=args.min_area,
        simplify=0.6,
        regularize="rectangle",
    )
    print(f"vectorized: {len(buildings)} polygons, CRS {buildings.crs.to_string()}")

    # 5. Score against the reference polygons (pixel and object level) and draw the map.
    report = evaluate_scene(
        result,
        scene.changed_buildings,
        reference_polygons=scene.changed_buildings,
        iou_threshold=0.3,
    )
    pixel = report.pixel or {}
    print("pixels:", json.dumps({k: round(float(pixel[k]), 3) for k in ("iou_change", "f1")}))
    objects = report.objects
    figures: dict[str, float | int] = {
        "polygons": len(buildings),
        "reference_buildings": int(objects["true_positives"] + objects["misses"]),
        "object_recall": round(float(objects["recall"]), 3),
        "object_precision": round(float(objects["precision"]), 3),
    }
    print("objects (IoU >= 0.3):", json.dumps(figures))
    figure_path = args.figure or out / "map.png"
    draw_map(scene.pre, scene.post, result.change, buildings, scene.changed_buildings, figure_path)
    print(f"figure: {figure_path}")
    return figures


def draw_map(pre: Path, post: Path, change: Path, predicted, reference: Path, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Draw pre | post | predicted change with predicted (red) and reference (cyan) polygons."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from rasterio.plot import plotting_extent

    with rasterio.open(pre) as src:
        pre_rgb = src.read(out_shape=(3, 512, 512 * src.width // src.height)).transpose(1, 2, 0)
        extent = plotting_extent(src)
    with rasterio.open(post) as src:
        post_rgb = src.read(out_shape=(3, *pre_rgb.shape[:2])).transpose(1, 2, 0)
    with rasterio.open(change) as src:
        change_map = src.read(1, out_shape=pre_rgb.shape[:2])
    truth = gpd.read_file(reference)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), constrained_layout=True)
    axes[0].imshow(pre_rgb, extent=extent)
    axes[0].set_title("pre")
    axes[1].imshow(post_rgb, extent=extent)
    axes[1].set_title("post")
    axes[2].imshow(post_rgb, extent=extent, alpha=0.6)
    overlay = (change_map == 1).astype(float)
    overlay[overlay == 0] = float("nan")
    axes[2].imshow(overlay, extent=extent, cmap="autumn", alpha=0.5, interpolation="nearest")
    truth.boundary.plot(ax=axes[2], color="cyan", linewidth=0.8)
    if len(predicted):
        predicted.boundary.plot(ax=axes[2], color="red", linewidth=0.8)
    axes[2].set_title("predicted change (red) / reference buildings (cyan)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()

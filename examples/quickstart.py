"""Quickstart: synthetic scenes -> short training -> whole-scene prediction -> changed buildings.

Run ``python examples/quickstart.py`` (a few minutes on a laptop CPU). It

1. generates two georeferenced synthetic scene pairs (``geochange.synthetic.make_scene``): one
   to train on, another (other seed, so other buildings and fields) to map;
2. trains a ``fusion_unet`` building-change detector briefly with ``ChangeTrainer``, using the
   training scene's GeoPackage of changed buildings directly as the (vector) label;
3. predicts the whole second scene with ``ChangePredictor`` (seamless sliding window, COG
   outputs on the scene's grid);
4. vectorizes the predicted change into a GeoPackage of changed buildings (areas in m²);
5. scores it against the scene's reference buildings (pixel and object level) and draws a map
   figure (pre / post / change overlay and polygons).

Everything goes to ``--out`` (default ``examples_output/quickstart``), including
``summary.json`` with the scores. Flags scale it up, e.g.
``--size 4096x4096 --epochs 20 --samples 2000 --patch-size 256``.
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
    """Command-line flags of the quickstart."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/quickstart"))
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="HxW pixels")
    parser.add_argument("--seed", type=int, default=7, help="seed of the training scene")
    parser.add_argument("--test-seed", type=int, default=4, help="seed of the mapped scene")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--samples", type=int, default=64, help="training windows per epoch")
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
    parser.add_argument("--figure", type=Path, default=None, help="PNG map (default OUT/map.png)")
    return parser


def quiet_lightning() -> None:
    """Keep the output readable: no Lightning banners or third-party deprecation notices."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    # pyogrio notes the temporary ".partial" name of atomic writes; the final name is .gpkg.
    warnings.filterwarnings("ignore", message=".*filename extension should be.*")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the quickstart and return its headline figures (also written to OUT/summary.json)."""
    args = build_parser().parse_args(argv)

    import lightning.pytorch as pl

    from geochange import ChangeDataModule, ChangePredictor, ChangeTrainer, vectorize_changes
    from geochange.evaluate import evaluate_scene
    from geochange.synthetic import make_scene

    quiet_lightning()
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    height, width = args.size

    # 1. Synthetic georeferenced pairs: EPSG:32650, 0.6 m pixels, RGB, with exact labels.
    train_scene = make_scene(out / "scene_train", height, width, seed=args.seed)
    scene = make_scene(out / "scene_test", height, width, seed=args.test_seed)
    print(f"scenes: {width} x {height} px, {scene.crs}, {scene.res} m pixels")
    for name, s in (("train", train_scene), ("test", scene)):
        print(
            f"  {name}: {s.stats['new_buildings']} new, "
            f"{s.stats['demolished_buildings']} demolished buildings"
        )

    # 2. Train a binary building-change detector. The label is the GeoPackage of new and
    #    demolished buildings: vector labels are rasterized per window on the fly. Half of the
    #    training windows are drawn around change (change pixels are a few % of a scene).
    datamodule = ChangeDataModule(
        pre=train_scene.pre,
        post=train_scene.post,
        change=train_scene.changed_buildings,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples,
        splits=(0.85, 0.15, 0.0),
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
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=datamodule)
    checkpoint = out / "building_change.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=True)  # model + geochange metadata
    validation = {
        k.removeprefix("val/"): round(float(v), 3)
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith("val/")
    }
    print("validation stripe:", json.dumps(validation))

    # 3. Whole-scene prediction of the other scene: normalization, bands and model come from
    #    the checkpoint; tiles overlap and are blended, so there are no seams.
    predictor = ChangePredictor.from_checkpoint(
        checkpoint,
        tile_size=args.tile_size,
        overlap=args.tile_size // 4,
        threshold=args.threshold,
        progress=False,
    )
    result = predictor.predict(scene.pre, scene.post, out / "prediction")
    print(
        f"prediction: {result.change.name}, {result.probability.name if result.probability else ''}"
        f" ({result.width} x {result.height} px, {result.crs}, {result.tiles} tiles)"
    )

    # 4. Changed buildings as polygons: squared-up outlines, tiny blobs dropped.
    buildings = vectorize_changes(
        result,
        out / "changed_buildings.gpkg",
        min_area=args.min_area,
        simplify=args.simplify,
        regularize=None if args.regularize == "none" else args.regularize,
    )
    total_area = float(buildings["area_m2"].sum()) if len(buildings) else 0.0
    print(
        f"vectorized: {len(buildings)} polygons, {total_area:.0f} m², "
        f"CRS {buildings.crs.to_string()} -> {out / 'changed_buildings.gpkg'}"
    )

    # 5. Score against the reference buildings (pixel and object level) and draw the map.
    # The reference polygons are rasterized block by block for the pixel scores and matched one
    # to one with the predicted polygons for the object scores.
    report = evaluate_scene(
        result,
        scene.changed_buildings,
        min_area=args.min_area,
        iou_threshold=0.3,
    )
    pixel = {k: round(float(v), 3) for k, v in (report.pixel or {}).items()}
    objects = report.objects or {}
    object_scores = {
        "reference_buildings": int(objects["true_positives"] + objects["misses"]),
        "found": int(objects["true_positives"]),
        "false_alarms": int(objects["false_positives"]),
        "recall": round(float(objects["recall"]), 3),
        "precision": round(float(objects["precision"]), 3),
    }
    print("pixels:", json.dumps({k: pixel[k] for k in ("iou_change", "f1", "precision", "recall")}))
    print("objects (IoU >= 0.3):", json.dumps(object_scores))
    figure_path = args.figure or out / "map.png"
    draw_map(scene.pre, scene.post, result.change, buildings, scene.changed_buildings, figure_path)
    print(f"figure: {figure_path}")

    summary: dict[str, Any] = {
        "crs": str(result.crs),
        "validation": validation,
        "pixel": pixel,
        "objects": object_scores,
        "polygons": len(buildings),
        "polygon_area_m2": round(total_area, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def draw_map(
    pre: Path, post: Path, change: Path, predicted: Any, reference: Path, path: Path
) -> None:
    """Draw pre | post | predicted change with predicted (red) and reference (cyan) polygons."""
    import geopandas as gpd
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from rasterio.plot import plotting_extent

    # Read decimated: the figure needs ~500 px, whatever the scene size (overviews are used).
    with rasterio.open(pre) as src:
        shape = (500, max(1, 500 * src.width // src.height))
        pre_rgb = src.read((1, 2, 3), out_shape=(3, *shape)).transpose(1, 2, 0)
        extent = plotting_extent(src)
    with rasterio.open(post) as src:
        post_rgb = src.read((1, 2, 3), out_shape=(3, *shape)).transpose(1, 2, 0)
    with rasterio.open(change) as src:
        change_map = src.read(1, out_shape=shape)
    truth = gpd.read_file(reference)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), constrained_layout=True)
    axes[0].imshow(pre_rgb, extent=extent)
    axes[0].set_title("pre")
    axes[1].imshow(post_rgb, extent=extent)
    axes[1].set_title("post")
    axes[2].imshow(post_rgb, extent=extent, alpha=0.6)
    overlay = np.where(change_map == 1, 1.0, np.nan)
    axes[2].imshow(overlay, extent=extent, cmap="autumn", alpha=0.5, interpolation="nearest")
    truth.boundary.plot(ax=axes[2], color="cyan", linewidth=0.9)
    if len(predicted):
        predicted.boundary.plot(ax=axes[2], color="red", linewidth=0.9)
    axes[2].set_title("predicted change: pixels, polygons (red); reference (cyan)", fontsize=10)
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

"""Semi-supervised change detection with generated change events (DiffMatch style), 5 % labels.

Run ``python examples/semi_supervised.py`` (a few minutes on a laptop CPU). It

1. generates a synthetic scene pair (and a separate test scene),
2. simulates "any segmenter" run on each date: per-date land-cover maps with realistic errors
   (``geochange.pseudo.degrade_class_map``), written as class GeoTIFFs -- exactly the files a
   real segmenter's output would be (``--segmenter-pre/--segmenter-post`` take yours),
3. turns the two maps into building-change pseudo labels with change event generation (CEG) in
   the three modes, with the library and with ``geochange pseudo-labels``, and scores them as an
   unsupervised change detector (IoU^c),
4. trains ``SemiSupervisedChangeTrainer(method="diffmatch")`` with only 5 % of the training
   area labeled (``ChangeDataModule(labeled_fraction=0.05, combine_unlabeled=True)``), the
   segmenter maps supervising the auxiliary heads and the CEG head on all pixels,
5. predicts the test scene and scores it against the reference building changes.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

BUILDING = 0


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (or a single number for a square) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/semi_supervised"))
    # A long scene: 5 % of the training stripe must still be at least one patch wide.
    parser.add_argument("--size", type=parse_size, default=(768, 3584), help="HxW pixels")
    parser.add_argument("--test-size", type=parse_size, default=(1024, 1024), help="HxW")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--test-seed", type=int, default=9)
    parser.add_argument("--labeled-fraction", type=float, default=0.05)
    parser.add_argument("--method", choices=("diffmatch", "fixmatch"), default="diffmatch")
    parser.add_argument("--model", default="siam_diff")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--samples", type=int, default=64, help="labeled windows per epoch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--erosion", type=int, default=1, help="simulated segmenter: px eroded")
    parser.add_argument("--confusion", type=float, default=0.03, help="share of confused px")
    parser.add_argument("--miss", type=float, default=0.5, help="P(small building missed)")
    own = parser.add_argument_group("your own segmenter output (instead of the simulation)")
    own.add_argument("--segmenter-pre", type=Path, help="class GeoTIFF of the first date")
    own.add_argument("--segmenter-post", type=Path, help="class GeoTIFF of the second date")
    own.add_argument("--prob-pre", type=Path, help="optional class probabilities, first date")
    own.add_argument("--prob-post", type=Path, help="optional class probabilities, second date")
    return parser


def write_class_raster(path: Path, classes: Any, like: Path, class_names: list[str]) -> Path:
    """Write a segmenter's class map as a GeoTIFF on the grid of ``like`` (a scene image).

    This is all a segmenter's output needs to plug in: one uint8 band of class ids on the image
    grid, 255 where unknown, and (optionally) the class names in the ``GEOCHANGE_CLASS_NAMES``
    tag so ``--change-classes building`` resolves by name.
    """
    import rasterio

    from geochange.io import TILED_GTIFF_OPTIONS, atomic_output

    with rasterio.open(like) as src:
        profile = {
            **TILED_GTIFF_OPTIONS,
            "crs": src.crs,
            "transform": src.transform,
            "height": src.height,
            "width": src.width,
        }
    profile.update(count=1, dtype="uint8", nodata=255)
    with atomic_output(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(classes.astype("uint8"), 1)
        dst.update_tags(GEOCHANGE_CLASS_NAMES=json.dumps(class_names))
    return path


def building_change_raster(scene: Any, path: Path) -> Path:
    """Reference building change of a synthetic scene: building at exactly one of the dates."""
    import rasterio

    with rasterio.open(scene.semantic_pre) as pre, rasterio.open(scene.semantic_post) as post:
        changed = (pre.read(1) == BUILDING) ^ (post.read(1) == BUILDING)
    return write_class_raster(path, changed, scene.pre, ["no change", "change"])


def draw_ceg(out: Path, reference: Path, path: Path) -> None:
    """Pixel- vs mixed-mode pseudo labels against the reference: hits, false and missed change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio

    with rasterio.open(reference) as src:
        truth = src.read(1) == 1
    modes = ("pixel", "mixed")
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 1.2 + 2.2 * len(modes)), squeeze=False)
    colours = np.array([[245, 245, 245], [0, 160, 0], [220, 30, 30], [40, 90, 230], [170] * 3])
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        with rasterio.open(out / f"pseudo_{mode}.tif") as src:
            labels = src.read(1)
        # 1 hit, 2 false change, 3 missed change, 4 ignored
        outcome = np.zeros(labels.shape, dtype=np.uint8)
        outcome[(labels == 1) & truth] = 1
        outcome[(labels == 1) & ~truth] = 2
        outcome[(labels == 0) & truth] = 3
        outcome[labels == 255] = 4
        # Dilate the rare change pixels so they survive the figure's downsampling.
        from scipy.ndimage import grey_dilation

        ax.imshow(colours[grey_dilation(outcome, size=5)], interpolation="nearest")
        ax.set_title(f"CEG '{mode}' vs reference: green hit, red false change, blue missed")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example and return its headline figures."""
    args = build_parser().parse_args(argv)

    import lightning.pytorch as pl
    import rasterio
    import torch

    from geochange import ChangeDataModule, ChangePredictor, SemiSupervisedChangeTrainer
    from geochange.evaluate import evaluate_scene
    from geochange.pseudo import degrade_class_map, evaluate_pseudo_labels, generate_pseudo_labels
    from geochange.synthetic import make_scene

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    # 1. A scene pair for training and another one for testing.
    height, width = args.size
    scene = make_scene(out / "scene_train", height, width, seed=args.seed)
    test = make_scene(out / "scene_test", *args.test_size, seed=args.test_seed)
    names = list(scene.class_names)
    print(f"training scene: {width} x {height} px; test scene: {test.width} x {test.height} px")
    reference = building_change_raster(scene, out / "building_change.tif")

    # 2. Per-date semantic maps "from any segmenter". Here: the true maps degraded the way real
    #    segmenters err (eroded outlines, class confusions, missed small buildings), one seed per
    #    date. Your own maps plug in as class GeoTIFFs on the image grid.
    if args.segmenter_pre is not None and args.segmenter_post is not None:
        seg_pre, seg_post = args.segmenter_pre, args.segmenter_post
    else:
        degrade = {
            "erosion_px": args.erosion,
            "confusion_fraction": args.confusion,
            "miss_probability": args.miss,
        }
        maps = []
        for date, seed in (("pre", 11), ("post", 12)):
            with rasterio.open(getattr(scene, f"semantic_{date}")) as src:
                truth = src.read(1)
            predicted = degrade_class_map(truth, seed=seed, **degrade)
            agree = float((predicted == truth).mean())
            print(f"simulated segmenter, {date} date: {agree:.1%} of pixels correct")
            maps.append(
                write_class_raster(out / f"segmenter_{date}.tif", predicted, scene.pre, names)
            )
        seg_pre, seg_post = maps

    # 3. Change event generation: building-change pseudo labels from the two maps, three modes.
    ceg: dict[str, dict[str, float]] = {}
    print("unsupervised CEG (building change) on the training scene:")
    print(f"  {'mode':<9}{'IoU^c':>7}{'F1':>7}{'prec':>7}{'recall':>7}{'coverage':>10}")
    for mode in ("pixel", "instance", "mixed"):
        labels = out / f"pseudo_{mode}.tif"
        generate_pseudo_labels(
            seg_pre,
            seg_post,
            labels,
            change_classes="building",
            mode=mode,
            prob_pre=args.prob_pre,
            prob_post=args.prob_post,
        )
        score = evaluate_pseudo_labels(labels, reference)
        ceg[mode] = {k: round(v, 3) for k, v in score.as_dict().items()}
        print(
            f"  {mode:<9}{score.iou_change:7.3f}{score.f1:7.3f}{score.precision:7.3f}"
            f"{score.recall:7.3f}{score.coverage:10.3f}"
        )
    # The same from the command line (what you would run on a cluster node):
    command = [
        sys.executable, "-m", "geochange", "pseudo-labels",
        "--semantic-pre", str(seg_pre), "--semantic-post", str(seg_post),
        "--out", str(out / "pseudo_cli.tif"), "--change-classes", "building",
        "--mode", "mixed", "--reference", str(reference), "--quiet",
    ]  # fmt: skip
    cli = subprocess.run(command, check=True, capture_output=True, text=True)
    print("$ geochange pseudo-labels ... --mode mixed --reference building_change.tif")
    print(cli.stdout.rstrip())
    draw_ceg(out, reference, out / "ceg.png")

    # 4. Semi-supervised training with 5 % of the training area labeled. The change label is the
    #    building change raster (only its labeled stripe is read); the segmenter maps come in as
    #    mask_pre / mask_post on labeled windows and, with semantic_as_pseudo=True, as
    #    pseudo_pre / pseudo_post on unlabeled ones; they feed the DiffMatch auxiliary and CEG
    #    heads.
    datamodule = ChangeDataModule(
        pre=scene.pre,
        post=scene.post,
        change=reference,
        semantic_pre=seg_pre,
        semantic_post=seg_post,
        semantic_as_pseudo=True,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples,
        splits=(0.8, 0.2, 0.0),
        labeled_fraction=args.labeled_fraction,
        combine_unlabeled=True,
        seed=args.seed,
    )
    labeled = datamodule.rois["labeled"].bounds
    unlabeled = datamodule.rois["unlabeled"].bounds
    share = (labeled[2] - labeled[0]) * (labeled[3] - labeled[1])
    total = share + (unlabeled[2] - unlabeled[0]) * (unlabeled[3] - unlabeled[1])
    print(f"labeled stripe: {share / total:.1%} of the training area, bounds {labeled}")
    module = SemiSupervisedChangeTrainer(
        args.model,
        backbone="resnet18",
        method=args.method,
        pseudo_num_classes=len(names),
        change_classes=[BUILDING],
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
    checkpoint = out / "semi_supervised.ckpt"
    trainer.save_checkpoint(checkpoint)
    logged = trainer.callback_metrics
    terms = ("loss_sup", "loss_unsup", "loss_generated_weak", "confident_fraction")
    train_terms = {
        k: round(float(logged[f"train/{k}"]), 3) for k in terms if f"train/{k}" in logged
    }
    print("last training step:", json.dumps(train_terms))
    validation = {k: round(float(logged[f"val/{k}"]), 3) for k in ("iou_change", "f1")}
    print("validation (building change):", json.dumps(validation))

    # 5. Predict the test scene and score it against its changed buildings (vector reference).
    predictor = ChangePredictor.from_checkpoint(
        checkpoint, tile_size=256, overlap=64, progress=False
    )
    result = predictor.predict(test.pre, test.post, out / "prediction")
    report = evaluate_scene(result, test.changed_buildings, iou_threshold=0.3, min_area=10.0)
    pixel = report.pixel or {}
    objects = report.objects or {}
    scores = {k: round(float(pixel[k]), 3) for k in ("iou_change", "f1", "precision", "recall")}
    scores["object_recall"] = round(float(objects["recall"]), 3)
    scores["object_precision"] = round(float(objects["precision"]), 3)
    print("test scene:", json.dumps(scores))
    figures = {"ceg": ceg, "validation": validation, "test": scores, "train_terms": train_terms}
    (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()

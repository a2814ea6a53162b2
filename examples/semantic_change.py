"""Semantic change detection (Hi-UCD / LsSCD style): from -> to transitions, SeK and Fscd.

Run ``python examples/semantic_change.py`` (a few minutes on a laptop CPU). It

1. generates a training scene and a separate test scene (``geochange.synthetic.make_scene``) with
   per-date land-cover maps in the seven LsSCD classes,
2. trains ``semantic_change`` (ClearSCD-style: per-date classes + change) with
   ``ChangeTrainer(task="semantic")`` and prints SeK / Fscd / mIoU on the validation stripe,
3. predicts the whole test scene: per-date class rasters and a ``transition.tif`` coded
   ``from * K + to``, all carrying class names and colour tables,
4. vectorizes the changes into polygons with ``from_class``, ``to_class`` and ``change_type``,
5. evaluates the scene (pixel SCD scores, objects per change type, the from -> to transition
   confusion matrix) and draws the figures.

Real data: point ``--pre/--post/--semantic-pre/--semantic-post`` (and ``--change``) at your
own co-registered GeoTIFFs; ``--test-*`` give the scene to predict and score.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

LSSCD_CLASSES = ("building", "road", "water", "bare land", "tree", "cropland", "others")


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (or a single number for a square) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("examples_output/semantic_change"))
    parser.add_argument("--size", type=parse_size, default=(1024, 1024), help="HxW of scenes")
    parser.add_argument("--seed", type=int, default=3, help="seed of the training scene")
    parser.add_argument("--test-seed", type=int, default=7, help="seed of the test scene")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=-1, help="cap on optimizer steps")
    parser.add_argument("--samples", type=int, default=96, help="training windows per epoch")
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--min-area", type=float, default=10.0, help="m², smaller dropped")
    parser.add_argument("--threshold", type=float, default=0.5, help="change probability")
    parser.add_argument("--class-names", default=",".join(LSSCD_CLASSES))
    parser.add_argument("--checkpoint", type=Path, help="skip training: use this checkpoint")
    real = parser.add_argument_group("your own data (instead of synthetic scenes)")
    for name in ("pre", "post", "semantic-pre", "semantic-post", "change"):
        real.add_argument(f"--{name}", type=Path, default=None)
        real.add_argument(f"--test-{name}", type=Path, default=None)
    return parser


def scene_inputs(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Training and test inputs: the user's rasters, or two generated synthetic scenes."""
    if args.pre is not None:
        train = {
            "pre": args.pre,
            "post": args.post,
            "semantic_pre": args.semantic_pre,
            "semantic_post": args.semantic_post,
            "change": args.change,
        }
        test = {
            "pre": args.test_pre,
            "post": args.test_post,
            "semantic_pre": args.test_semantic_pre,
            "semantic_post": args.test_semantic_post,
            "change": args.test_change,
        }
        missing = [k for d in (train, test) for k, v in d.items() if v is None and k != "change"]
        if missing:
            raise SystemExit(f"with --pre, also give: {sorted(set(missing))} (and --test-*)")
        return train, test

    from geochange.synthetic import make_scene

    height, width = args.size
    scenes = []
    for name, seed in (("scene_train", args.seed), ("scene_test", args.test_seed)):
        scene = make_scene(out / name, height, width, seed=seed)
        print(f"{name}: {width} x {height} px, {scene.crs}, classes {list(scene.class_names)}")
        scenes.append(
            {
                "pre": scene.pre,
                "post": scene.post,
                "semantic_pre": scene.semantic_pre,
                "semantic_post": scene.semantic_post,
                "change": scene.change,
                "polygons": scene.changed_buildings,
            }
        )
    return scenes[0], scenes[1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example and return its headline figures."""
    args = build_parser().parse_args(argv)

    import geopandas as gpd
    import lightning.pytorch as pl
    import rasterio
    import torch

    from geochange import ChangeDataModule, ChangePredictor, ChangeTrainer, vectorize_changes
    from geochange.evaluate import evaluate_scene

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)
    pl.seed_everything(args.seed, verbose=False)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    class_names = [name.strip() for name in args.class_names.split(",")]

    # 1. Data: images plus one land-cover raster per date (uint8 class ids, 255 = unlabeled).
    train, test = scene_inputs(args, out)

    # 2. Train a semantic change model: per-date class logits + change logits, SCD loss
    #    (CE on both dates, change BCE/Dice, BSCC and SACL terms).
    validation: dict[str, float] = {}
    if args.checkpoint is not None:
        checkpoint = args.checkpoint
    else:
        datamodule = ChangeDataModule(
            pre=train["pre"],
            post=train["post"],
            change=train["change"],
            semantic_pre=train["semantic_pre"],
            semantic_post=train["semantic_post"],
            patch_size=args.patch_size,
            batch_size=args.batch_size,
            samples_per_epoch=args.samples,
            splits=(0.8, 0.2, 0.0),
            seed=args.seed,
        )
        module = ChangeTrainer(
            model="semantic_change",
            backbone=args.backbone,
            task="semantic",
            num_classes=len(class_names),
            class_names=class_names,
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
        checkpoint = out / "semantic_change.ckpt"
        trainer.save_checkpoint(checkpoint)
        keys = ("val/sek", "val/fscd", "val/miou", "val/iou_change", "val/f1")
        validation = {
            k.removeprefix("val/"): round(float(trainer.callback_metrics[k]), 3) for k in keys
        }
        print("validation:", json.dumps(validation))

    # 3. Whole-scene prediction. A semantic checkpoint gives five rasters: change, probability,
    #    semantic_pre, semantic_post and transition (from * K + to; 254 unchanged, 255 nodata).
    predictor = ChangePredictor.from_checkpoint(
        checkpoint, tile_size=256, overlap=64, threshold=args.threshold, progress=False
    )
    result = predictor.predict(test["pre"], test["post"], out / "prediction")
    assert result.transition is not None and result.semantic_post is not None
    with rasterio.open(result.transition) as src:
        transition_names = json.loads(src.tags()["GEOCHANGE_TRANSITION_NAMES"])
        codes, counts = torch.unique(
            torch.from_numpy(src.read(1, masked=True).filled(255)), return_counts=True
        )
        colours = src.colormap(1)
    with rasterio.open(result.semantic_post) as src:
        stored_names = json.loads(src.tags()["GEOCHANGE_CLASS_NAMES"])
    print(f"class names stored in {result.semantic_post.name}: {stored_names}")
    found = {
        transition_names[str(int(code))]: int(count)
        for code, count in zip(codes, counts, strict=True)
        if str(int(code)) in transition_names
    }
    top = sorted(found.items(), key=lambda item: -item[1])[:5]
    print("most frequent predicted transitions (pixels):", json.dumps(dict(top)))
    if top:
        name, _ = top[1] if len(top) > 1 else top[0]
        code = next(int(c) for c, n in transition_names.items() if n == name)
        print(
            f"transition.tif: code {code} = {name!r}, colour {colours[code][:3]} (its 'to' class)"
        )

    # 4. Change polygons: one per connected region of one change type, with majority classes.
    polygons = vectorize_changes(result, out / "changes.gpkg", min_area=args.min_area, simplify=0.6)
    by_type = polygons.groupby("change_type").size().sort_values(ascending=False)
    print(f"vectorized: {len(polygons)} polygons; top change types:")
    print(by_type.head(6).to_string())
    written = gpd.read_file(out / "changes.gpkg", layer="changes", rows=3)
    print(written[["from_class", "to_class", "change_type", "area_m2"]].to_string())

    # 5. Evaluation against the reference class maps: SCD pixel scores, objects, transitions.
    report = evaluate_scene(
        result,
        test["change"],
        semantic_pre=test["semantic_pre"],
        semantic_post=test["semantic_post"],
        reference_polygons=test.get("polygons"),
        min_area=args.min_area,
        iou_threshold=0.5,
        class_names=class_names,
    )
    saved = report.save(out / "report")
    pixel = report.pixel or {}
    scores = {k: round(float(pixel[k]), 3) for k in ("sek", "fscd", "miou", "iou_change", "f1")}
    print("test scene, pixels:", json.dumps(scores))
    if report.objects_by_type:
        for name, row in report.objects_by_type.items():
            if name in ("new building", "demolished building"):
                recall, precision = float(row["recall"]), float(row["precision"])
                print(f"  objects {name!r}: recall {recall:.3f}, precision {precision:.3f}")
    print(f"report: {', '.join(sorted(p.name for p in saved.values()))} in {out / 'report'}")
    figure = out / "maps.png"
    draw_maps(test, result, figure)
    print(f"figures: {figure}, {out / 'report' / 'figures' / 'transitions.png'}")
    figures: dict[str, Any] = {"validation": validation, "test": scores}
    figures["polygons"] = len(polygons)
    figures["transitions_found"] = len(found)
    (out / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def draw_maps(test: dict[str, Any], result: Any, path: Path) -> None:
    """Draw post image | reference post classes | predicted post classes | predicted transitions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from matplotlib.colors import ListedColormap

    with rasterio.open(result.semantic_post) as src:
        table = src.colormap(1)  # the predictor's palette, used for every class panel
    lut = np.zeros((256, 3), dtype=np.uint8)
    for value, rgba in table.items():
        if value < 256:
            lut[value] = rgba[:3]
    lut[254] = (245, 245, 245)  # unchanged pixels of the transition raster
    lut[255] = (255, 255, 255)

    def coloured(path: Path, size: tuple[int, int]) -> Any:
        """Nearest-neighbour decimated class (or transition) raster painted with ``lut``."""
        with rasterio.open(path) as src:
            values = src.read(1, out_shape=size)
        if path == result.transition:
            names = result.class_names or []
            values = np.where(values < 254, values % max(len(names), 1), values)  # 'to' class
        return lut[values]

    with rasterio.open(test["post"]) as src:
        size = (512, 512 * src.width // src.height)
        post = src.read((1, 2, 3), out_shape=(3, *size)).transpose(1, 2, 0)
    panels = [
        ("post image", post),
        ("reference post classes", coloured(Path(test["semantic_post"]), size)),
        ("predicted post classes", coloured(result.semantic_post, size)),
        ("predicted transitions (coloured by 'to')", coloured(result.transition, size)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.4))
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    names = result.class_names or []
    colours = ListedColormap([np.array(table[i][:3]) / 255 for i in range(len(names))])
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours(i), label=name) for i, name in enumerate(names)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(names), frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.1, wspace=0.03)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


if __name__ == "__main__":
    main()

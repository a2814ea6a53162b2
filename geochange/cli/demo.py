"""``geochange demo``: the whole workflow on generated data, end to end, offline.

Generates a georeferenced synthetic scene pair for training and another one (different seed) for
testing, trains a change model briefly, predicts the whole test scene with the sliding-window
predictor (Cloud-Optimized GeoTIFFs), vectorizes the change map into a GeoPackage of change
polygons and evaluates it per pixel and per object against the scene's ground truth.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geochange.cli import add_renamed_option

if TYPE_CHECKING:
    from geochange.evaluate import EvaluationReport
    from geochange.predict import PredictionResult
    from geochange.synthetic import Scene

HELP = "run the end-to-end demo: synthetic scene -> train -> predict -> GeoPackage -> report"


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must look like 1536x1536, got {text!r}") from err
    return height, width


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    add_renamed_option(
        parser, "--out-dir", "--out", type=Path, default=Path("demo_output"),
        help="output directory",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=_size, default=(1536, 1536), help="HEIGHTxWIDTH of each scene"
    )
    parser.add_argument(
        "--task", choices=("binary", "semantic"), default="binary", help="change task to train"
    )
    parser.add_argument("--epochs", type=int, default=4, help="training epochs")
    parser.add_argument("--samples-per-epoch", type=int, default=96, help="windows per epoch")
    parser.add_argument("--patch-size", type=int, default=256, help="training window size")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--backbone", default="resnet18", help="smp encoder name")
    parser.add_argument("--seed", type=int, default=4, help="seed of the training scene")
    parser.add_argument("--test-seed", type=int, default=7, help="seed of the test scene")
    parser.add_argument("--min-area", type=float, default=20.0, help="drop polygons below (m^2)")


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints where every output went and the scores on the test scene."""
    import lightning as L

    from geochange.io import check_writable_dir

    out = check_writable_dir(args.out_dir)
    started = time.perf_counter()
    L.seed_everything(args.seed, workers=True)
    train_scene, test_scene = _generate_scenes(args, out)
    checkpoint = _train(args, train_scene, out)
    result = _predict(checkpoint, test_scene, out)
    polygons = _vectorize(args, result, out)
    report = _evaluate(args, result, test_scene, out)
    print(json.dumps(_summary(report, len(polygons), started), indent=2))
    print(
        "outputs:\n"
        f"  checkpoint     {checkpoint}\n"
        f"  change map     {result.change}\n"
        f"  probability    {result.probability}\n"
        f"  polygons       {out / 'changes.gpkg'} (layer 'changes', {len(polygons)} features)\n"
        f"  report         {out / 'report'} (report.md, report.json, objects.gpkg, figures/)"
    )
    return 0


def _generate_scenes(args: argparse.Namespace, out: Path) -> tuple[Scene, Scene]:
    """Phase 1: the training scene pair and the test scene pair (another seed)."""
    from geochange.synthetic import make_scene

    height, width = args.size
    print(f"[1/5] generating synthetic scene pairs ({height} x {width} px) in {out}")
    train_scene = make_scene(out / "scene_train", height, width, seed=args.seed)
    test_scene = make_scene(out / "scene_test", height, width, seed=args.test_seed)
    return train_scene, test_scene


def _train(args: argparse.Namespace, train_scene: Scene, out: Path) -> Path:
    """Phase 2: train briefly on the training scene; returns the saved checkpoint."""
    import lightning as L

    from geochange.datamodules import ChangeDataModule
    from geochange.trainers import ChangeTrainer

    semantic = args.task == "semantic"
    print(f"[2/5] training a {args.task} change model for {args.epochs} epochs")
    datamodule = ChangeDataModule(
        pre=train_scene.pre,
        post=train_scene.post,
        change=train_scene.change,
        semantic_pre=train_scene.semantic_pre if semantic else None,
        semantic_post=train_scene.semantic_post if semantic else None,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        samples_per_epoch=args.samples_per_epoch,
        splits=(0.8, 0.2, 0.0),
        seed=args.seed,
    )
    model = ChangeTrainer(
        model="semantic_change" if semantic else "fusion_unet",
        backbone=args.backbone,
        task=args.task,
        num_classes=len(train_scene.class_names) if semantic else None,
        class_names=list(train_scene.class_names) if semantic else None,
        lr=1e-3,
        plot_every_n_epochs=0,
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        default_root_dir=out / "training",
        enable_checkpointing=False,
        logger=L.pytorch.loggers.TensorBoardLogger(out / "training", name="logs"),
        log_every_n_steps=5,
        enable_progress_bar=True,
    )
    trainer.fit(model, datamodule=datamodule)
    checkpoint = out / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    return checkpoint


def _predict(checkpoint: Path, test_scene: Scene, out: Path) -> PredictionResult:
    """Phase 3: the whole test scene through the sliding-window predictor (COG products)."""
    from geochange.predict import ChangePredictor

    print("[3/5] predicting the whole test scene (sliding window, COG outputs)")
    predictor = ChangePredictor.from_checkpoint(checkpoint, tile_size=512, overlap=128)
    return predictor.predict(test_scene.pre, test_scene.post, out / "prediction")


def _vectorize(args: argparse.Namespace, result: PredictionResult, out: Path) -> Any:
    """Phase 4: the change map as polygons in ``changes.gpkg``; returns the GeoDataFrame."""
    from geochange.vectorize import vectorize_changes

    print("[4/5] vectorizing the change map into a GeoPackage")
    return vectorize_changes(result, out / "changes.gpkg", min_area=args.min_area)


def _evaluate(
    args: argparse.Namespace, result: PredictionResult, test_scene: Scene, out: Path
) -> EvaluationReport:
    """Phase 5: score per pixel and per object against the scene's truth; saves the report."""
    from geochange.evaluate import evaluate_scene

    print("[5/5] evaluating against the test scene's ground truth")
    report = evaluate_scene(
        result,
        reference=test_scene.change,
        reference_polygons=test_scene.changed_buildings,
        min_area=args.min_area,
        progress=False,
    )
    report.save(out / "report")
    return report


def _summary(report: EvaluationReport, polygons: int, started: float) -> dict[str, Any]:
    """The scores printed at the end (rounded), with the polygon count, time and device."""
    import torch

    pixel = report.pixel or {}
    objects = report.objects or {}
    return {
        "pixel": {k: round(float(v), 4) for k, v in pixel.items() if isinstance(v, float)},
        "objects": {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in objects.items()
            if isinstance(v, int | float)
        },
        "polygons": polygons,
        "seconds": round(time.perf_counter() - started, 1),
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
    }

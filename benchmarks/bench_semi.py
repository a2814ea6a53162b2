"""Semi-supervised change detection benchmark: supervised-only vs FixMatch vs DiffMatch, 5% labels.

On synthetic scenes (:func:`geochange.synthetic.make_scene`), a training scene and a held-out
scene with different seeds, both holding new and demolished buildings:

1. A per-date "segmenter" is simulated by degrading the true class maps with
   :func:`geochange.pseudo.degrade_class_map` (eroded building outlines, blob-shaped class
   confusions, missed small buildings; another seed per date). The degraded maps are written as
   class rasters and given to :class:`geochange.ChangeDataModule` as ``semantic_pre`` /
   ``semantic_post``: they are the pseudo semantic maps DiffMatch learns from.
2. ``labeled_fraction`` (default 5%) of the training scene keeps its change labels.
3. Three runs with the *same* budget (optimizer steps, batch size, patch size, learning-rate
   schedule, seed):

   * supervised-only: :class:`geochange.ChangeTrainer` on the labeled share;
   * FixMatch-only: :class:`geochange.SemiSupervisedChangeTrainer` ``method="fixmatch"``;
   * DiffMatch-style: ``method="diffmatch"`` (generated-label head, auxiliary semantic
     decoders, contrastive loss).

   Each checkpoint is loaded by :class:`geochange.ChangePredictor`, which predicts the whole
   held-out scene; :func:`geochange.evaluate_scene` scores it (IoU^c of the change class).
4. Unsupervised CEG on the held-out scene: change pseudo labels from the degraded maps of that
   scene (:func:`geochange.pseudo.generate_pseudo_labels`), scored against the truth.

Targets: DiffMatch-style >= supervised-only + 3 IoU^c points, and >= FixMatch-only. With
``--repeats N`` every method runs with seeds ``seed .. seed + N - 1`` and the medians are
compared. The machine (CPU, cores, load average) is printed, since on a shared CPU the default
budget is small.

Usage::

    .venv/bin/python benchmarks/bench_semi.py                      # 15-25 min, 2 loaded cores
    .venv/bin/python benchmarks/bench_semi.py --steps 1500 --patch 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from rss import peak_rss_mb

warnings.filterwarnings("ignore")


def quiet_lightning() -> None:
    """Silence Lightning's per-fit banners (GPU available, tips), which drown the figures."""
    import lightning.pytorch  # noqa: F401  (its import configures these loggers)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


BUILDING = 0
#: Segmenter simulation: 1 px eroded outlines, 3% blob confusions, half the small buildings missed.
DEGRADE: dict[str, Any] = {
    "erosion_px": 1,
    "confusion_fraction": 0.03,
    "miss_area": 80,
    "miss_probability": 0.5,
}
#: Small siamese network: three encoder stages keep a step affordable on a shared 2-core CPU.
MODEL_KWARGS: dict[str, Any] = {
    "encoder_depth": 3,
    "decoder_channels": (64, 32, 16),
    "aux_decoder_channels": (32, 16, 16),
}
METHODS = ("supervised", "fixmatch", "diffmatch")


def machine() -> str:
    """CPU model, core count, load average and torch threads."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{cpu}; {os.cpu_count()} cores; load average {load} (1/5/15 min); "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)"
    )


def scene(root: Path, size: int, seed: int) -> Any:
    """A synthetic scene, generated once and reused from ``root``."""
    from geochange.synthetic import Scene, make_scene

    if (root / "scene.json").exists():
        return Scene.load(root)
    return make_scene(root, size, size, seed=seed)


def write_segmenter_maps(scene_: Any, out_dir: Path, seed: int) -> tuple[Path, Path]:
    """Degrade the scene's true class maps (one seed per date) and write them as rasters."""
    import rasterio

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, source in enumerate((scene_.semantic_pre, scene_.semantic_post)):
        target = out_dir / f"segmenter_{'pre' if index == 0 else 'post'}.tif"
        paths.append(target)
        if target.exists():
            continue
        with rasterio.open(source) as src:
            profile = src.profile
            tags = src.tags()
            classes = src.read(1)
        degraded = np.asarray(degrade_class_map(classes, index, seed), dtype=np.uint8)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(degraded, 1)
            dst.update_tags(**tags)
    return paths[0], paths[1]


def degrade_class_map(classes: np.ndarray, date: int, seed: int) -> np.ndarray:
    """The simulated segmenter's output for one date."""
    from geochange.pseudo import degrade_class_map as degrade

    return degrade(classes, seed=seed * 2 + date, **DEGRADE)


def datamodule(args: argparse.Namespace, train: Any, maps: tuple[Path, Path], seed: int) -> Any:
    """Training datamodule: 5% labeled stripe + unlabeled rest; pseudo maps as semantic labels."""
    from geochange.datamodules import ChangeDataModule

    return ChangeDataModule(
        pre=str(train.pre),
        post=str(train.post),
        change=str(train.change),
        semantic_pre=str(maps[0]),
        semantic_post=str(maps[1]),
        patch_size=args.patch,
        batch_size=args.batch,
        unlabeled_batch_size=args.batch,
        samples_per_epoch=args.batch * args.steps,
        splits=(1.0, 0.0, 0.0),  # the held-out scene is the test set
        labeled_fraction=args.labeled_fraction,
        combine_unlabeled=True,
        semantic_as_pseudo=True,  # the segmenter maps stay on unlabeled batches
        seed=seed,
    )


def labeled_share(dm: Any, train: Any) -> str:
    """Change pixels and changed objects inside the labeled stripe of the training scene."""
    import rasterio
    import rasterio.windows
    import scipy.ndimage as ndi

    left, bottom, right, top = dm.rois["labeled"].bounds
    with rasterio.open(train.change) as src:
        window = rasterio.windows.from_bounds(left, bottom, right, top, src.transform)
        window = window.round_offsets().round_lengths()
        change = src.read(1, window=window) == 1
    _, objects = ndi.label(change)
    return (
        f"labeled stripe {int(window.width)} x {int(window.height)} px (width x height): "
        f"{int(change.sum())} change pixels in {objects} changed object(s)"
    )


def build_module(method: str, args: argparse.Namespace) -> Any:
    """The trainer of ``method`` with the shared optimisation settings."""
    from geochange.trainers import ChangeTrainer, SemiSupervisedChangeTrainer

    common: dict[str, Any] = {
        "backbone": "resnet18",
        "lr": args.lr,
        "warmup_steps": max(1, args.steps // 10),
        "scheduler": "cosine",
        "plot_every_n_epochs": 0,
        "model_kwargs": dict(MODEL_KWARGS),
    }
    if method == "supervised":
        return ChangeTrainer("siam_diff", **common)
    return SemiSupervisedChangeTrainer(
        "siam_diff",
        method="fixmatch" if method == "fixmatch" else "diffmatch",
        change_classes=(BUILDING,),
        confidence_threshold=args.confidence_threshold,
        generated_weight_start=args.generated_weight_start,
        generated_weight_end=args.generated_weight_end,
        feature_dropout=args.feature_dropout,
        **common,
    )


def train_and_score(
    method: str, seed: int, args: argparse.Namespace, train: Any, test: Any, maps: Any, work: Path
) -> tuple[float, dict[str, float]]:
    """Train ``method`` with ``seed`` and return (held-out IoU^c, timings/diagnostics)."""
    import lightning.pytorch as pl

    from geochange import ChangePredictor, evaluate_scene

    pl.seed_everything(seed, workers=True, verbose=False)
    dm = datamodule(args, train, maps, seed)
    if method == "supervised":
        dm.combine_unlabeled = False  # labeled batches only: the same labeled windows
    module = build_module(method, args)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_s = time.perf_counter() - start
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    checkpoint = work / f"{method}_{seed}.ckpt"
    trainer.save_checkpoint(checkpoint)

    start = time.perf_counter()
    predictor = ChangePredictor.from_checkpoint(
        checkpoint,
        device="cpu",
        tile_size=args.predict_tile,
        overlap=args.predict_tile // 4,
        batch_size=4,
        num_workers=1,
        progress=False,
    )
    result = predictor.predict(
        test.pre, test.post, work / f"pred_{method}_{seed}", write_probability=False
    )
    report = evaluate_scene(result, test.change, objects=False)
    predict_s = time.perf_counter() - start
    assert report.pixel is not None
    info = {
        "train_s": train_s,
        "predict_s": predict_s,
        "steps": float(trainer.global_step),
        "f1": report.pixel["f1"],
        "precision": report.pixel["precision"],
        "recall": report.pixel["recall"],
    }
    for key in ("train/confident_fraction", "train/generated_weight"):
        if key in logged:
            info[key.split("/")[1]] = logged[key]
    return report.pixel["iou_change"], info


def unsupervised_ceg(test: Any, work: Path, seed: int) -> dict[str, float]:
    """IoU^c of CEG alone on the held-out scene (degraded maps of that scene)."""
    from geochange.pseudo import evaluate_pseudo_labels, generate_pseudo_labels

    maps = write_segmenter_maps(test, work / "test_segmenter", seed)
    out = work / "test_ceg.tif"
    generate_pseudo_labels(maps[0], maps[1], out, change_classes=[BUILDING], mode="mixed")
    score = evaluate_pseudo_labels(out, test.change)
    return {
        "iou_change": score.iou_change,
        "iou_change_decided": score.iou_change_decided,
        "precision": score.precision,
        "recall": score.recall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=3072, help="training scene side (px)")
    parser.add_argument("--train-seed", type=int, default=4)
    parser.add_argument("--test-size", type=int, default=1536, help="held-out scene side (px)")
    parser.add_argument("--test-seed", type=int, default=7)
    parser.add_argument("--labeled-fraction", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per method")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="labeled and unlabeled batch size")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--confidence-threshold", type=float, default=0.95)
    parser.add_argument("--generated-weight-start", type=float, default=1.0)
    parser.add_argument("--generated-weight-end", type=float, default=0.0)
    parser.add_argument("--feature-dropout", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=1, help="training seeds per method")
    parser.add_argument("--seed", type=int, default=0, help="first training seed")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--predict-tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--data-dir", default=None, help="reuse generated scenes from here")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--work-dir", default=None, help="keep checkpoints and predictions here (default: temp)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    quiet_lightning()
    print(f"machine: {machine()}", flush=True)
    print(
        "timings on a loaded shared CPU; training budget per method: "
        f"{args.steps} steps x {args.batch} labeled (+ {args.batch} unlabeled) "
        f"{args.patch}^2 windows, lr {args.lr}, seeds {args.seed}..{args.seed + args.repeats - 1}",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_semi_") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = Path(args.data_dir) if args.data_dir else work
        train = scene(data / f"train_{args.train_size}_{args.train_seed}", args.train_size,
                      args.train_seed)  # fmt: skip
        test = scene(data / f"test_{args.test_size}_{args.test_seed}", args.test_size,
                     args.test_seed)  # fmt: skip
        maps = write_segmenter_maps(
            train, data / f"segmenter_{args.train_size}_{args.train_seed}", args.train_seed
        )
        print(f"train scene: seed {args.train_seed}, {args.train_size}^2, {train.stats}")
        print(f"held-out scene: seed {args.test_seed}, {args.test_size}^2, {test.stats}")
        print(f"segmenter simulation: degrade_class_map({DEGRADE}), seed per date")
        print(labeled_share(datamodule(args, train, maps, args.seed), train), flush=True)

        ceg = unsupervised_ceg(test, work, args.test_seed)
        print(
            f"unsupervised CEG (mixed) on the held-out scene: IoU^c {ceg['iou_change']:.4f} "
            f"(precision {ceg['precision']:.3f}, recall {ceg['recall']:.3f}; IoU^c over decided "
            f"pixels {ceg['iou_change_decided']:.4f})",
            flush=True,
        )
        scores: dict[str, list[float]] = {m: [] for m in args.methods}
        details: dict[str, list[dict[str, float]]] = {m: [] for m in args.methods}
        for repeat in range(args.repeats):
            seed = args.seed + repeat
            for method in args.methods:
                iou, info = train_and_score(method, seed, args, train, test, maps, work)
                scores[method].append(iou)
                details[method].append(info)
                extra = "".join(
                    f", {k} {info[k]:.3f}"
                    for k in ("confident_fraction", "generated_weight")
                    if k in info
                )
                print(
                    f"  seed {seed} {method:<10} IoU^c {iou:.4f}  F1 {info['f1']:.4f} "
                    f"(P {info['precision']:.3f}, R {info['recall']:.3f})  "
                    f"{int(info['steps'])} steps in {info['train_s']:.0f} s, "
                    f"predict+evaluate {info['predict_s']:.0f} s{extra}",
                    flush=True,
                )

    medians = {m: statistics.median(v) for m, v in scores.items()}
    print(f"\n== held-out IoU^c, median of {args.repeats} seed(s), "
          f"{args.labeled_fraction:.0%} labels ==")  # fmt: skip
    for method, value in medians.items():
        print(
            f"  {method:<22} {value:.4f}   (runs: {', '.join(f'{v:.4f}' for v in scores[method])})"
        )
    print(f"  {'unsupervised CEG':<22} {ceg['iou_change']:.4f}")
    verdict = {}
    if {"supervised", "diffmatch"} <= medians.keys():
        gain = 100 * (medians["diffmatch"] - medians["supervised"])
        verdict["diffmatch_vs_supervised_points"] = gain
        print(f"  DiffMatch - supervised: {gain:+.1f} IoU^c points "
              f"(target >= +3.0: {'met' if gain >= 3.0 else 'NOT met'})")  # fmt: skip
    if {"fixmatch", "diffmatch"} <= medians.keys():
        gain = 100 * (medians["diffmatch"] - medians["fixmatch"])
        verdict["diffmatch_vs_fixmatch_points"] = gain
        print(f"  DiffMatch - FixMatch:   {gain:+.1f} IoU^c points "
              f"(target >= 0: {'met' if gain >= 0 else 'NOT met'})")  # fmt: skip
    total = time.perf_counter() - started
    print(f"total {total / 60:.1f} min, peak RSS {peak_rss_mb():.0f} MiB; machine at the end: "
          f"{machine()}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "scores": scores, "medians": medians, "ceg": ceg,
                 "details": details, "verdict": verdict, "minutes": total / 60},
                indent=2,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is it worth using unlabeled data? Supervised-only vs FixMatch vs DiffMatch vs CEG labels.

On synthetic scenes (:func:`geochange.synthetic.make_scene`), a training scene and a held-out
scene with different seeds, both holding new and demolished buildings:

1. A per-date "segmenter" is simulated by degrading the true class maps with
   :func:`geochange.pseudo.degrade_class_map` (eroded building outlines, blob-shaped class
   confusions, missed small buildings; another seed per date). ``--segmenter systematic``
   simulates a worse one whose errors differ between the dates (buildings of any size missed,
   grown or eroded outlines, bright soil taken for buildings, a displaced map), so that CEG
   labels hold false and missed changes. The degraded maps are given to
   :class:`geochange.ChangeDataModule` as ``semantic_pre`` / ``semantic_post``: they are the
   pseudo semantic maps DiffMatch learns from.
2. For each labeled fraction (default 5 % and 10 %) and seed, runs with the *same* budget
   (optimizer steps, batch size, patch size, learning-rate schedule):

   * ``supervised``: :class:`geochange.ChangeTrainer` on the labeled share only;
   * ``fixmatch``: :class:`geochange.SemiSupervisedChangeTrainer` ``method="fixmatch"``;
   * ``diffmatch``: ``method="diffmatch"`` with the trainer's defaults;
   * ``diffmatch_legacy`` (optional): DiffMatch with the defaults before issue 22 (one 0.95
     threshold, unbalanced ``L_unsup``, lambda 1 -> 0, the change loss on CEG labels).

   Each checkpoint is loaded by :class:`geochange.ChangePredictor`, which predicts the whole
   held-out scene; :func:`geochange.evaluate_scene` scores it (IoU^c of the change class).
   The unlabeled batches carry the truth as ``diagnostic_change`` (never a loss target), so
   the run logs the precision / recall of its pseudo labels; their first- and last-quarter
   means are printed with each run.
3. ``CEG-only``: change pseudo labels from the degraded maps of the held-out scene
   (:func:`geochange.pseudo.generate_pseudo_labels`, no training), scored against the truth.

Printed: per fraction and method, mean, standard deviation and min-max over seeds; the
done-when of issue 22 (DiffMatch >= CEG-only and >= supervised + 3 points at 5 %).

Usage::

    .venv/bin/python benchmarks/bench_semi.py              # the table: 2 fractions x 3 seeds
    .venv/bin/python benchmarks/bench_semi.py --long       # one longer run (5 %, 1 seed, 4x steps)
    .venv/bin/python benchmarks/bench_semi.py --steps 2 --seeds 1 --fractions 0.05  # smoke
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
#: A segmenter with systematic errors, different per date (pre, post): buildings of any size
#: missed, outlines grown on one date and eroded on the other, bright-soil blobs taken for
#: buildings after the season changed, the post map displaced by 2 px. Its CEG labels hold false
#: and missed changes that the images do not show (see docs/semi_supervised.md).
SYSTEMATIC: tuple[dict[str, Any], dict[str, Any]] = (
    {**DEGRADE, "drop_probability": 0.15, "dilation_px": 2, "erosion_px": 0},
    {**DEGRADE, "drop_probability": 0.15, "false_target_fraction": 0.08, "shift_px": (2, 2)},
)
#: Segmenter simulations by name: the keyword arguments of degrade_class_map per date.
SEGMENTERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mild": (DEGRADE, DEGRADE),
    "systematic": SYSTEMATIC,
}
#: Small siamese network: three encoder stages keep a step affordable on a shared 2-core CPU.
MODEL_KWARGS: dict[str, Any] = {
    "encoder_depth": 3,
    "decoder_channels": (64, 32, 16),
    "aux_decoder_channels": (32, 16, 16),
}
METHODS = ("supervised", "fixmatch", "diffmatch", "diffmatch_legacy")
#: DiffMatch as configured before issue 22 (for the before / after comparison).
LEGACY: dict[str, Any] = {
    "change_confidence_threshold": None,
    "balance_pseudo_labels": False,
    "generated_weight_start": 1.0,
    "generated_loss": "change_loss",
}
#: Diagnostics printed per run (first- and last-quarter means of the logged values).
WATCH = (
    "confident_fraction_change",
    "confident_fraction_no_change",
    "pseudo_precision",
    "pseudo_recall",
    "pseudo_recall_any_confidence",
    "generated_head_recall",
    "change_head_probability_on_generated",
    "loss_unsup",
    "loss_generated_weak",
)


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


def scene(root: Path, size: int, seed: int, realism: str | None = None) -> Any:
    """A synthetic scene, generated once and reused from ``root``.

    ``realism`` is passed to ``make_scene`` when given (the perturbations of issue 23; a
    generator without that argument stops with its TypeError).
    """
    from geochange.synthetic import Scene, make_scene

    if (root / "scene.json").exists():
        return Scene.load(root)
    extra: dict[str, Any] = {} if realism is None else {"realism": realism}
    return make_scene(root, size, size, seed=seed, **extra)


def write_segmenter_maps(
    scene_: Any, out_dir: Path, seed: int, segmenter: str = "mild"
) -> tuple[Path, Path]:
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
        degraded = np.asarray(degrade_class_map(classes, index, seed, segmenter), dtype=np.uint8)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(degraded, 1)
            dst.update_tags(**tags)
    return paths[0], paths[1]


def degrade_class_map(
    classes: np.ndarray, date: int, seed: int, segmenter: str = "mild"
) -> np.ndarray:
    """The simulated segmenter's output for one date (0 pre, 1 post)."""
    from geochange.pseudo import degrade_class_map as degrade

    return degrade(classes, seed=seed * 2 + date, **SEGMENTERS[segmenter][date])


def datamodule(
    args: argparse.Namespace, train: Any, maps: tuple[Path, Path], seed: int, fraction: float
) -> Any:
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
        labeled_fraction=fraction,
        combine_unlabeled=True,
        semantic_as_pseudo=True,  # the segmenter maps stay on unlabeled batches
        unlabeled_truth=True,  # diagnostics only: pseudo-label precision / recall
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
    options: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "confidence_threshold",
            "change_confidence_threshold",
            "generated_weight_start",
            "generated_weight_end",
            "feature_dropout",
            "head_lr_multiplier",
            "generated_loss",
        )
        if getattr(args, name) is not None
    }
    if args.no_balance or args.balance:
        options["balance_pseudo_labels"] = bool(args.balance)
    if args.ceg_mode is not None:
        options["ceg_kwargs"] = {"mode": args.ceg_mode}
    if method == "diffmatch_legacy":
        options.update(LEGACY)
    return SemiSupervisedChangeTrainer(
        "siam_diff",
        method="fixmatch" if method == "fixmatch" else "diffmatch",
        change_classes=(BUILDING,),
        **options,
        **common,
    )


class Trace:
    """Lightning callback keeping the logged ``train/`` scalars of every step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def __call__(self, trainer: Any) -> None:
        self.rows.append(
            {
                k.split("/", 1)[1]: float(v)
                for k, v in trainer.callback_metrics.items()
                if k.startswith("train/") and v.numel() == 1
            }
        )

    def quarters(self, name: str) -> tuple[float, float] | None:
        """Means of ``name`` over the first and the last quarter of the steps."""
        values = [row[name] for row in self.rows if name in row]
        if not values:
            return None
        quarter = max(1, len(values) // 4)
        return statistics.fmean(values[:quarter]), statistics.fmean(values[-quarter:])


def trace_callback(trace: Trace) -> Any:
    import lightning.pytorch as pl

    class _Callback(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            trace(trainer)

    return _Callback()


def train_and_score(
    method: str,
    seed: int,
    fraction: float,
    args: argparse.Namespace,
    data: tuple[Any, Any, Any],
    work: Path,
) -> tuple[float, dict[str, Any]]:
    """Train ``method`` with ``seed`` and return (held-out IoU^c, timings/diagnostics)."""
    import lightning.pytorch as pl

    from geochange import ChangePredictor, evaluate_scene

    train, test, maps = data
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = datamodule(args, train, maps, seed, fraction)
    if method == "supervised":
        dm.combine_unlabeled = False  # labeled batches only: the same labeled windows
    module = build_module(method, args)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        max_epochs=-1,
        precision=args.precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[trace_callback(trace := Trace())],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_s = time.perf_counter() - start
    checkpoint = work / f"{method}_{seed}_{fraction}.ckpt"
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
        test.pre, test.post, work / f"pred_{method}_{seed}_{fraction}", write_probability=False
    )
    report = evaluate_scene(result, test.change, objects=False)
    predict_s = time.perf_counter() - start
    assert report.pixel is not None
    info: dict[str, Any] = {
        "train_s": train_s,
        "predict_s": predict_s,
        "steps": float(trainer.global_step),
        "f1": report.pixel["f1"],
        "precision": report.pixel["precision"],
        "recall": report.pixel["recall"],
    }
    for name in WATCH:
        quarters = trace.quarters(name)
        if quarters is not None:
            info[name] = quarters
    return report.pixel["iou_change"], info


def unsupervised_ceg(test: Any, work: Path, seed: int, segmenter: str) -> dict[str, float]:
    """IoU^c of CEG alone on the held-out scene (degraded maps of that scene)."""
    from geochange.pseudo import evaluate_pseudo_labels, generate_pseudo_labels

    maps = write_segmenter_maps(test, work / f"test_segmenter_{segmenter}", seed, segmenter)
    out = work / f"test_ceg_{segmenter}.tif"
    generate_pseudo_labels(maps[0], maps[1], out, change_classes=[BUILDING], mode="mixed")
    score = evaluate_pseudo_labels(out, test.change)
    return {
        "iou_change": score.iou_change,
        "iou_change_decided": score.iou_change_decided,
        "precision": score.precision,
        "recall": score.recall,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=2048, help="training scene side (px)")
    parser.add_argument("--train-seed", type=int, default=4)
    parser.add_argument("--test-size", type=int, default=1024, help="held-out scene side (px)")
    parser.add_argument("--test-seed", type=int, default=7)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.10])
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per run")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="labeled and unlabeled batch size")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per method")
    parser.add_argument("--seed", type=int, default=0, help="first training seed")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=["supervised", "fixmatch", "diffmatch"]
    )
    parser.add_argument("--long", action="store_true", help="one run: 5 %%, 1 seed, 4x steps")
    parser.add_argument(
        "--realism", default=None, help="passed to make_scene(realism=...) (issue 23 scenes)"
    )
    # Semi-supervised options (None: the trainer's default).
    parser.add_argument(
        "--segmenter",
        choices=sorted(SEGMENTERS),
        default="mild",
        help="simulated segmenter: mild errors (CEG near-perfect) or systematic per-date errors",
    )
    parser.add_argument("--confidence-threshold", type=float, default=None)
    parser.add_argument("--change-confidence-threshold", type=float, default=None)
    balance = parser.add_mutually_exclusive_group()
    balance.add_argument("--balance", action="store_true", help="balance_pseudo_labels=True")
    balance.add_argument("--no-balance", action="store_true", help="balance_pseudo_labels=False")
    parser.add_argument("--generated-weight-start", type=float, default=None)
    parser.add_argument("--generated-weight-end", type=float, default=None)
    parser.add_argument("--generated-loss", choices=("bce", "change_loss"), default=None)
    parser.add_argument("--head-lr-multiplier", type=float, default=None)
    parser.add_argument("--feature-dropout", type=float, default=None)
    parser.add_argument("--ceg-mode", choices=("mixed", "instance"), default=None)
    parser.add_argument("--predict-tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default="32-true",
        help="training precision (bf16-mixed: bf16 autocast, fast on CPUs with AMX)",
    )
    parser.add_argument("--data-dir", default=None, help="reuse generated scenes from here")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--work-dir", default=None, help="keep checkpoints and predictions here (default: temp)"
    )
    args = parser.parse_args()
    if args.long:
        args.steps, args.seeds, args.fractions = 4 * args.steps, 1, [0.05]
    return args


def spread(values: list[float]) -> str:
    """``mean +- std (min-max)`` in IoU^c points."""
    points = [100 * v for v in values]
    std = statistics.stdev(points) if len(points) > 1 else 0.0
    return f"{statistics.fmean(points):5.1f} +- {std:3.1f} ({min(points):.1f}-{max(points):.1f})"


def print_run(method: str, seed: int, fraction: float, iou: float, info: dict[str, Any]) -> None:
    watched = "".join(
        f"\n      {name}: {info[name][0]:.3f} -> {info[name][1]:.3f}"
        for name in WATCH
        if name in info
    )
    print(
        f"  {fraction:.0%} seed {seed} {method:<16} IoU^c {iou:.4f}  F1 {info['f1']:.4f} "
        f"(P {info['precision']:.3f}, R {info['recall']:.3f})  {int(info['steps'])} steps in "
        f"{info['train_s']:.0f} s, predict+evaluate {info['predict_s']:.0f} s{watched}",
        flush=True,
    )


def report(
    scores: dict[tuple[float, str], list[float]], ceg: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    """Print the table and the issue-22 verdict; return the verdict."""
    print(f"\n== held-out IoU^c (points): mean +- std (min-max) over {args.seeds} seed(s) ==")
    for fraction in args.fractions:
        for method in args.methods:
            print(f"  {fraction:4.0%} {method:<18} {spread(scores[(fraction, method)])}")
    print(f"  all  {'CEG-only (no training)':<18} {100 * ceg['iou_change']:5.1f}")
    verdict: dict[str, Any] = {}
    if {"supervised", "diffmatch"} <= set(args.methods) and 0.05 in args.fractions:
        dm = statistics.fmean(scores[(0.05, "diffmatch")])
        sup = statistics.fmean(scores[(0.05, "supervised")])
        verdict = {
            "diffmatch_minus_supervised_points": 100 * (dm - sup),
            "diffmatch_minus_ceg_points": 100 * (dm - ceg["iou_change"]),
        }
        print(
            f"  5 %: DiffMatch - supervised {100 * (dm - sup):+.1f} points (target >= +3), "
            f"DiffMatch - CEG-only {100 * (dm - ceg['iou_change']):+.1f} points (target >= 0)"
        )
    return verdict


def main() -> int:
    args = parse_args()

    import torch

    torch.set_num_threads(args.threads)
    quiet_lightning()
    print(f"machine: {machine()}", flush=True)
    print(
        "training budget per run: "
        f"{args.steps} steps x {args.batch} labeled (+ {args.batch} unlabeled) "
        f"{args.patch}^2 windows, lr {args.lr}, seeds {args.seed}..{args.seed + args.seeds - 1}",
        flush=True,
    )
    started = time.perf_counter()
    scores: dict[tuple[float, str], list[float]] = {}
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_semi_") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = Path(args.data_dir) if args.data_dir else work
        tag = "" if args.realism is None else f"_{args.realism}"
        train = scene(data / f"train_{args.train_size}_{args.train_seed}{tag}", args.train_size,
                      args.train_seed, args.realism)  # fmt: skip
        test = scene(data / f"test_{args.test_size}_{args.test_seed}{tag}", args.test_size,
                     args.test_seed, args.realism)  # fmt: skip
        maps = write_segmenter_maps(
            train,
            data / f"segmenter_{args.segmenter}_{args.train_size}_{args.train_seed}{tag}",
            args.train_seed,
            args.segmenter,
        )
        print(f"train scene: seed {args.train_seed}, {args.train_size}^2, {train.stats}")
        print(f"held-out scene: seed {args.test_seed}, {args.test_size}^2, {test.stats}")
        pre_kw, post_kw = SEGMENTERS[args.segmenter]
        print(f"segmenter simulation {args.segmenter!r}: degrade_class_map(pre: {pre_kw}; "
              f"post: {post_kw}), seed per date")  # fmt: skip
        for fraction in args.fractions:
            dm = datamodule(args, train, maps, args.seed, fraction)
            print(f"{fraction:.0%}: {labeled_share(dm, train)}", flush=True)

        ceg = unsupervised_ceg(test, work, args.test_seed, args.segmenter)
        print(
            f"CEG-only (mixed) on the held-out scene: IoU^c {ceg['iou_change']:.4f} "
            f"(precision {ceg['precision']:.3f}, recall {ceg['recall']:.3f}; IoU^c over decided "
            f"pixels {ceg['iou_change_decided']:.4f})",
            flush=True,
        )
        for fraction in args.fractions:
            for seed in range(args.seed, args.seed + args.seeds):
                for method in args.methods:
                    iou, info = train_and_score(
                        method, seed, fraction, args, (train, test, maps), work
                    )
                    scores.setdefault((fraction, method), []).append(iou)
                    details[f"{fraction}/{method}/{seed}"] = info
                    print_run(method, seed, fraction, iou, info)

    verdict = report(scores, ceg, args)
    total = time.perf_counter() - started
    print(f"total {total / 60:.1f} min, peak RSS {peak_rss_mb():.0f} MiB; machine at the end: "
          f"{machine()}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "scores": {f"{f}/{m}": v for (f, m), v in scores.items()},
                 "ceg": ceg, "details": details, "verdict": verdict, "minutes": total / 60},
                indent=2,
            )
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

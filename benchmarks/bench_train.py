"""Training benchmark: accuracy on an unseen synthetic scene, and training throughput.

1. Accuracy: train ``fusion_unet``/resnet18 (binary) and ``semantic_change``/resnet18
   (semantic) with :class:`geochange.ChangeTrainer` on a generated synthetic scene (seed 0) for a
   fixed wall-clock budget on CPU, then evaluate on a different synthetic scene (seed 1) with
   :mod:`geochange.metrics`. Prints IoU^c / F1 (binary, target F1 >= 0.85) and SeK / mIoU / Fscd.
2. Throughput: training samples/s of ChangeTrainer next to TorchGeo's ``ChangeDetectionTask``
   (``unet`` and ``fcsiamdiff``, same resnet18 encoder, same batches), measured in the same run
   (median of timed steps after warm-up).

3. Realism (issue 23): binary accuracy per configuration (scene kind of the training scene, scene
   kind of the test scene, augmentation), over several training seeds, with the medians of F1
   and IoU^c. A scene kind is a realism of :func:`geochange.synthetic.make_scene`: ``none``,
   the preset ``levir``, or one perturbation alone (``misregistration``, ``radiometry``,
   ``phenology``, ``sun``, ``lean``, ``distractors``). ``--augment`` names the augmentations
   compared: ``default`` (shared geometry, per-date photometry), ``shift`` (``default`` plus
   ``per_date_shift=--shift-px``), ``radiometric`` (``default`` plus per-date, per-band gain,
   offset, gamma and haze covering the preset's radiometry:
   :meth:`~geochange.transforms.ChangeAugmentation.radiometric`), ``robust`` (``radiometric``
   plus the shift and a per-date rotation of up to 1 degree and scale of up to 2 %) or ``none``.
   The training seed sets the model's initialisation and the patch sampling; the scenes are
   fixed (train seed 0, test seed 1).

Examples::

    python benchmarks/bench_train.py --throughput-only
    python benchmarks/bench_train.py --budget-min 6 --task both
    # trained and tested on each kind, 2 seeds (the issue's (a), (b), (c)):
    python benchmarks/bench_train.py --realism none misregistration radiometry phenology \
        sun lean distractors levir --seeds 0 1 --budget-min 6 --skip-throughput
    # clean-trained, preset-tested (the generalization gap), with and without per-date shifts:
    python benchmarks/bench_train.py --train-realism none levir --test-realism levir \
        --augment default shift --seeds 0 1 --budget-min 15 --skip-throughput
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from rss import peak_rss_mb

warnings.filterwarnings("ignore")


def time_steps(step: Any, steps: int, warmup: int) -> float:
    """Median seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(batch_size: int, patch: int, steps: int, warmup: int) -> None:
    from torchgeo.tasks import ChangeDetection

    from geochange.trainers import ChangeTrainer

    torch.manual_seed(0)
    image = torch.randn(batch_size, 2, 3, patch, patch)
    mask = (torch.rand(batch_size, patch, patch) > 0.9).long()
    candidates: dict[str, Any] = {
        "geochange ChangeTrainer fusion_unet": ChangeTrainer(model="fusion_unet"),
        "geochange ChangeTrainer siam_diff": ChangeTrainer(model="siam_diff"),
        "torchgeo ChangeDetectionTask unet": ChangeDetection(
            model="unet", backbone="resnet18", in_channels=3, loss="bce"
        ),
        "torchgeo ChangeDetectionTask fcsiamdiff": ChangeDetection(
            model="fcsiamdiff", backbone="resnet18", in_channels=3, loss="bce"
        ),
    }
    results = {}
    for name, module in candidates.items():
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
        if name.startswith("torchgeo"):
            batch = {"image": image, "mask": mask[:, None]}  # TorchGeo binary: [B, 1, H, W]
        else:
            batch = {"image": image, "mask": mask}

        def step(module: Any = module, optimizer: Any = optimizer, batch: Any = batch) -> None:
            optimizer.zero_grad(set_to_none=True)
            loss = module.training_step(batch, 0)
            loss.backward()
            optimizer.step()

        seconds = time_steps(step, steps, warmup)
        results[name] = batch_size / seconds
        print(f"  {name:42s} {results[name]:7.2f} samples/s  ({seconds:.3f} s/step)", flush=True)
    ours = results["geochange ChangeTrainer fusion_unet"]
    base = results["torchgeo ChangeDetectionTask unet"]
    print(f"  ratio fusion_unet / torchgeo unet: {ours / base:.2f}x")
    ratio = (
        results["geochange ChangeTrainer siam_diff"]
        / results["torchgeo ChangeDetectionTask fcsiamdiff"]
    )
    print(f"  ratio siam_diff / torchgeo fcsiamdiff: {ratio:.2f}x")


def scene(root: Path, size: int, seed: int, realism: str = "none") -> Any:
    """The scene in ``root`` (reused when it matches), else a new one."""
    from geochange.synthetic import Scene, make_scene, resolve_realism

    wanted = resolve_realism(realism).to_dict()
    if (root / "scene.json").exists():
        found = Scene.load(root)
        if (found.height, found.width, found.seed, found.realism) == (size, size, seed, wanted):
            return found
        import shutil

        shutil.rmtree(root)  # a benchmark cache: regenerate
    return make_scene(root, size, size, seed=seed, realism=realism)


def scene_dir(root: Path, kind: str, size: int, realism: str) -> Path:
    """Cache folder of a benchmark scene (the clean ones keep their historical names)."""
    return root / (f"{kind}_{size}" if realism == "none" else f"{kind}_{size}_{realism}")


def read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


def evaluate(
    module: Any, eval_scene: Any, normalization: dict[str, list[float]], tile: int, out: Path
) -> dict[str, float]:
    """Predict the unseen scene with :class:`geochange.ChangePredictor` and score it."""
    from geochange import ChangePredictor
    from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics

    semantic = module.task == "semantic"
    predictor = ChangePredictor(
        module.model,
        tile_size=tile,
        overlap=tile // 4,
        normalization=normalization,
        progress=False,
    )
    result = predictor.predict(eval_scene.pre, eval_scene.post, out)

    def tensor(path: Any) -> torch.Tensor:
        return torch.from_numpy(read(path)[0].astype(np.int64))[None]

    change = tensor(eval_scene.change)
    if semantic:
        metric: Any = SemanticChangeMetrics(module.num_classes)
        metric.update(
            tensor(result.semantic_pre),
            tensor(result.semantic_post),
            tensor(result.change),
            tensor(eval_scene.semantic_pre),
            tensor(eval_scene.semantic_post),
            change,
        )
    else:
        metric = BinaryChangeMetrics()
        metric.update(tensor(result.change), change)
    scores = metric.compute()
    return {k: float(v) for k, v in scores.items() if v.numel() == 1}


def seconds_per_step(task: str, args: argparse.Namespace) -> float:
    """Median seconds of one optimizer step at the benchmark's batch and patch size."""
    from geochange.trainers import ChangeTrainer

    semantic = task == "semantic"
    module = ChangeTrainer(**trainer_kwargs(task, args))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    shape = (args.batch, args.patch, args.patch)
    batch = {"image": torch.randn(args.batch, 2, 3, args.patch, args.patch)}
    batch["mask"] = (torch.rand(shape) > 0.9).long()
    if semantic:
        batch["mask_pre"] = torch.randint(0, 7, shape)
        batch["mask_post"] = torch.randint(0, 7, shape)

    # The precision the Trainer will run (bf16-mixed: bf16 autocast on the CPU).
    bf16 = getattr(args, "precision", "32-true") == "bf16-mixed"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    return time_steps(step, 3, warmup=1)


def trainer_kwargs(task: str, args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {
        "backbone": "resnet18",
        "lr": args.lr,
        "warmup_steps": 20,
        "scheduler": "cosine",
        "plot_every_n_epochs": 0,
    }
    if task == "semantic":
        return {"model": "semantic_change", "task": "semantic", "num_classes": 7, **common}
    return {"model": "fusion_unet", **common}


_STEPS: dict[str, int] = {}


class Trained(NamedTuple):
    """What :func:`train_and_score` returns."""

    trainer: Any  #: the Lightning trainer
    module: Any  #: the trained ChangeTrainer
    scores: dict[str, float]  #: scores on the evaluation scene
    #: the training normalization, to score the same model on further scenes
    normalization: dict[str, list[float]]


def budget_steps(task: str, args: argparse.Namespace) -> int:
    """Optimizer steps of the cosine schedule in the budget (calibrated once per task)."""
    if args.steps is not None:
        return int(args.steps)
    if task not in _STEPS:
        # Calibrated step time plus a data-loading margin.
        step_s = seconds_per_step(task, args)
        _STEPS[task] = max(20, int(args.budget_min * 60 / (step_s * 1.15)))
        print(f"  calibrated {step_s:.2f} s/step -> {_STEPS[task]} steps in the budget", flush=True)
    return _STEPS[task]


def augmentation(augment: str, args: argparse.Namespace) -> Any:
    """``ChangeDataModule(augment=...)`` of an ``--augment`` name (the scenes are 8-bit)."""
    from geochange.transforms import ChangeAugmentation

    if augment in ("default", "shift", "none"):
        return augment != "none"  # shift: the default one, with per_date_shift
    if augment == "radiometric":
        return ChangeAugmentation.radiometric(value_range=255.0)
    if augment == "robust":
        return ChangeAugmentation.robust(value_range=255.0, per_date_shift=args.shift_px)
    raise ValueError(f"unknown augmentation {augment!r}")


def train_and_score(
    task: str,
    args: argparse.Namespace,
    train_scene: Any,
    eval_scene: Any,
    *,
    seed: int = 0,
    augment: str = "default",
    out: Path,
) -> Trained:
    """Train for the budget on ``train_scene`` and score on ``eval_scene``."""
    import lightning.pytorch as pl

    from geochange.datamodules import ChangeDataModule
    from geochange.trainers import ChangeTrainer

    semantic = task == "semantic"
    pl.seed_everything(seed)
    datamodule = ChangeDataModule(
        pre=str(train_scene.pre),
        post=str(train_scene.post),
        change=str(train_scene.change),
        semantic_pre=str(train_scene.semantic_pre) if semantic else None,
        semantic_post=str(train_scene.semantic_post) if semantic else None,
        patch_size=args.patch,
        batch_size=args.batch,
        samples_per_epoch=args.samples_per_epoch,
        splits=(0.8, 0.1, 0.1),
        num_workers=args.workers,
        augment=augmentation(augment, args),
        per_date_shift=args.shift_px if augment == "shift" else 0.0,
        seed=seed,
    )
    steps = budget_steps(task, args)
    module = ChangeTrainer(**trainer_kwargs(task, args))
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=getattr(args, "precision", "32-true"),
        max_time={"minutes": args.budget_min},
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    samples = trainer.global_step * args.batch
    print(
        f"  trained {task} for {seconds / 60:.1f} min: {trainer.global_step} steps, "
        f"{samples} samples ({samples / seconds:.2f} samples/s incl. data loading)",
        flush=True,
    )
    scores = evaluate(module, eval_scene, datamodule.normalization, args.eval_tile, out)
    return Trained(trainer, module, scores, datamodule.normalization)


def accuracy(task: str, args: argparse.Namespace) -> None:
    root = Path(args.data_dir)
    train_scene = scene(root / f"train_{args.size}", args.size, seed=0)
    eval_scene = scene(root / f"eval_{args.eval_size}", args.eval_size, seed=1)
    semantic = task == "semantic"
    trainer, _, scores, _ = train_and_score(
        task, args, train_scene, eval_scene, out=root / f"predicted_{task}"
    )
    if semantic:
        print(
            f"  eval scene (seed 1, {args.eval_size}^2): SeK {scores['sek']:.4f}  "
            f"mIoU {scores['miou']:.4f}  Fscd {scores['fscd']:.4f}  "
            f"(IoU^c {scores['iou_change']:.4f}, F1 {scores['f1']:.4f})"
        )
    else:
        print(
            f"  eval scene (seed 1, {args.eval_size}^2): IoU^c {scores['iou_change']:.4f}  "
            f"F1 {scores['f1']:.4f}  (precision {scores['precision']:.4f}, recall "
            f"{scores['recall']:.4f}, kappa {scores['kappa']:.4f})  target F1 >= 0.85"
        )
    print(f"  peak RSS {peak_rss_mb():.0f} MB", flush=True)
    if args.save_checkpoint:
        path = Path(args.save_checkpoint.replace("{task}", task))
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)
        print(f"  saved the trained model to {path}", flush=True)


def configurations(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(train realism, test realism, augmentation) of every realism configuration asked for."""
    pairs = [(r, r) for r in args.realism or []]
    if args.train_realism or args.test_realism:
        pairs += [
            (a, b) for a in args.train_realism or ["none"] for b in args.test_realism or ["none"]
        ]
    seen: dict[tuple[str, str, str], None] = {}
    for train, test in pairs:
        for augment in args.augment:
            seen[(train, test, augment)] = None
    return list(seen)


def realism_benchmark(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Binary F1 / IoU^c per configuration and seed; prints per-seed lines and the medians.

    A model is trained once per (train kind, augmentation, seed) and scored on every test kind
    asked for with it, so the clean -> preset gap costs no second training.
    """
    root = Path(args.data_dir)
    configs = configurations(args)
    scores_of: dict[tuple[str, str, str, int], dict[str, float]] = {}
    for train, augment in dict.fromkeys((t, a) for t, _, a in configs):
        tests = [b for t, b, a in configs if (t, a) == (train, augment)]
        print(
            f"Realism configuration: train {train} / test {', '.join(tests)} / augment "
            f"{augment} ({args.budget_min} min budget)",
            flush=True,
        )
        train_scene = scene(scene_dir(root, "train", args.size, train), args.size, 0, train)
        for seed in args.seeds:
            for i, test in enumerate(tests):
                eval_scene = scene(
                    scene_dir(root, "eval", args.eval_size, test), args.eval_size, 1, test
                )
                out = root / f"predicted_{train}_{test}_{augment}_{seed}"
                if i == 0:
                    _, module, scores, normalization = train_and_score(
                        "binary", args, train_scene, eval_scene, seed=seed, augment=augment,
                        out=out,
                    )  # fmt: skip
                else:
                    scores = evaluate(module, eval_scene, normalization, args.eval_tile, out)
                print(
                    f"  seed {seed}, test {test}: F1 {scores['f1']:.4f}  "
                    f"IoU^c {scores['iou_change']:.4f}  (precision {scores['precision']:.4f}, "
                    f"recall {scores['recall']:.4f})",
                    flush=True,
                )
                scores_of[(train, test, augment, seed)] = scores
    rows = []
    for train, test, augment in configs:
        runs = [scores_of[(train, test, augment, seed)] for seed in args.seeds]
        rows.append(
            {
                "train": train,
                "test": test,
                "augment": augment,
                "seeds": list(args.seeds),
                "f1": [r["f1"] for r in runs],
                "iou_change": [r["iou_change"] for r in runs],
                "f1_median": statistics.median(r["f1"] for r in runs),
                "iou_change_median": statistics.median(r["iou_change"] for r in runs),
            }
        )
    print(
        f"\nMedians over seeds {list(args.seeds)} ({args.budget_min} min budget, "
        f"train {args.size}^2 seed 0, test {args.eval_size}^2 seed 1):"
    )
    print(f"  {'train':16s} {'test':16s} {'augment':8s} {'F1':>7s} {'IoU^c':>7s}")
    for row in rows:
        print(
            f"  {row['train']:16s} {row['test']:16s} {row['augment']:8s} "
            f"{row['f1_median']:7.4f} {row['iou_change_median']:7.4f}"
        )
    print(f"  peak RSS {peak_rss_mb():.0f} MB", flush=True)
    return rows


def cpu_description() -> str:
    """The lscpu model name and the avx2 / avx512_bf16 / amx flags."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = set(fields.get("Flags", "").split())
    present = [f for f in ("avx2", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; flags: {' '.join(present) or 'none of avx2/avx512_bf16/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["binary", "semantic", "both"], default="both")
    parser.add_argument("--budget-min", type=float, default=6.0, help="training minutes per task")
    parser.add_argument("--size", type=int, default=2048, help="training scene side (px)")
    parser.add_argument("--eval-size", type=int, default=1024, help="evaluation scene side (px)")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        default="32-true",
        help="training precision (bf16-mixed: bf16 autocast, fast on CPUs with AMX / "
        "AVX-512-bf16); the evaluation predictor uses its own precision='auto'",
    )
    parser.add_argument("--samples-per-epoch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-tile", type=int, default=256, help="predictor tile size")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: fit the budget)"
    )
    parser.add_argument("--data-dir", default="bench_data/train")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--throughput-steps", type=int, default=5)
    parser.add_argument("--throughput-patch", type=int, default=256)
    parser.add_argument("--skip-throughput", action="store_true", help="accuracy only")
    kinds = "scene kinds: none, levir, or one perturbation (misregistration, radiometry, ...)"
    parser.add_argument(
        "--realism", nargs="+", metavar="KIND", help=f"train and test on each kind ({kinds})"
    )
    parser.add_argument("--train-realism", nargs="+", metavar="KIND", help="training scene kinds")
    parser.add_argument("--test-realism", nargs="+", metavar="KIND", help="test scene kinds")
    parser.add_argument(
        "--augment",
        nargs="+",
        choices=["default", "shift", "radiometric", "robust", "none"],
        default=["default"],
        help="augmentations compared in the realism configurations",
    )
    parser.add_argument(
        "--shift-px", type=float, default=2.0, help="per_date_shift of --augment shift (px)"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="training seeds of each configuration"
    )
    parser.add_argument("--json", help="also write the realism configurations' results here")
    parser.add_argument(
        "--save-checkpoint",
        help="save each trained model to this path ('{task}' is replaced by the task); e.g. "
        "for bench_predict.py --agreement-checkpoint",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import os

    load = os.getloadavg()[0]
    print(f"CPU: {cpu_description()}")
    print(
        f"torch threads: {torch.get_num_threads()} (CPU), "
        f"load average {load:.1f} on {os.cpu_count()} cores; training precision {args.precision}"
    )
    if not args.skip_throughput:
        print(
            f"Training throughput (batch {args.batch}, {args.throughput_patch}^2, "
            f"median of {args.throughput_steps} steps):"
        )
        throughput(args.batch, args.throughput_patch, args.throughput_steps, warmup=1)
    if args.throughput_only:
        return
    if configurations(args):
        from geochange.synthetic import resolve_realism

        kinds = {*(args.realism or []), *(args.train_realism or []), *(args.test_realism or [])}
        for kind in kinds:
            resolve_realism(kind)  # a typo fails now, not after an hour of training
        rows = realism_benchmark(args)
        if args.json:
            import json

            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    tasks = ["binary", "semantic"] if args.task == "both" else [args.task]
    for task in tasks:
        print(f"Accuracy, {task} ({args.budget_min} min budget, patch {args.patch}):", flush=True)
        accuracy(task, args)


if __name__ == "__main__":
    main()

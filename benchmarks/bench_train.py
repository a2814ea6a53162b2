"""Training benchmark: accuracy on an unseen synthetic scene, and training throughput.

1. Accuracy: train ``fusion_unet``/resnet18 (binary) and ``semantic_change``/resnet18
   (semantic) with :class:`geochange.ChangeTrainer` on a generated synthetic scene (seed 0) for a
   fixed wall-clock budget on CPU, then evaluate on a different synthetic scene (seed 1) with
   :mod:`geochange.metrics`. Prints IoU^c / F1 (binary, target F1 >= 0.85) and SeK / mIoU / Fscd.
2. Throughput: training samples/s of ChangeTrainer next to TorchGeo's ``ChangeDetectionTask``
   (``unet`` and ``fcsiamdiff``, same resnet18 encoder, same batches), measured in the same run
   (median of timed steps after warm-up).

Examples::

    python benchmarks/bench_train.py --throughput-only
    python benchmarks/bench_train.py --budget-min 6 --task both
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def scene(root: Path, size: int, seed: int) -> Any:
    from geochange.synthetic import Scene, make_scene

    if (root / "scene.json").exists():
        return Scene.load(root)
    return make_scene(root, size, size, seed=seed)


def read(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read()


@torch.no_grad()
def evaluate(
    module: Any, eval_scene: Any, normalization: dict[str, list[float]], tile: int
) -> dict[str, float]:
    from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics

    semantic = module.task == "semantic"
    pre = torch.from_numpy(read(eval_scene.pre).astype(np.float32))
    post = torch.from_numpy(read(eval_scene.post).astype(np.float32))
    mean = torch.tensor(normalization["mean"]).view(-1, 1, 1)
    std = torch.tensor(normalization["std"]).view(-1, 1, 1)
    image = (torch.stack([pre, post]) - mean) / std
    change = torch.from_numpy(read(eval_scene.change)[0].astype(np.int64))
    if semantic:
        labels_pre = torch.from_numpy(read(eval_scene.semantic_pre)[0].astype(np.int64))
        labels_post = torch.from_numpy(read(eval_scene.semantic_post)[0].astype(np.int64))
        metric: Any = SemanticChangeMetrics(module.num_classes)
    else:
        metric = BinaryChangeMetrics()
    module.eval()
    height, width = change.shape
    for row in range(0, height - tile + 1, tile):
        for col in range(0, width - tile + 1, tile):
            window = (slice(row, row + tile), slice(col, col + tile))
            outputs = module(image[None, :, :, window[0], window[1]])
            pred_change = (outputs["change"][:, 0] > 0).long()
            if semantic:
                metric.update(
                    outputs["semantic_pre"].argmax(1),
                    outputs["semantic_post"].argmax(1),
                    pred_change,
                    labels_pre[window][None],
                    labels_post[window][None],
                    change[window][None],
                )
            else:
                metric.update(pred_change, change[window][None])
    scores = metric.compute()
    return {k: float(v) for k, v in scores.items() if v.numel() == 1}


def accuracy(task: str, args: argparse.Namespace) -> None:
    import lightning.pytorch as pl

    from geochange.datamodules import ChangeDataModule
    from geochange.trainers import ChangeTrainer

    root = Path(args.data_dir)
    train_scene = scene(root / f"train_{args.size}", args.size, seed=0)
    eval_scene = scene(root / f"eval_{args.eval_size}", args.eval_size, seed=1)
    semantic = task == "semantic"
    pl.seed_everything(0)
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
    )
    module = ChangeTrainer(
        model="semantic_change" if semantic else "fusion_unet",
        backbone="resnet18",
        task="semantic",
        num_classes=7 if semantic else None,
        lr=args.lr,
        warmup_steps=20,
        scheduler="none",
        plot_every_n_epochs=0,
    ) if semantic else ChangeTrainer(
        model="fusion_unet", backbone="resnet18", lr=args.lr, warmup_steps=20, scheduler="none",
        plot_every_n_epochs=0,
    )  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu",
        max_time={"minutes": args.budget_min},
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
    scores = evaluate(module, eval_scene, datamodule.normalization, args.eval_tile)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["binary", "semantic", "both"], default="both")
    parser.add_argument("--budget-min", type=float, default=6.0, help="training minutes per task")
    parser.add_argument("--size", type=int, default=2048, help="training scene side (px)")
    parser.add_argument("--eval-size", type=int, default=1024, help="evaluation scene side (px)")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples-per-epoch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--eval-tile", type=int, default=256)
    parser.add_argument("--data-dir", default="bench_data/train")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--throughput-steps", type=int, default=5)
    parser.add_argument("--throughput-patch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    import os

    load = os.getloadavg()[0]
    print(
        f"torch threads: {torch.get_num_threads()} (CPU), "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"Training throughput (batch {args.batch}, {args.throughput_patch}^2, "
        f"median of {args.throughput_steps} steps):"
    )
    throughput(args.batch, args.throughput_patch, args.throughput_steps, warmup=1)
    if args.throughput_only:
        return
    tasks = ["binary", "semantic"] if args.task == "both" else [args.task]
    for task in tasks:
        print(f"Accuracy, {task} ({args.budget_min} min budget, patch {args.patch}):", flush=True)
        accuracy(task, args)


if __name__ == "__main__":
    main()

"""The model comparison table of docs/models.md (``bench_models.py --table``).

For every registered model at its registry defaults (3 bands, random init; ``semantic_change``
judged on its ``change`` output) it measures, in one process with the same threads:

* parameters, and GFLOPs of one 512 x 512 pair (``torch.utils.flop_counter.FlopCounterMode``
  on the meta device: 2 FLOPs per multiply-accumulate of convolutions, matmuls and attention;
  eval mode);
* CPU tiles/s through :class:`geochange.predict.ChangePredictor` (fp32, BatchNorm folding on,
  the predictor's defaults otherwise) on the held-out scene pair: median of ``--runs`` whole
  predictions, each timed by the predictor itself (reading, blending and COG writing included);
* IoU^c and F1 of that prediction against the held-out scene's change raster (another seed),
  after training every model in ``ChangeTrainer`` for the same wall-clock budget
  (``--train-seconds``, default 60 s) on the same sequence of random crops of the training scene
  (same loss, optimizer, learning rate, batch and seed for all; ``--steps N`` gives every model
  N optimizer steps instead).

Why a wall-clock budget: the models differ ~6x in cost per step (``snunet`` 73 steps a
minute, ``tinycd`` 417, measured), the question a CPU user asks is what a model reaches for
the same CPU time, and it bounds the run (models x budget) whatever the models cost. The price
is that the steps each model gets depend on the machine's load during its turn: they are
printed next to the scores. With about a minute from random init, the IoU
column ranks how fast each architecture learns this synthetic task per CPU second -- not its
accuracy after convergence on real imagery.

The published LEVIR-CD F1 of each original paper is printed for reference only; this script
does not (and cannot, on generated scenes) reproduce it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import rasterio
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from geochange.models import build_model, list_models
from geochange.predict import ChangePredictor
from geochange.synthetic import make_scene
from geochange.trainers import ChangeTrainer

#: LEVIR-CD test F1 (%) reported by each model's original paper; None where the paper reports
#: none (its own experiments use other data sets). Quoted, not reproduced.
PUBLISHED_F1 = {
    "bit": (89.31, "Chen, Qi & Shi, IEEE TGRS 2022, BIT_R18"),
    "changeformer": (90.40, "Bandara & Patel, IGARSS 2022"),
    "tinycd": (91.05, "Codegoni, Lombardi & Ferrari, arXiv:2207.13159"),
    "snunet": (None, "Fang et al., IEEE GRSL 2022: CDD only"),
    "siam_diff": (None, "Daudt et al., ICIP 2018: OSCD / Air Change only"),
    "siam_conc": (None, "Daudt et al., ICIP 2018: OSCD / Air Change only"),
    "fusion_unet": (None, "geochange's own design"),
    "semantic_change": (None, "semantic change model, no LEVIR-CD figure"),
}


class CropDataset(Dataset[dict[str, Tensor]]):
    """Random crops of one in-memory scene; crop ``i`` is the same for every model."""

    def __init__(
        self, image: Tensor, change: Tensor, crop: int, length: int, seed: int = 0
    ) -> None:
        self.image, self.change, self.crop, self.length, self.seed = (
            image,
            change,
            crop,
            length,
            seed,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        height, width = self.change.shape
        y = int(torch.randint(0, height - self.crop + 1, (1,), generator=gen))
        x = int(torch.randint(0, width - self.crop + 1, (1,), generator=gen))
        window = (slice(y, y + self.crop), slice(x, x + self.crop))
        return {
            "image": self.image[:, :, window[0], window[1]],
            "mask": self.change[window].long(),
        }


def cpu_description() -> str:
    """``lscpu``'s model name and the AVX-512 / AMX flags of this CPU."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return f"CPU: {model}; avx512/amx flags: {' '.join(wanted) or 'none'}"


def read_scene(path: Path) -> tuple[Tensor, Tensor]:
    """Image ``[2, C, H, W]`` (float32, raw values) and change ``[H, W]`` of a scene dir."""
    with rasterio.open(path / "pre.tif") as pre, rasterio.open(path / "post.tif") as post:
        image = np.stack([pre.read(), post.read()]).astype(np.float32)
    with rasterio.open(path / "change.tif") as ds:
        change = ds.read(1)
    return torch.from_numpy(image), torch.from_numpy(change)


def gflops(model: nn.Module, size: int) -> float:
    """Forward GFLOPs of ``model`` on one ``size`` x ``size`` 3-band pair (eval mode).

    Counted on the meta device: instant, and attention is counted as the matrix products it is
    (on the CPU, PyTorch's fused attention kernel is invisible to ``FlopCounterMode``).
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval().to("meta")(torch.zeros(1, 2, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


def train(
    name: str, data: CropDataset, args: argparse.Namespace, normalization: dict[str, list[float]]
) -> tuple[nn.Module, float, list[float]]:
    """Train ``name`` for ``args.steps`` steps; the model, the seconds and the step losses."""
    torch.manual_seed(args.seed)
    module = ChangeTrainer(
        model=name, task="binary", lr=args.lr, scheduler="none", normalization=normalization
    )
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *_: Any) -> None:
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        max_steps=args.steps or -1,
        max_time=None if args.steps else {"seconds": args.train_seconds},
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(args.work_dir),
        callbacks=[Record()],
    )
    loader = DataLoader(data, batch_size=args.batch, shuffle=False, num_workers=0)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return module.model, time.perf_counter() - start, losses


def scores(prediction: Path, reference: Path) -> tuple[float, float, float, float]:
    """IoU^c, F1, precision and recall (%) of a binary change raster (255 ignored)."""
    with rasterio.open(prediction) as ds:
        pred = ds.read(1)
    with rasterio.open(reference) as ds:
        truth = ds.read(1)
    valid = (truth != 255) & (pred != 255)
    p, t = pred[valid] == 1, truth[valid] == 1
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    iou = tp / max(tp + fp + fn, 1)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return 100 * iou, 100 * f1, 100 * precision, 100 * recall


def predict_timed(
    model: nn.Module,
    test_dir: Path,
    out_dir: Path,
    args: argparse.Namespace,
    normalization: dict[str, Sequence[float]],
) -> tuple[float, Path]:
    """Median tiles/s of ``args.runs`` whole-scene predictions; the last change raster."""
    predictor = ChangePredictor(
        model.eval(),
        tile_size=args.tile_size,
        overlap=args.tile_size // 4,
        batch_size=args.predict_batch,
        device="cpu",
        precision="fp32",
        num_workers=0,
        progress=False,
        normalization=normalization,
    )
    rates, change = [], None
    for run in range(args.runs):
        result = predictor.predict(test_dir / "pre.tif", test_dir / "post.tif", out_dir / str(run))
        rates.append(result.tiles / result.seconds)
        change = result.change
    assert change is not None
    return statistics.median(rates), change


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_models.py --table", description="the model comparison table"
    )
    parser.add_argument("--models", nargs="+", default=list_models(), choices=list_models())
    # One thread by default: on a shared, loaded 2-core machine two OpenMP threads per process
    # oversubscribe the cores and ran ~10x fewer training steps per second (measured).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: keep)")
    parser.add_argument("--train-size", type=int, default=1024, help="training scene side (px)")
    parser.add_argument("--test-size", type=int, default=512, help="held-out scene side (px)")
    parser.add_argument(
        "--train-seconds", type=float, default=60, help="training wall-clock budget per model"
    )
    parser.add_argument(
        "--steps", type=int, default=0, help="fixed optimizer steps per model instead (0: off)"
    )
    parser.add_argument("--batch", type=int, default=4, help="training crops per step")
    parser.add_argument("--crop", type=int, default=64, help="training crop side (px)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    parser.add_argument("--tile-size", type=int, default=256, help="predictor tile side (px)")
    parser.add_argument("--predict-batch", type=int, default=2, help="predictor tiles per batch")
    parser.add_argument("--runs", type=int, default=3, help="timed predictions (median)")
    parser.add_argument("--flops-size", type=int, default=512)
    # Seed 7's 512² scene is 6 % change; some seeds hold none at 512² (seed 0).
    parser.add_argument("--train-seed", type=int, default=1, help="training scene seed")
    parser.add_argument("--test-seed", type=int, default=7, help="held-out scene seed")
    parser.add_argument("--seed", type=int, default=0, help="crops and initialisation seed")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary dir")
    return parser.parse_args(argv)


def normalization_of(image: Tensor) -> dict[str, list[float]]:
    """Per-band mean / std over both dates of a ``[2, C, H, W]`` image."""
    flat = image.transpose(0, 1).reshape(image.shape[1], -1)
    return {"mean": flat.mean(1).tolist(), "std": flat.std(1).clamp_min(1.0).tolist()}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every model of ``args.models``; one record per model."""
    work: Path = args.work_dir
    train_scene = make_scene(work / "train", args.train_size, args.train_size, seed=args.train_seed)
    test_scene = make_scene(work / "test", args.test_size, args.test_size, seed=args.test_seed)
    image, change = read_scene(train_scene.root)
    normalization = normalization_of(image)
    mean = torch.tensor(normalization["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(normalization["std"]).view(1, -1, 1, 1)
    # Enough crops for any budget: a time-limited fit stops long before the end.
    length = (args.steps or 100_000) * args.batch
    data = CropDataset((image - mean) / std, change, args.crop, length, args.seed)
    records = []
    for name in args.models:
        torch.manual_seed(args.seed)
        fresh = build_model(name)
        params = sum(p.numel() for p in fresh.parameters()) / 1e6
        flops = gflops(fresh, args.flops_size)
        del fresh
        model, train_s, losses = train(name, data, args, normalization)
        rate, prediction = predict_timed(
            model, test_scene.root, work / "predict" / name, args, dict(normalization)
        )
        iou, f1, precision, recall = scores(prediction, test_scene.root / "change.tif")
        tail = max(1, len(losses) // 10)
        record = {
            "model": name,
            "params_m": params,
            "gflops": flops,
            "tiles_s": rate,
            "iou": iou,
            "f1": f1,
            "precision": precision,
            "recall": recall,
            "train_s": train_s,
            "steps": len(losses),
            "loss_first": statistics.mean(losses[:tail]),
            "loss_last": statistics.mean(losses[-tail:]),
        }
        records.append(record)
        print(
            f"  measured {name:<16} {params:6.2f} M  {flops:7.1f} GFLOPs  {rate:6.2f} tiles/s  "
            f"IoU {iou:5.1f}  F1 {f1:5.1f} (P {precision:.1f} R {recall:.1f})  train "
            f"{len(losses)} steps in {train_s:.0f} s  loss "
            f"{record['loss_first']:.3f} -> {record['loss_last']:.3f}",
            flush=True,
        )
    return records


def print_table(records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The Markdown table of docs/models.md."""
    print(
        f"\n| model | params (M) | GFLOPs at {args.flops_size}² | CPU tiles/s ({args.tile_size}²)"
        f" | IoU^c (%) | F1 (%) | training steps in {budget(args)} | loss first -> last 10 % "
        "| published LEVIR-CD F1 (%) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in records:
        figure, source = PUBLISHED_F1.get(r["model"], (None, ""))
        published = f"{figure:.2f} ({source})" if figure is not None else f"n/a ({source})"
        print(
            f"| `{r['model']}` | {r['params_m']:.2f} | {r['gflops']:.1f} | {r['tiles_s']:.2f} | "
            f"{r['iou']:.1f} | {r['f1']:.1f} | {r['steps']} ({r['train_s']:.0f} s) | "
            f"{r['loss_first']:.3f} -> {r['loss_last']:.3f} | {published} |"
        )


def budget(args: argparse.Namespace) -> str:
    """The training budget in words."""
    return f"{args.steps} steps" if args.steps else f"{args.train_seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    """Run the table mode; ``argv`` without ``--table``."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    args = parse(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_description())
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}; train {budget(args)}, "
        f"lr {args.lr}, batches of {args.batch} crops of {args.crop}² from a {args.train_size}² "
        f"scene (seed "
        f"{args.train_seed}); predict a {args.test_size}² scene (seed {args.test_seed}) in "
        f"{args.tile_size}² tiles, batch {args.predict_batch}, median of {args.runs} runs",
        flush=True,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.work_dir is None:
            args.work_dir = Path(tmp)
        records = run(args)
    print_table(records, args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0

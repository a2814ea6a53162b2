"""Benchmark geochange change models against TorchGeo's ChangeDetection models.

Measures, for each model, forward throughput (tiles/s, inference mode) and the time of one
training step (forward + BCE + backward + Adam step), next to TorchGeo's own ``unet`` (dates
stacked as channels) and ``fcsiamdiff`` built by ``torchgeo.tasks.ChangeDetection`` with the
same encoder, measured in the same run. Figures are medians of ``--repeats`` timed runs after
``--warmup`` untimed ones. On a GPU it also measures bf16 autocast + channels_last.

Defaults follow the issue (forward 512x512 batch 4, training 256x256 batch 8); on a small CPU
use e.g. ``--forward-size 256 --forward-batch 2 --train-size 128 --train-batch 4``.

Usage::

    python benchmarks/bench_models.py [--device cpu|cuda] [--threads N] [--models ...]

``--table`` is a separate mode (see ``model_table.py``): the comparison table of every
registered model in docs/models.md (parameters, GFLOPs, predictor tiles/s, IoU^c / F1 after a
fixed training budget, published LEVIR-CD F1)::

    python benchmarks/bench_models.py --table [--steps N] [--runs N] [--models ...]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.models import build_model

warnings.filterwarnings("ignore", category=DeprecationWarning)

# (label, factory kind, name, backbone)
CASES = {
    "fusion_unet-resnet18": ("geochange", "fusion_unet", "resnet18"),
    "torchgeo_unet-resnet18": ("torchgeo", "unet", "resnet18"),
    "torchgeo_fcsiamdiff-resnet18": ("torchgeo", "fcsiamdiff", "resnet18"),
    "semantic_change-resnet18": ("geochange", "semantic_change", "resnet18"),
    "siam_diff-resnet18": ("geochange", "siam_diff", "resnet18"),
    "fusion_unet-resnet50": ("geochange", "fusion_unet", "resnet50"),
    "torchgeo_unet-resnet50": ("torchgeo", "unet", "resnet50"),
    "torchgeo_fcsiamdiff-resnet50": ("torchgeo", "fcsiamdiff", "resnet50"),
}
BASELINE = {"resnet18": "torchgeo_unet-resnet18", "resnet50": "torchgeo_unet-resnet50"}


class TorchGeoAdapter(nn.Module):
    """Give a TorchGeo change model the geochange dict contract (as its task would call it)."""

    def __init__(self, model: nn.Module, stack_dates: bool) -> None:
        super().__init__()
        self.model = model
        self.stack_dates = stack_dates

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.stack_dates:  # torchgeo unet: 'b t c h w -> b (t c) h w'
            x = x.flatten(1, 2)
        return {"change": self.model(x)}


def make_model(label: str, in_channels: int) -> nn.Module:
    kind, name, backbone = CASES[label]
    if kind == "geochange":
        num_classes = 7 if name == "semantic_change" else None
        return build_model(
            name, backbone=backbone, in_channels=in_channels, num_classes=num_classes
        )
    from torchgeo.tasks import ChangeDetection

    task = ChangeDetection(model=name, backbone=backbone, weights=None, in_channels=in_channels)
    return TorchGeoAdapter(task.model, stack_dates=name == "unet")


def timed(fn: Callable[[], None], warmup: int, repeats: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(
    model: nn.Module,
    x_forward: Tensor,
    x_train: Tensor,
    y_train: Tensor,
    fast: bool,
    args: argparse.Namespace,
    sync: Callable[[], None],
) -> tuple[float, float]:
    def autocast() -> AbstractContextManager[object]:
        if fast:
            return torch.autocast(device_type=x_forward.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def forward() -> None:
        with torch.inference_mode(), autocast():
            model(x_forward)["change"].float().sum().item()

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        with autocast():
            logits = model(x_train)["change"]
        loss = F.binary_cross_entropy_with_logits(logits.float(), y_train)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.eval()
    forward_s = timed(forward, args.warmup, args.repeats, sync)
    model.train()
    train_s = timed(train_step, args.warmup, args.repeats, sync)
    return forward_s, train_s


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--table" in argv:
        from model_table import main as table_main  # the benchmarks/ folder is on sys.path

        return table_main([arg for arg in argv if arg != "--table"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: keep)")
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--forward-size", type=int, default=512)
    parser.add_argument("--forward-batch", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    modes = [("fp32", False)] + ([("bf16+channels_last", True)] if device.type == "cuda" else [])
    print(
        f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"forward {args.forward_batch}x{args.forward_size}^2, train {args.train_batch}x"
        f"{args.train_size}^2, C={args.in_channels}, median of {args.repeats} runs"
    )
    torch.manual_seed(0)
    x_forward = torch.randn(
        args.forward_batch, 2, args.in_channels, args.forward_size, args.forward_size, device=device
    )
    x_train = torch.randn(
        args.train_batch, 2, args.in_channels, args.train_size, args.train_size, device=device
    )
    y_train = (
        torch.rand(args.train_batch, 1, args.train_size, args.train_size, device=device) > 0.9
    ).float()
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for mode, fast in modes:
        for label in args.models:
            model = make_model(label, args.in_channels).to(device)
            if fast:
                model = model.to(memory_format=torch.channels_last)
            forward_s, train_s = measure(model, x_forward, x_train, y_train, fast, args, sync)
            results[(mode, label)] = (forward_s, train_s)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            print(
                f"  measured {mode:<18} {label:<30} params {params:6.1f}M  "
                f"forward {forward_s * 1e3:9.1f} ms  train step {train_s * 1e3:9.1f} ms",
                flush=True,
            )
            del model
    print()
    header = (
        f"{'mode':<18} {'model':<30} {'tiles/s':>9} {'x unet':>7} {'x fcsiamdiff':>12} "
        f"{'train ms':>9} {'x unet':>7} {'x fcsiamdiff':>12}"
    )
    print(header)
    print("-" * len(header))
    for (mode, label), (forward_s, train_s) in results.items():
        backbone = CASES[label][2]
        unet = results.get((mode, BASELINE[backbone]))
        fcsiam = results.get((mode, f"torchgeo_fcsiamdiff-{backbone}"))

        def ratio(base: tuple[float, float] | None, index: int, value: float) -> str:
            # Throughput ratio for forward (higher = faster), time ratio for training.
            if base is None:
                return "-"
            return f"{base[index] / value:.2f}" if index == 0 else f"{value / base[index]:.2f}"

        print(
            f"{mode:<18} {label:<30} {args.forward_batch / forward_s:9.2f} "
            f"{ratio(unet, 0, forward_s):>7} {ratio(fcsiam, 0, forward_s):>12} "
            f"{train_s * 1e3:9.1f} {ratio(unet, 1, train_s):>7} {ratio(fcsiam, 1, train_s):>12}"
        )
    print(
        "\nforward ratio = model tiles/s / baseline tiles/s (>1 faster); train ratio = model "
        "step time / baseline step time (<1 faster)."
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

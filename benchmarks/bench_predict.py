"""Benchmark: ChangePredictor on synthetic LsSCD-like scene pairs (geochange.make_scene).

For each ``--sizes`` scene (generated once into bench_data/, git-ignored) and each measured
configuration, a fresh subprocess runs the predictor so its peak RSS (main process and
DataLoader workers, ``resource.getrusage``) is measured per run. In the same run it measures:

* tiles/s of the full pipeline (read -> infer -> blend -> row-band write -> COG);
* the CPU seconds (all threads, ``time.process_time``) of both, whose ratio is the CPU-time
  overhead: on a shared machine it moves far less with the other jobs than the wall clock;
* the model's pure compute time on the same tiles (already in memory, same batches): the
  pipeline overhead is ``pipeline / compute - 1``;
* a baseline: TorchGeo ``GridGeoSampler`` + ``DataLoader`` + in-memory mean stitching over the
  same tile grid, on a scene that fits in memory (ratio = baseline time / geochange time); the
  baseline runs the model as TorchGeo does (contiguous fp32), the predictor with its defaults
  (BatchNorm folded into the convolutions, channels-last; bf16 autocast where the CPU has
  native bf16);
* bf16 autocast vs fp32 agreement (max/mean probability difference, identical binary pixels).

The model is the default ``fusion_unet``/resnet18 with random weights whose BatchNorm
statistics are calibrated on one scene tile (so its outputs vary spatially like a trained
model's; no weights are downloaded). ``--rss-sizes`` measures memory scaling at large
sizes with a cheap 3x3-conv model (memory does not depend on the model's arithmetic);
``--rss-classes K`` makes it a semantic model with K classes (1 + 2K blended channels).

    python benchmarks/bench_predict.py --sizes 2048 --repeats 3
    python benchmarks/bench_predict.py --sizes 2048 4096 --rss-sizes 8192 16384
    python benchmarks/bench_predict.py --sizes 32500x48000      # the full LsSCD-scale pair
    python benchmarks/bench_predict.py --scenes bench_data/lsscd_sampling --no-compute \
        --no-baseline --agreement-size 0   # an existing 48000 x 32500 pair (bench_sampling's)
    # int8 vs bf16 vs fp32 on a trained checkpoint (bench_train.py --save-checkpoint), on its
    # held-out scene: tiles/s side by side, and agreement with torch fp32 and OpenVINO fp32
    python benchmarks/bench_predict.py --scenes bench_data/train/eval_1024 --engines openvino \
        --precisions fp32,bf16,int8 --checkpoint bench_data/train/trained_binary.ckpt

Every (engine, precision) of ``--engines`` x ``--precisions`` is one configuration, measured in
the same interleaved rounds. With ``--checkpoint`` every run (pipeline, pure compute, TorchGeo
baseline, agreement) uses the trained model and its normalization. An int8 configuration
calibrates on ``--calibration-tiles`` tiles of the scene (NNCF; cached, so only the first round
pays it) and its agreement is reported against both torch fp32 and OpenVINO fp32.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rss import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench_data" / "predict"


def parse_size(text: str) -> tuple[int, int]:
    if "x" in text:
        h, w = text.split("x")
        return int(h), int(w)
    return int(text), int(text)


def scene_dir(height: int, width: int) -> Path:
    from geochange.synthetic import make_scene

    root = DATA / f"scene_{height}x{width}"
    if not (root / "scene.json").exists():
        t0 = time.perf_counter()
        make_scene(root, height, width, seed=0, progress=True)
        print(f"  generated {height}x{width} scene in {time.perf_counter() - t0:.0f} s")
    return root


class TinyModel(torch.nn.Module):
    """Two 3x3 convs; with ``classes`` > 0 also per-date semantic logits (a semantic model)."""

    def __init__(self, in_channels: int = 3, classes: int = 0) -> None:
        super().__init__()
        self.classes = classes
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(2 * in_channels, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 1 + 2 * classes, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t, c, h, w = x.shape
        out = self.body(x.reshape(b, t * c, h, w))
        if not self.classes:
            return {"change": out}
        k = self.classes
        return {
            "change": out[:, :1],
            "semantic_pre": out[:, 1 : 1 + k],
            "semantic_post": out[:, 1 + k :],
        }


NORM = {"mean": [110.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]}


def build(kind: str, model_path: Path | None, classes: int = 0) -> torch.nn.Module:
    if kind == "tiny":
        torch.manual_seed(0)
        return TinyModel(classes=classes).eval()
    from geochange.models import build_model

    model = build_model("fusion_unet", backbone="resnet18", in_channels=3)
    if model_path is not None:
        model.load_state_dict(torch.load(model_path, map_location="cpu"))
    return model.eval()


def calibrated_model(scene: Path, path: Path, tile: int) -> None:
    """Save a fusion_unet whose BatchNorm statistics are calibrated on one scene tile."""
    import rasterio
    from rasterio.windows import Window

    torch.manual_seed(0)
    model = build("fusion_unet", None)
    with rasterio.open(scene / "pre.tif") as a, rasterio.open(scene / "post.tif") as b:
        win = Window(0, 0, tile, tile)
        x = torch.from_numpy(np.stack([a.read(window=win), b.read(window=win)]).astype("float32"))
    mean = torch.tensor(NORM["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(NORM["std"]).view(1, -1, 1, 1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(((x - mean) / std)[None])
    path.parent.mkdir(parents=True, exist_ok=True)  # --scenes runs generate no scene here
    torch.save(model.eval().state_dict(), path)


# --- child runs (fresh process each, for peak RSS) -------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(spec["threads"])
    model_path = Path(spec["model_path"]) if spec["model_path"] else None
    checkpoint = spec["model"] == "checkpoint"
    model = None if checkpoint else build(spec["model"], model_path, spec.get("classes", 0))
    if checkpoint and spec["mode"] == "torchgeo":
        from geochange.checkpoint import load_model

        assert model_path is not None
        model, meta = load_model(model_path)
        spec["norm"] = meta.normalization or {"mean": [0.0] * 3, "std": [1.0] * 3}
    scene = Path(spec["scene"])
    out = Path(spec["out"])
    extra: dict[str, Any] = {}
    if spec["mode"] == "geochange":
        from geochange.predict import ChangePredictor

        options: dict[str, Any] = {
            "tile_size": spec["tile"],
            "overlap": spec["overlap"],
            "batch_size": spec["batch"],
            "precision": spec["precision"],
            "num_workers": spec["workers"],
            "probability_dtype": spec["prob_dtype"],
            "semantic_blend": spec.get("semantic_blend", "probability"),
            "progress": False,
            "engine": spec.get("engine", "torch"),
            "calibration_tiles": spec.get("calibration_tiles", 32),
        }
        if spec.get("gdal_cache_mb"):
            options["gdal_cache_mb"] = spec["gdal_cache_mb"]
        if spec.get("unfolded"):
            options["fold_batchnorm"] = False
        if checkpoint:
            assert model_path is not None
            predictor = ChangePredictor.from_checkpoint(model_path, **options)
        else:
            predictor = ChangePredictor(model, normalization=NORM, **options)
        t0 = time.perf_counter()
        from rasterio.windows import Window

        window = Window(*spec["window"]) if spec.get("window") else None
        cpu0 = time.process_time()
        result = predictor.predict(scene / "pre.tif", scene / "post.tif", out, window=window)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        tiles = result.tiles
        workers = predictor.num_workers
        resolved = predictor.precision
        if resolved == "int8":
            extra["int8"] = quantization_meta(predictor._inferencer.engine)
    elif spec["mode"] == "compute":
        workers = 0
        seconds, tiles, resolved, cpu = compute_only(model, scene, spec)
    else:
        cpu0 = time.process_time()
        seconds, tiles = torchgeo_baseline(model, scene, spec)
        cpu = time.process_time() - cpu0
        workers = spec["workers"] or 0
        resolved = "fp32"
    # Children's ru_maxrss also holds short-lived helpers (``ldconfig -p`` run by imports),
    # which report the parent's RSS at fork time: only meaningful with reader workers.
    children = peak_rss_mb(resource.RUSAGE_CHILDREN) if workers else 0.0
    return {
        **extra,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "tiles": tiles,
        "rss_mb": peak_rss_mb(),
        "rss_children_mb": children,
        "workers": workers,
        "precision": resolved,
    }


def quantization_meta(engine: Any) -> dict[str, Any]:
    """The int8 cache entry's metadata (held-out agreement, tile counts) of ``engine``."""
    from geochange.predict.engines.cache import read_meta

    entry = next(iter(engine.entries.values()))
    meta = read_meta(Path(engine.cache_dir) / entry)
    return {k: meta[k] for k in ("agreement", "calibration_tiles", "held_out_tiles")}


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    from geochange.predict import tile_starts

    stride = tile - overlap
    return [
        (r, c) for r in tile_starts(height, tile, stride) for c in tile_starts(width, tile, stride)
    ]


def compute_only(
    model: torch.nn.Module, scene: Path, spec: dict[str, Any]
) -> tuple[float, int, str, float]:
    """The predictor's own model runner on the scene's tiles, preloaded, in the same batches.

    It is the ``_Inferencer`` of a predictor built with the pipeline's options (engine,
    precision, BatchNorm folding, channels-last, normalization, batch), called exactly as the
    pipeline calls it, so the difference is the pipeline. As in the pipeline, the first batch
    pays the folding and the engine's compilation (exports come from the warm cache).
    """
    import rasterio
    from rasterio.windows import Window

    from geochange.predict import ChangePredictor

    tile = spec["tile"]
    with rasterio.open(scene / "pre.tif") as a, rasterio.open(scene / "post.tif") as b:
        windows = tile_windows(a.height, a.width, tile, spec["overlap"])
        tiles = [
            torch.from_numpy(
                np.stack(
                    [
                        a.read(window=Window(c, r, tile, tile)),
                        b.read(window=Window(c, r, tile, tile)),
                    ]
                )
            )
            for r, c in windows
        ]
    options: dict[str, Any] = {
        "tile_size": tile,
        "overlap": spec["overlap"],
        "batch_size": spec["batch"],
        "precision": spec["precision"],
        "engine": spec.get("engine", "torch"),
        "fold_batchnorm": not spec.get("unfolded"),
        "progress": False,
    }
    if spec["model"] == "checkpoint":
        predictor = ChangePredictor.from_checkpoint(spec["model_path"], **options)
    else:
        predictor = ChangePredictor(model, normalization=NORM, **options)
    inferencer = predictor._inferencer
    batch = spec["batch"]
    if predictor.precision == "int8":
        calibrate_in_memory(predictor, tiles, spec.get("calibration_tiles", 32))
    # As many batches in flight as the pipeline keeps (engines with several streams run
    # them at once), results taken in order.
    from geochange.predict.tiles import PIPELINE_DEPTH

    depth = max(PIPELINE_DEPTH, getattr(inferencer.engine, "concurrency", 1) + 1)
    pending: list[Any] = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(tiles), batch):
        pending.append(inferencer.submit(torch.stack(tiles[i : i + batch])))
        if len(pending) >= depth:
            pending.pop(0).result()
    for future in pending:
        future.result()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return seconds, len(tiles), predictor.precision, cpu


def calibrate_in_memory(predictor: Any, tiles: list[torch.Tensor], count: int) -> None:
    """int8: quantize on the tiles the pipeline samples (evenly spread), before timing."""
    from geochange.predict.engines.quantize import quantize_engine, sample_indices

    inferencer = predictor._inferencer
    picked = [tiles[i] for i in sample_indices(count, len(tiles))]
    with torch.inference_mode():
        stacked = inferencer.preprocess(torch.stack(picked), normalize=True).cpu().numpy()
    quantize_engine(inferencer.engine, stacked, threshold=predictor.threshold)


def torchgeo_baseline(
    model: torch.nn.Module, scene: Path, spec: dict[str, Any]
) -> tuple[float, int]:
    """TorchGeo GridGeoSampler + DataLoader + in-memory mean stitching (whole scene in RAM)."""
    import rasterio
    from torch.utils.data import DataLoader, Dataset
    from torchgeo.datasets import RasterDataset
    from torchgeo.samplers import GridGeoSampler

    class Date(RasterDataset):
        filename_glob = "pre.tif"
        is_image = True

    class PostDate(Date):
        filename_glob = "post.tif"

    t0 = time.perf_counter()
    pre_ds, post_ds = Date(str(scene)), PostDate(str(scene))
    tile, stride = spec["tile"], spec["tile"] - spec["overlap"]
    sampler = GridGeoSampler(pre_ds, size=tile, stride=stride)

    class Pair(Dataset[dict[str, Any]]):
        def __len__(self) -> int:
            return len(sampler)

        def __getitem__(self, query: Any) -> dict[str, Any]:
            a, b = pre_ds[query], post_ds[query]
            return {"image": torch.stack([a["image"], b["image"]]).float(), "query": query}

    loader = DataLoader(
        Pair(),
        sampler=sampler,
        batch_size=spec["batch"],
        num_workers=spec["workers"] or 0,
        collate_fn=lambda items: (
            torch.stack([i["image"] for i in items]),
            [i["query"] for i in items],
        ),
    )
    with rasterio.open(scene / "pre.tif") as src:
        height, width, transform = src.height, src.width, src.transform
    total = np.zeros((height, width), np.float32)
    count = np.zeros((height, width), np.float32)
    norm = spec.get("norm", NORM)
    mean = torch.tensor(norm["mean"]).view(1, 1, -1, 1, 1)
    std = torch.tensor(norm["std"]).view(1, 1, -1, 1, 1)
    tiles = 0
    with torch.inference_mode():
        for images, queries in loader:
            probs = torch.sigmoid(model((images - mean) / std)["change"])[:, 0].numpy()
            for prob, query in zip(probs, queries, strict=True):
                r, c = rasterio.transform.rowcol(
                    transform, query[0].start + 1e-6, query[1].stop - 1e-6
                )
                # GridGeoSampler chips can run past the scene (TorchGeo pads them): clip.
                r0, c0 = max(r, 0), max(c, 0)
                r1, c1 = min(r + prob.shape[0], height), min(c + prob.shape[1], width)
                total[r0:r1, c0:c1] += prob[r0 - r : r1 - r, c0 - c : c1 - c]
                count[r0:r1, c0:c1] += 1
                tiles += 1
    prob_map = total / np.maximum(count, 1)
    profile = {"driver": "GTiff", "count": 1, "dtype": "uint8", "height": height, "width": width}
    profile |= {"tiled": True, "compress": "zstd", "transform": transform}
    with rasterio.open(Path(spec["out"]) / "baseline.tif", "w", **profile) as dst:
        dst.write((prob_map >= 0.5).astype("uint8"), 1)
    return time.perf_counter() - t0, tiles


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise SystemExit(f"benchmark run {spec['mode']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_text(result: dict[str, Any]) -> str:
    if not result.get("workers"):
        return " (no reader worker)"
    return f" + {result['rss_children_mb']:.0f} MB largest of {result['workers']} reader worker(s)"


def round_ratios(slower: list[dict[str, Any]], faster: list[dict[str, Any]]) -> list[float]:
    """Per-round time ratios ``slower / faster`` of two interleaved configurations."""
    return [a["seconds"] / b["seconds"] for a, b in zip(slower, faster, strict=True)]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(runs[0])
    best["seconds"] = statistics.median(r["seconds"] for r in runs)
    if all("cpu_seconds" in r for r in runs):
        best["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    best["rss_children_mb"] = max(r["rss_children_mb"] for r in runs)
    best["all_seconds"] = [round(r["seconds"], 1) for r in runs]
    return best


def agreement(scene: Path, model_path: Path | None, args: argparse.Namespace) -> None:
    """Every configuration vs torch fp32 (and int8 vs OpenVINO fp32) on a window of ``scene``."""
    import rasterio

    size = args.agreement_size
    checkpoint = args.checkpoint or args.agreement_checkpoint
    references = [("torch", "fp32")]
    configs = configurations(args)
    if any(p == "int8" for _, p in configs):
        references.append(("openvino", "fp32"))
    probs, resolved = {}, {}
    for engine, precision in dict.fromkeys(references + configs):
        name = f"agree_{engine}_{precision}"
        spec = base_spec(args, scene, model_path, "geochange", name)
        spec.update(
            engine=engine, precision=precision, prob_dtype="float32", window=[0, 0, size, size]
        )
        if checkpoint:
            spec.update(model="checkpoint", model_path=str(checkpoint))
        resolved[engine, precision] = run_child(spec)
        with rasterio.open(DATA / "runs" / name / "probability.tif") as src:
            probs[engine, precision] = src.read(1)
    source = checkpoint or "random-init calibrated model"
    for candidate in configs:
        for reference in references:
            if candidate == reference or (reference[0] == "openvino" and candidate[1] != "int8"):
                continue
            pa, pb = probs[reference], probs[candidate]
            diff = np.abs(pa - pb)
            same = np.mean((pa >= 0.5) == (pb >= 0.5))
            near = np.mean(np.abs(pa - 0.5) < 0.05)
            result = resolved[candidate]
            gate = ""
            if "int8" in result:
                q = result["int8"]
                gate = (
                    f"; int8 gate: {100 * q['agreement']:.3f}% on {q['held_out_tiles']} held-out "
                    f"tiles (calibrated on {q['calibration_tiles']})"
                )
            print(
                f"  agreement, {candidate[0]} {result['precision']} vs {reference[0]} fp32 "
                f"({source}, {size}^2): binary identical {100 * same:.3f}% of pixels; max |dp| "
                f"{np.nanmax(diff):.4f}, mean |dp| {np.nanmean(diff):.5f}, 99.9th percentile "
                f"|dp| {np.nanpercentile(diff, 99.9):.4f} ({100 * near:.2f}% of reference "
                f"probabilities within 0.05 of the threshold){gate}",
                flush=True,
            )


def configurations(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The measured (engine, precision) pairs: ``--engines`` x ``--precisions``."""
    engines = args.engines.split(",") if args.engines else [args.engine]
    precisions = args.precisions.split(",") if args.precisions else [args.precision]
    return [(e, p) for e in engines for p in precisions]


def label(engine: str, precision: str) -> str:
    return f"{engine}-{precision}"


def cpu_line() -> str:
    """``lscpu``'s model name and the flags that decide the engines' precision."""
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"]
    have = [f for f in wanted if f in flags] or ["none of " + ",".join(wanted)]
    return f"{fields.get('Model name', '?').strip()}; flags: {' '.join(have)}"


def base_spec(
    args: argparse.Namespace, scene: Path, model_path: Path | None, mode: str, name: str
) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": "fusion_unet",
        "model_path": str(model_path) if model_path else None,
        "scene": str(scene),
        "out": str(DATA / "runs" / name),
        "tile": args.tile_size,
        "overlap": args.overlap,
        "batch": args.batch_size,
        "workers": args.workers,
        "threads": args.threads,
        "precision": args.precision,
        "prob_dtype": "uint8",
        "gdal_cache_mb": args.gdal_cache_mb,
        "calibration_tiles": args.calibration_tiles,
        **({"model": "checkpoint", "model_path": str(args.checkpoint)} if args.checkpoint else {}),
    }


def report(runs: dict[str, list[dict[str, Any]]], config: str, height: int, width: int) -> None:
    """Print one configuration's pipeline, pure-compute, overhead and baseline figures."""
    results = {name: summarize(rounds) for name, rounds in runs.items()}
    engine = config
    ours = results[f"ours:{engine}"]
    tiles = ours["tiles"]
    print(
        f"{height}x{width}, engine {engine.split('-')[0]}, precision {ours['precision']} "
        f"(asked {engine.split('-')[1]}): pipeline {tiles} "
        f"tiles in {ours['seconds']:.1f} s ({tiles / ours['seconds']:.2f} tiles/s; runs "
        f"{ours['all_seconds']}), peak RSS {ours['rss_mb']:.0f} MB main{worker_text(ours)}",
        flush=True,
    )
    if "unfolded" in results and engine == next(iter(runs)).split(":")[1]:
        unf = results["unfolded"]
        ratios = round_ratios(runs["unfolded"], runs[f"ours:{engine}"])
        print(
            f"  predictor with fold_batchnorm=False: {unf['seconds']:.1f} s "
            f"(runs {unf['all_seconds']}), peak RSS {unf['rss_mb']:.0f} MB -> BatchNorm "
            f"folding {statistics.median(ratios):.2f}x (median of per-round ratios "
            f"{[round(r, 2) for r in ratios]})",
            flush=True,
        )
    if f"compute:{engine}" in results:
        comp = results[f"compute:{engine}"]
        ratios = round_ratios(runs[f"ours:{engine}"], runs[f"compute:{engine}"])
        print(
            f"  pure compute (the same engine and inferencer, {comp['precision']}) on the same "
            f"{comp['tiles']} tiles: {comp['seconds']:.1f} s = "
            f"{comp['tiles'] / comp['seconds']:.2f} tiles/s (runs {comp['all_seconds']}) -> "
            f"pipeline overhead {100 * (statistics.median(ratios) - 1):+.1f}% (median of "
            f"per-round ratios; rounds {[f'{100 * (r - 1):+.1f}%' for r in ratios]})",
            flush=True,
        )
        if all("cpu_seconds" in r for r in runs[f"ours:{engine}"] + runs[f"compute:{engine}"]):
            cpu = [
                a["cpu_seconds"] / b["cpu_seconds"]
                for a, b in zip(runs[f"ours:{engine}"], runs[f"compute:{engine}"], strict=True)
            ]
            # CPU seconds of the process (all threads): on a shared machine the wall-clock
            # ratio swings with the other jobs' load, the work done much less.
            print(
                f"  CPU time (all threads): pipeline {ours['cpu_seconds']:.1f} s, compute "
                f"{comp['cpu_seconds']:.1f} s -> CPU-time overhead "
                f"{100 * (statistics.median(cpu) - 1):+.1f}% (median of per-round ratios; "
                f"rounds {[f'{100 * (r - 1):+.1f}%' for r in cpu]})",
                flush=True,
            )
    if "baseline" in results:
        base = results["baseline"]
        ratios = round_ratios(runs["baseline"], runs[f"ours:{engine}"])
        print(
            f"  TorchGeo GridGeoSampler baseline (torch fp32): {base['tiles']} tiles in "
            f"{base['seconds']:.1f} s = {base['tiles'] / base['seconds']:.2f} tiles/s (runs "
            f"{base['all_seconds']}), peak RSS {base['rss_mb']:.0f} MB -> ratio "
            f"{statistics.median(ratios):.2f}x (baseline / geochange, median of per-round "
            f"ratios {[round(r, 2) for r in ratios]})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", nargs="*", default=["2048"], help="HxW or S (full runs)")
    parser.add_argument("--rss-sizes", nargs="*", default=[], help="memory-only runs, tiny model")
    parser.add_argument(
        "--semantic-blend", choices=["probability", "center"], default="probability"
    )
    parser.add_argument(
        "--rss-classes", type=int, default=0, help="semantic classes of the tiny model (0: binary)"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=None, help="default: the predictor's")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--precisions",
        help="comma-separated precisions (e.g. fp32,bf16,int8) measured side by side with each "
        "engine (overrides --precision)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a trained geochange checkpoint (bench_train.py --save-checkpoint) for every run "
        "instead of the random-init model; its normalization is used",
    )
    parser.add_argument(
        "--calibration-tiles",
        type=int,
        default=32,
        help="int8: tiles of the scene sampled for NNCF calibration and the agreement gate",
    )
    parser.add_argument("--engine", default="torch", choices=["torch", "openvino", "onnxruntime"])
    parser.add_argument(
        "--engines", help="comma-separated engines measured side by side (overrides --engine)"
    )
    parser.add_argument("--gdal-cache-mb", type=int, help="default: the predictor's")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--agreement-size", type=int, default=1024, help="0: skip bf16 check")
    parser.add_argument(
        "--agreement-checkpoint",
        type=Path,
        help="a trained geochange checkpoint (e.g. bench_train.py --save-checkpoint) for the "
        "bf16 check instead of the random-init model; its normalization is used",
    )
    parser.add_argument(
        "--scenes",
        nargs="*",
        type=Path,
        default=[],
        help="existing scene folders (pre.tif, post.tif) to run instead of generating --sizes",
    )
    parser.add_argument(
        "--rss-scene",
        type=Path,
        help="run the --rss-sizes as windows of this existing scene (S, HxW or 'full')",
    )
    parser.add_argument(
        "--no-compute", action="store_true", help="skip the pure-compute reference run"
    )
    parser.add_argument(
        "--unfolded",
        action="store_true",
        help="also run the predictor with fold_batchnorm=False in the same rounds",
    )
    parser.add_argument(
        "--scene-window",
        help="HxW: full-model runs on this top-left window of each scene (e.g. a full-width "
        "strip of the 48000 x 32500 pair); needs --no-compute --no-baseline --agreement-size 0",
    )
    args = parser.parse_args()
    if args.scene_window and not (
        args.no_compute and args.no_baseline and args.agreement_size == 0
    ):
        parser.error("--scene-window needs --no-compute --no-baseline --agreement-size 0")
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    engines = args.engines.split(",") if args.engines else [args.engine]
    print(
        f"bench_predict: tile {args.tile_size}, overlap {args.overlap}, batch {args.batch_size}, "
        f"{args.workers} reader worker(s), {args.threads} threads, precision "
        f"{args.precisions or args.precision}, engines {','.join(engines)}; model "
        f"{args.checkpoint or 'random-init calibrated fusion_unet'}; torch {torch.__version__}\n"
        f"CPU: {cpu_line()}",
        flush=True,
    )
    model_path = DATA / "fusion_unet_resnet18_bncal.pt"
    scenes = [scene_dir(*parse_size(text)) for text in args.sizes] if not args.scenes else []
    for scene in scenes + list(args.scenes):
        import rasterio

        with rasterio.open(scene / "pre.tif") as src:
            height, width = src.height, src.width
        calibrated_model(scene, model_path, args.tile_size)  # fresh: the architecture may change
        modes = []
        for engine, precision in configurations(args):
            modes.append(("geochange", f"ours:{label(engine, precision)}"))
            if not args.no_compute:
                modes.append(("compute", f"compute:{label(engine, precision)}"))
        if args.unfolded:
            modes.append(("geochange", "unfolded"))
        if not args.no_baseline:
            modes.append(("torchgeo", "baseline"))
        # Interleave the configurations (ours, compute, baseline, ours, ...) so that slow drifts
        # of a shared machine hit all of them alike; report medians and per-round ratios.
        runs: dict[str, list[dict[str, Any]]] = {name: [] for _, name in modes}
        if args.scene_window:
            height, width = parse_size(args.scene_window)
        for _ in range(args.repeats):
            for mode, name in modes:
                spec = base_spec(args, scene, model_path, mode, name)
                engine, precision = (
                    name.split(":")[1].split("-") if ":" in name else configurations(args)[0]
                )
                spec.update(engine=engine, precision=precision, unfolded=name == "unfolded")
                if args.scene_window:
                    spec["window"] = [0, 0, width, height]
                runs[name].append(run_child(spec))
        for engine, precision in configurations(args):
            report(runs, label(engine, precision), height, width)
            int8 = runs[f"ours:{label(engine, precision)}"][0].get("int8")
            if int8:
                print(
                    f"  int8 gate (NNCF, held-out tiles of this scene): "
                    f"{100 * int8['agreement']:.3f}% identical binary change pixels to OpenVINO "
                    f"fp32 on {int8['held_out_tiles']} tiles, calibrated on "
                    f"{int8['calibration_tiles']} (needs >= 99.5%)",
                    flush=True,
                )
        if args.agreement_size:
            agreement(scene, model_path, args)
    for text in args.rss_sizes:
        window = None
        if args.rss_scene is not None:
            import rasterio

            scene = args.rss_scene
            with rasterio.open(scene / "pre.tif") as src:
                full = (src.height, src.width)
            height, width = full if text == "full" else parse_size(text)
            if (height, width) != full:
                window = [0, 0, width, height]  # col_off, row_off, width, height
        else:
            height, width = parse_size(text)
            scene = scene_dir(height, width)
        spec = base_spec(args, scene, None, "geochange", f"rss_{text}")
        spec["model"] = "tiny"
        spec["classes"] = args.rss_classes
        spec["semantic_blend"] = args.semantic_blend
        spec["window"] = window
        res = run_child(spec)
        print(
            f"{height}x{width} (tiny model, {args.rss_classes} classes, semantic_blend "
            f"{args.semantic_blend}, memory only): "
            f"{res['tiles']} tiles in "
            f"{res['seconds']:.1f} s, peak RSS {res['rss_mb']:.0f} MB main"
            f"{worker_text(res)}"
        )


if __name__ == "__main__":
    main()

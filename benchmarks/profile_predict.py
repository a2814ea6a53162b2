"""Where a ChangePredictor run spends its time: wall-clock timers around each pipeline stage.

One prediction of bench_predict's generated scene (``bench_data/predict/scene_SxS``, made on
first use) with bench_predict's model (``fusion_unet``/resnet18, random weights, BatchNorm
calibrated on one tile), with every stage wrapped in a timer. Stages nest (the engine call
is inside the model runner) and the writer thread overlaps the rest, so the shares do not add
up to 100 %. For where the time goes *inside* a stage, run it under py-spy:

    python benchmarks/profile_predict.py --size 4096 --engine openvino
    py-spy record -r 50 --format speedscope -o predict.json -- \
        python benchmarks/profile_predict.py --size 2048 --engine torch
"""

from __future__ import annotations

import argparse
import collections
import functools
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_predict as bench
import torch

#: (module, attribute path, label) of each timed stage.
STAGES = [
    ("geochange.predict.reader", "RasterPair.open", "open and check the rasters"),
    ("geochange.predict.inference", "_Inferencer.probe_channels", "output probe (+ folding)"),
    ("geochange.predict.engines.base", "Engine.runner", "BatchNorm folding (first call)"),
    ("geochange.predict.reader", "TileDataset.__getitem__", "read + decode tiles"),
    ("geochange.predict.tiles", "_collate", "DataLoader collate"),
    ("geochange.predict.inference", "_Inferencer._infer", "model runner (all of it)"),
    ("geochange.predict.inference", "_Inferencer.preprocess", "  normalization + padding"),
    ("geochange.predict.engines.torch_engine", "TorchEngine.run", "  engine call"),
    ("geochange.predict.engines.export", "ExportedEngine.run", "  engine call"),
    ("geochange.predict.blend", "_BandAssembler.add_tile", "blending"),
    ("geochange.predict.blend", "_BandAssembler._release", "finished rows: divide, decode"),
    ("geochange.predict.outputs", "decode_outputs", "  decode outputs"),
    ("geochange.predict.writer", "GeoTiffBandWriter._write_chunk", "row-band writes (thread)"),
    ("geochange.predict.writer", "GeoTiffBandWriter.finalize", "COG finalization"),
    ("rasterio.shutil", "copy", "  COG copy (after overviews)"),
]


def install_timers(totals: dict[str, float], counts: collections.Counter[str]) -> None:
    """Wrap each stage of :data:`STAGES` in a timer adding to ``totals``."""
    import importlib

    for module_name, path, label in STAGES:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original = getattr(owner, name)

        def timed(*args: Any, _fn: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - start
                counts[_label] += 1

        setattr(owner, name, functools.wraps(original)(timed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--engine", default="torch", choices=["torch", "openvino", "onnxruntime"])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-timers", action="store_true", help="plain run (for py-spy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scene = bench.scene_dir(args.size, args.size)
    model_path = bench.DATA / "fusion_unet_resnet18_bncal.pt"
    bench.calibrated_model(scene, model_path, 512)
    totals: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter[str] = collections.Counter()
    if not args.no_timers:
        install_timers(totals, counts)
    from geochange.predict import ChangePredictor

    predictor = ChangePredictor(
        bench.build("fusion_unet", model_path),
        normalization=bench.NORM,
        engine=args.engine,
        precision=args.precision,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = predictor.predict(scene / "pre.tif", scene / "post.tif", Path(out))
        wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.size}^2, engine {args.engine} {predictor.precision}: {result.tiles} tiles in "
        f"{wall:.1f} s ({result.tiles / wall:.2f} tiles/s), peak RSS {rss:.0f} MB\n"
        f"CPU: {bench.cpu_line()}"
    )
    for label in dict.fromkeys(label for _, _, label in STAGES):
        if counts[label]:
            share = 100 * totals[label] / wall
            print(f"  {label:34s} {totals[label]:7.2f} s {share:5.1f} %  ({counts[label]})")


if __name__ == "__main__":
    main()

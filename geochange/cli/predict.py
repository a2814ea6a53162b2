"""``geochange predict``: map change over a whole scene pair from a trained checkpoint."""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

from geochange.cli import add_renamed_option

HELP = "Predict change over a whole scene pair from a checkpoint (seamless COG outputs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``predict`` options to ``parser``."""
    parser.add_argument("--checkpoint", required=True, help="geochange training checkpoint")
    parser.add_argument("--pre", required=True, help="pre-change image (output grid)")
    parser.add_argument("--post", required=True, help="post-change image (warped if needed)")
    add_renamed_option(
        parser, "--out-dir", "--out", type=Path, required=True, help="output directory"
    )
    parser.add_argument("--tile-size", type=int, help="tile size (default: the checkpoint's)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: tile size / 4)")
    parser.add_argument("--margin", type=int, help="zero-weight margin (default: overlap / 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    _add_engine_arguments(parser)
    _add_blending_arguments(parser)
    _add_output_arguments(parser)
    _add_model_input_arguments(parser)
    parser.add_argument("--vector", help="also vectorize the changes to this file (.gpkg, ...)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        default="auto",
        help="auto: the engine's best on this machine; int8: --engine openvino only",
    )
    parser.add_argument(
        "--engine",
        choices=["torch", "openvino", "onnxruntime"],
        default="torch",
        help="inference engine (openvino: pip install 'geochange[openvino]'; onnxruntime: "
        "pip install 'geochange[onnx]')",
    )
    parser.add_argument(
        "--engine-cache-dir",
        type=Path,
        help="directory of exported models (default: $XDG_CACHE_HOME/geochange/engines)",
    )
    parser.add_argument(
        "--calibration-tiles",
        type=int,
        default=32,
        help="int8: tiles sampled over the scene for calibration and the agreement check",
    )
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    add_renamed_option(
        parser, "--num-workers", "--workers", type=int, help="DataLoader reader processes"
    )
    dask = parser.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="infer blocks of tile rows on the workers of this Dask scheduler (tcp://host:8786)",
    )
    dask.add_argument(
        "--dask-local-workers",
        type=int,
        metavar="N",
        help="start a local Dask cluster of N worker processes for this run (closed at the end)",
    )


def _add_blending_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=0.5, help="change threshold")
    parser.add_argument(
        "--blend", choices=["cosine", "gaussian", "mean", "center"], default="cosine"
    )
    parser.add_argument(
        "--semantic-blend",
        choices=["probability", "center"],
        default="probability",
        help="class maps of semantic models: arg-max of blended probabilities, or the class of "
        "the tile each pixel is deepest inside (memory independent of the class count)",
    )
    parser.add_argument(
        "--band-memory-mb",
        type=float,
        default=512,
        help="memory budget of the blending band; wider scenes are predicted in column stripes",
    )
    parser.add_argument(
        "--value-range",
        choices=["check", "rescale", "ignore"],
        default="check",
        help="when the scene's values do not match the training imagery's range (e.g. 12-bit "
        "imagery, 8-bit model): fail (check), map them linearly onto it (rescale), or predict "
        "anyway (ignore)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probability-dtype", choices=["uint8", "float32"], default="uint8")
    parser.add_argument(
        "--no-probability", action="store_true", help="do not write probability.tif"
    )
    parser.add_argument(
        "--bounds",
        type=float,
        nargs=4,
        metavar=("LEFT", "BOTTOM", "RIGHT", "TOP"),
        help="restrict to these bounds in the pre image's CRS",
    )
    parser.add_argument("--crs", help="output CRS (default: the pre image's)")
    add_renamed_option(
        parser, "--res", "--resolution", type=float, help="output pixel size in CRS units"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="also replace existing outputs that geochange did not write (never an input)",
    )


def _add_model_input_arguments(parser: argparse.ArgumentParser) -> None:
    for flag in ("--mean", "--std"):
        parser.add_argument(
            flag,
            type=float,
            nargs="+",
            metavar="V",
            help=f"per-band normalization {flag[2:]} in raw pixel units, with --mean/--std both "
            "(default: the checkpoint's; TorchGeo checkpoints record none)",
        )
    parser.add_argument(
        "--input-layout",
        choices=["temporal", "stacked"],
        help="how the checkpoint's network takes the dates (default: what the checkpoint says; "
        "a TorchGeo 'unet' takes them stacked as channels)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``geochange predict``."""
    overrides: dict[str, object] = {
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": args.precision,
        "threshold": args.threshold,
        "blend": args.blend,
        "semantic_blend": args.semantic_blend,
        "band_memory_mb": args.band_memory_mb,
        "tta": args.tta,
        "probability_dtype": args.probability_dtype,
        "progress": not args.quiet,
        "value_range": args.value_range,
        "engine": args.engine,
        "engine_cache_dir": args.engine_cache_dir,
        "calibration_tiles": args.calibration_tiles,
    }
    if args.tile_size is not None:
        overrides["tile_size"] = args.tile_size
        overrides["overlap"] = args.tile_size // 4
    if args.overlap is not None:
        overrides["overlap"] = args.overlap
    if args.margin is not None:
        overrides["margin"] = args.margin
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if args.input_layout is not None:
        overrides["input_layout"] = args.input_layout
    if (args.mean is None) != (args.std is None):
        from geochange.errors import ConfigurationError

        raise ConfigurationError("give --mean and --std together")
    if args.mean is not None:
        overrides["normalization"] = {"mean": args.mean, "std": args.std}
    # Folders this run creates; those still empty when it fails early are removed again.
    created = _missing_dirs(args.out_dir)
    if args.vector:
        created += _missing_dirs(Path(args.vector).absolute().parent)
    try:
        return _run(args, overrides)
    except BaseException:
        for directory in sorted(created, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty (partial results) or gone
                os.rmdir(directory)
        raise


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet."""
    missing = []
    for directory in (path.absolute(), *path.absolute().parents):
        if directory.exists():
            break
        missing.append(directory)
    return missing


def _run(args: argparse.Namespace, overrides: dict[str, object]) -> int:
    from geochange.predict import ChangePredictor
    from geochange.predict.cluster import dask_client

    if args.vector:
        from geochange.io import check_not_inputs
        from geochange.vectorize import check_vector_output

        # A bad vector path must fail now, not after hours of prediction.
        check_vector_output(Path(args.vector))
        check_not_inputs(
            [args.vector],
            {"pre image": args.pre, "post image": args.post, "checkpoint": args.checkpoint},
        )
    started = time.perf_counter()
    predictor = ChangePredictor.from_checkpoint(args.checkpoint, **overrides)
    with dask_client(args.dask_scheduler, args.dask_local_workers) as client:
        result = predictor.predict(
            args.pre,
            args.post,
            args.out_dir,
            window=args.bounds,
            write_probability=not args.no_probability,
            resume=args.resume,
            crs=args.crs,
            res=args.res,
            overwrite=args.overwrite,
            client=client,
        )
    for key in ("change", "probability", "semantic_pre", "semantic_post", "transition"):
        path = getattr(result, key)
        if path is not None:
            print(f"{key}: {path}")
    if args.vector:
        from geochange.vectorize import vectorize_changes

        vectorize_changes(result, args.vector, return_frame=False)
        print(f"vector: {args.vector}")
    print(
        f"{result.tiles} tiles, {result.width} x {result.height} px in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0

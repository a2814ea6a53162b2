"""``geochange evaluate``: score a whole-scene change map per pixel and per object; report."""

from __future__ import annotations

import argparse
import time

from geochange.cli import add_renamed_option
from geochange.cli._options import add_class_names, add_mask_values, add_quiet, split_names

HELP = "Evaluate a change map against a reference per pixel and per object; write a report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser``."""
    parser.add_argument(
        "--prediction",
        required=True,
        help="prediction directory (change.tif [, probability.tif, semantic_pre.tif, "
        "semantic_post.tif]), a "
        "change raster, or a polygon file of predicted changes",
    )
    parser.add_argument(
        "--reference", help="reference change raster (0/1, 255 ignored) or polygon file"
    )
    parser.add_argument(
        "--reference-polygons",
        help="reference change polygons (GeoPackage, ...); a change_type column gives per-type "
        "scores (default: vectorize the reference raster)",
    )
    add_mask_values(parser, what="how the reference change raster stores change")
    add_mask_values(
        parser,
        "--prediction-mask-values",
        what="how a predicted change raster stores change (geochange's change.tif is always 0/1)",
    )
    parser.add_argument(
        "--prediction-probability",
        help="change probability raster of the prediction, for mean_prob/max_prob of the "
        "predicted polygons (default: probability.tif of the prediction directory or beside "
        "its change.tif)",
    )
    parser.add_argument("--semantic-pre", help="reference class raster before (SCD scores)")
    parser.add_argument("--semantic-post", help="reference class raster after (SCD scores)")
    add_class_names(parser, note="default: raster tags")
    add_renamed_option(
        parser,
        "--out-dir",
        "--report",
        required=True,
        help="report directory (JSON, Markdown, GeoPackage, figures)",
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="minimum IoU of an object match"
    )
    parser.add_argument(
        "--matching",
        choices=["hungarian", "greedy"],
        default="hungarian",
        help="one-to-one matching: most matches (Hungarian) or greedy by IoU",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        help="ignore vectorized objects smaller than this (map units²)",
    )
    parser.add_argument(
        "--change-types",
        help='comma-separated change types to evaluate per object, e.g. "new building,'
        'demolished building" (default: all)',
    )
    parser.add_argument(
        "--pixel-only", action="store_true", help="skip the object-level evaluation"
    )
    parser.add_argument("--block-size", type=int, default=1024, help="pixel-pass block side")
    parser.add_argument("--workers", type=int, default=None, help="vectorizer processes")
    add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation, write the report and print its summary."""
    from geochange.errors import ConfigurationError
    from geochange.evaluate import evaluate_scene

    if args.reference is None and args.reference_polygons is None:
        raise ConfigurationError("give --reference and/or --reference-polygons")
    names = split_names(args.class_names)
    start = time.perf_counter()
    report = evaluate_scene(
        args.prediction,
        args.reference,
        semantic_pre=args.semantic_pre,
        semantic_post=args.semantic_post,
        reference_polygons=args.reference_polygons,
        prediction_probability=args.prediction_probability,
        class_names=names,
        iou_threshold=args.iou_threshold,
        matching=args.matching,
        min_area=args.min_area,
        change_types=split_names(args.change_types),
        objects=not args.pixel_only,
        block_size=args.block_size,
        workers=args.workers,
        progress=not args.quiet,
        mask_values=args.mask_values,
        prediction_mask_values=args.prediction_mask_values,
    )
    written = report.save(args.out_dir)
    if report.pixel is not None:
        pixel = ", ".join(f"{k} {v:.4f}" for k, v in report.pixel.items())
        print(f"pixel: {pixel}")
    if report.objects is not None:
        o = report.objects
        print(
            f"objects: {o['true_positives']} TP, {o['false_positives']} FP, {o['misses']} misses; "
            f"precision {o['precision']:.4f}, recall {o['recall']:.4f}, F1 {o['f1']:.4f}; "
            f"{o['split_references']} split, {o['merging_predictions']} merging"
        )
    print(
        f"report written to {args.out_dir} ({len(written)} files) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0

"""``geochange pseudo-labels``: change pseudo labels from two per-date semantic maps (CEG)."""

from __future__ import annotations

import argparse
import math

from geochange.cli import add_renamed_option
from geochange.cli._options import add_class_names, add_mask_values

HELP = (
    "Generate change pseudo labels from per-date class rasters (DiffMatch change event "
    "generation); with --reference, score them as an unsupervised change detector (IoU^c)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``pseudo-labels`` options to ``parser``."""
    parser.add_argument("--semantic-pre", required=True, help="class raster of the first date")
    parser.add_argument(
        "--semantic-post", required=True, help="class raster of the second date (same grid)"
    )
    parser.add_argument(
        "--out", "-o", required=True, help="output change label COG (uint8 0/1, 255 ignore)"
    )
    parser.add_argument(
        "--mode",
        choices=["mixed", "instance", "pixel"],
        default="mixed",
        help="pixel differencing, instance change events, or pixel change inside events "
        "(default: mixed, as DiffMatch)",
    )
    parser.add_argument(
        "--change-classes",
        default="building",
        help="comma-separated class names (from the rasters' GEOCHANGE_CLASS_NAMES tag) or ids "
        "(default: building)",
    )
    add_class_names(parser, note="overrides the tag")
    parser.add_argument(
        "--prob-pre", help="class probabilities of the first date (K float or uint8 bands)"
    )
    parser.add_argument("--prob-post", help="class probabilities of the second date")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.8,
        help="pixels whose top probability is below this at either date are ignored (0.8)",
    )
    parser.add_argument(
        "--overlap-threshold",
        type=float,
        default=0.0,
        help="an instance is a change event when its IoU with every instance at the other "
        "date is <= this (0.0: appeared or vanished as a whole)",
    )
    add_renamed_option(
        parser,
        "--min-instance-pixels",
        "--min-instance-area",
        type=int,
        default=10,
        help="instances smaller than this (pixels) are noise, never change events (10)",
    )
    parser.add_argument("--connectivity", type=int, choices=[4, 8], default=8)
    parser.add_argument("--ignore-index", type=int, default=255, help="ignore value (255)")
    parser.add_argument("--block-size", type=int, default=2048, help="block side in pixels")
    parser.add_argument(
        "--reference",
        help="reference change raster: report the pseudo labels' IoU^c against it "
        "(unsupervised change detection)",
    )
    add_mask_values(parser, what="how the --reference raster stores change")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    """Run ``geochange pseudo-labels``; returns the exit code."""
    from geochange.io import check_change_mask
    from geochange.pseudo import evaluate_pseudo_labels, generate_pseudo_labels

    if args.reference:
        # A reference the score would refuse fails now, not after the whole generation.
        check_change_mask(args.reference, mask_values=args.mask_values, what="reference")

    class_names = (
        [name.strip() for name in args.class_names.split(",")] if args.class_names else None
    )
    summary = generate_pseudo_labels(
        args.semantic_pre,
        args.semantic_post,
        args.out,
        change_classes=args.change_classes,
        mode=args.mode,
        prob_pre=args.prob_pre,
        prob_post=args.prob_post,
        min_instance_pixels=args.min_instance_pixels,
        overlap_threshold=args.overlap_threshold,
        confidence=args.confidence,
        ignore_index=args.ignore_index,
        connectivity=args.connectivity,
        class_names=class_names,
        block_size=args.block_size,
        progress=not args.quiet,
    )
    total = summary.change_pixels + summary.no_change_pixels + summary.ignored_pixels
    print(f"wrote {args.out} ({summary.mode} mode) in {summary.seconds:.1f} s")
    print(
        f"  change {summary.change_pixels} px ({summary.change_pixels / max(total, 1):.2%}), "
        f"no change {summary.no_change_pixels} px, ignored {summary.ignored_pixels} px"
    )
    if summary.mode != "pixel":
        print(
            f"  instances: {summary.instances_pre} before, {summary.instances_post} after, "
            f"{summary.change_events} change events"
        )
    if args.reference:
        score = evaluate_pseudo_labels(
            args.out, args.reference, block_size=args.block_size, mask_values=args.mask_values
        )
        print(f"unsupervised CEG vs {args.reference}:")
        print(
            f"  IoU^c {_fmt(score.iou_change)} (ignored pixels as no change), "
            f"F1 {_fmt(score.f1)}, precision {_fmt(score.precision)}, "
            f"recall {_fmt(score.recall)}"
        )
        print(
            f"  IoU^c on decided pixels {_fmt(score.iou_change_decided)}, "
            f"coverage {_fmt(score.coverage)}"
        )
    return 0

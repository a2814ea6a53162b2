"""``geochange synth``: write a synthetic georeferenced bi-temporal scene."""

from __future__ import annotations

import argparse
import re

HELP = "Generate a synthetic georeferenced bi-temporal scene (images, class maps, change, GPKG)."


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (e.g. ``8192x8192``) into ``(height, width)``.

    Raises:
        argparse.ArgumentTypeError: if the text is not two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if match is None or int(match[1]) < 1 or int(match[2]) < 1:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 8192x8192"
        )
    return int(match[1]), int(match[2])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser``."""
    parser.add_argument("out_dir", help="output directory (created if needed)")
    parser.add_argument(
        "--size",
        type=parse_size,
        default=(2048, 2048),
        metavar="HEIGHTxWIDTH",
        help="pixels per date (default 2048x2048; LsSCD scale is 48000x32500)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--crs", default="EPSG:32650", help="output CRS (default EPSG:32650)")
    parser.add_argument(
        "--res", type=float, default=0.6, help="pixel size in CRS units (default 0.6)"
    )
    parser.add_argument("--bands", type=int, default=3, help="image bands, >= 3 (default 3)")
    parser.add_argument(
        "--origin",
        type=float,
        nargs=2,
        metavar=("LEFT", "TOP"),
        help="map coordinates of the upper-left corner (default: centre of the CRS's area)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes generating blocks in parallel (default 1)"
    )
    parser.add_argument(
        "--realism",
        default="none",
        metavar="NAME",
        help="perturbations making the pair harder: 'none' (default), the preset 'levir', or one "
        "perturbation alone at its 'levir' setting: misregistration, radiometry, phenology, sun, "
        "lean, distractors (see docs/synthetic.md)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``geochange synth``; returns the exit code."""
    from geochange.synthetic import make_scene

    height, width = args.size
    scene = make_scene(
        args.out_dir,
        height,
        width,
        seed=args.seed,
        crs=args.crs,
        res=args.res,
        bands=args.bands,
        progress=not args.quiet,
        origin=tuple(args.origin) if args.origin else None,
        workers=args.workers,
        realism=args.realism,
    )
    stats = scene.stats
    mpix = height * width / 1e6
    print(
        f"wrote {scene.root}: {height}x{width} px per date, {scene.crs}, res {scene.res}; "
        f"{stats['changed_fraction']:.2%} changed pixels, {stats['new_buildings']} new and "
        f"{stats['demolished_buildings']} demolished buildings; "
        f"{stats['seconds']:.1f} s ({mpix / max(stats['seconds'], 1e-9):.2f} Mpixel/s)"
    )
    return 0

"""``geochange vectorize``: turn a change raster into change polygons (GeoPackage, ...)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from geochange.cli._options import add_mask_values

HELP = "Vectorize a change raster into change polygons (GeoPackage/GeoParquet/GeoJSON/FlatGeobuf)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``vectorize`` options to ``parser``."""
    parser.add_argument("change", help="change raster (uint8: 0 no change, 1 change, 255 nodata)")
    parser.add_argument(
        "--out", "-o", required=True, help="output file: .gpkg, .parquet, .geojson or .fgb"
    )
    parser.add_argument("--probability", help="change probability raster (uint8 0-255 or float)")
    parser.add_argument("--semantic-pre", help="class raster before (for from_class/change_type)")
    parser.add_argument("--semantic-post", help="class raster after (for to_class/change_type)")
    parser.add_argument(
        "--class-names",
        help="comma-separated class names in id order (default: the rasters' metadata)",
    )
    parser.add_argument(
        "--change-classes",
        help="comma-separated classes: keep changes from or to these classes only",
    )
    parser.add_argument(
        "--min-area", type=float, default=0.0, help="drop polygons smaller than this (map units²)"
    )
    parser.add_argument(
        "--simplify", type=float, default=0.0, help="topology-preserving tolerance (map units)"
    )
    parser.add_argument(
        "--regularize",
        choices=["rectangle", "orthogonal"],
        help="square up building outlines",
    )
    parser.add_argument("--connectivity", type=int, choices=[4, 8], default=4)
    parser.add_argument(
        "--group-by",
        choices=["change_type", "change"],
        default="change_type",
        help="one polygon per connected change-type region (default) or per changed region",
    )
    parser.add_argument("--block-size", type=int, default=4096, help="block side in pixels")
    parser.add_argument("--layer", default="changes", help="layer name")
    parser.add_argument(
        "--layer-per-type", action="store_true", help="one GeoPackage layer per change type"
    )
    parser.add_argument(
        "--mode",
        choices=["create", "overwrite", "append"],
        default="create",
        help="create the file, overwrite the layer(s) in it, or append to them",
    )
    add_mask_values(parser, what="how the change raster stores change", nodata=True)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _written_change_types(out: Path, layer: str, layer_per_type: bool) -> list[Any]:
    """The ``change_type`` column of each layer this run wrote (read without geometries)."""
    import pyogrio

    if out.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return [pq.read_table(out, columns=["change_type"]).to_pandas()["change_type"]]
    names = [str(row[0]) for row in pyogrio.list_layers(out)]
    if out.suffix.lower() == ".gpkg":
        names = [n for n in names if n == layer or (layer_per_type and n.startswith(f"{layer}_"))]
    return [
        pyogrio.read_dataframe(out, layer=n, columns=["change_type"], read_geometry=False)[
            "change_type"
        ]
        for n in names
    ]


def run(args: argparse.Namespace) -> int:
    """Run ``geochange vectorize``; returns the exit code."""
    from geochange.vectorize import vectorize_changes

    start = time.perf_counter()
    # return_frame=False: polygons stream to the file; the GeoDataFrame is never built.
    vectorize_changes(
        args.change,
        args.out,
        probability=args.probability,
        semantic_pre=args.semantic_pre,
        semantic_post=args.semantic_post,
        class_names=_split(args.class_names),
        change_classes=_split(args.change_classes),
        min_area=args.min_area,
        simplify=args.simplify,
        regularize=args.regularize,
        block_size=args.block_size,
        layer=args.layer,
        connectivity=args.connectivity,
        group_by=args.group_by,
        layer_per_type=args.layer_per_type,
        mode=args.mode,
        workers=args.workers,
        progress=not args.quiet,
        return_frame=False,
        mask_values=args.mask_values,
    )
    elapsed = time.perf_counter() - start
    counts: dict[str, int] = {}
    total = 0
    for types in _written_change_types(Path(args.out), args.layer, args.layer_per_type):
        total += len(types)
        for change_type, count in types.dropna().value_counts().items():
            counts[str(change_type)] = counts.get(str(change_type), 0) + int(count)
    print(f"wrote {total} change polygons to {args.out} in {elapsed:.1f} s")
    for change_type in sorted(counts):
        print(f"  {change_type}: {counts[change_type]}")
    return 0

"""Command-line options shared by several commands (one definition, one help text).

``geochange evaluate``, ``pseudo-labels`` and ``vectorize`` read change rasters and
class-name lists; their flags are defined here so they cannot drift apart.
"""

from __future__ import annotations

import argparse

MASK_VALUES_CHOICES = ["auto", "0,1", "0,255"]


def add_mask_values(
    parser: argparse.ArgumentParser,
    flag: str = "--mask-values",
    *,
    what: str,
    nodata: bool = False,
) -> None:
    """Add a ``--mask-values``-style option: how a change raster stores change.

    Args:
        parser: the command's parser.
        flag: the option name (e.g. ``--prediction-mask-values``).
        what: the start of the help text, naming the raster it applies to.
        nodata: the help says 255 is nodata (an output's empty area) rather than ignored (a
            reference's unknown pixels).
    """
    auto, plain = ("255 nodata", "255 = nodata") if nodata else ("255 ignored", "255 ignored")
    parser.add_argument(
        flag,
        choices=MASK_VALUES_CHOICES,
        metavar="|".join(MASK_VALUES_CHOICES),
        default="auto",
        help=f"{what}: auto (0/1, {auto}; 0/255 rasters are refused), 0,1 ({plain}) "
        "or 0,255 (255 = change, e.g. LEVIR-CD labels)",
    )


def add_class_names(parser: argparse.ArgumentParser, *, note: str) -> None:
    """Add ``--class-names``: comma-separated class names in id order.

    Args:
        parser: the command's parser.
        note: what the option does when given or not, shown in brackets in the help.
    """
    parser.add_argument("--class-names", help=f"comma-separated class names in id order ({note})")


def split_names(text: str | None) -> list[str] | None:
    """A comma-separated list as stripped, non-empty names; ``None`` when not given."""
    if not text:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """Add ``--quiet``: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")

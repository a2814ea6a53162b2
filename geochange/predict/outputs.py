"""From blended probabilities to products: decoding, output specs, transition codes.

The file names, tags, probability scale and nodata come from :mod:`geochange.io.products`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geochange.classes import CHANGE_CLASS_NAMES, CHANGE_COLORS, class_colours
from geochange.io import (
    CHANGE_FILE,
    CLASS_NAMES_TAG,
    NODATA_U8,
    PREDICTION_FILES,
    PROBABILITY_FILE,
    PROBABILITY_SCALE,
    PROBABILITY_SCALE_TAG,
    TRANSITION_FILE,
    TRANSITION_NAMES_TAG,
)
from geochange.predict.writer import OutputSpec


def _transition_codes(classes: int) -> tuple[int, int, str]:
    """``(nodata, unchanged, dtype)`` of the transition raster for ``classes`` classes."""
    if classes * classes <= 253:
        return 255, 254, "uint8"
    return 65535, 65534, "uint16"


def output_class_names(
    class_names: Sequence[str] | None, classes: int, *, stacklevel: int = 2
) -> list[str]:
    """The names written for ``classes`` classes: the given ones if they fit, else numbered.

    ``stacklevel`` is that of the warning given when they do not fit.
    """
    if class_names is not None and len(class_names) == classes:
        return list(class_names)
    if class_names is not None:
        warnings.warn(
            f"{len(class_names)} class names given but the model predicts {classes} "
            "classes; using numbered names",
            stacklevel=stacklevel,
        )
    return [f"class_{i}" for i in range(classes)]


def decode_outputs(
    probs: np.ndarray,
    valid: np.ndarray,
    classes: int,
    *,
    threshold: float,
    probability_dtype: str,
    labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Turn blended probabilities ``[ch, n, W]`` into the output arrays.

    ``labels`` (``[2, n, W]``) are ready class maps (``semantic_blend="center"``); without
    them the classes are the arg-max of the blended class probabilities.
    """
    change_prob = probs[0]
    changed = change_prob >= threshold
    out: dict[str, np.ndarray] = {}
    if probability_dtype == "float32":
        out["probability"] = np.where(valid, change_prob, np.nan).astype(np.float32)
    else:
        scaled = np.rint(np.clip(change_prob, 0, 1) * PROBABILITY_SCALE).astype(np.uint8)
        out["probability"] = np.where(valid, scaled, NODATA_U8).astype(np.uint8)
    out["change"] = np.where(valid, changed, NODATA_U8).astype(np.uint8)
    if classes:
        if labels is not None:
            pre, post = labels[0], labels[1]
        else:
            pre = probs[1 : 1 + classes].argmax(0)
            post = probs[1 + classes : 1 + 2 * classes].argmax(0)
        out["semantic_pre"] = np.where(valid, pre, NODATA_U8).astype(np.uint8)
        out["semantic_post"] = np.where(valid, post, NODATA_U8).astype(np.uint8)
        nodata, unchanged, dtype = _transition_codes(classes)
        code = pre.astype(np.int64) * classes + post
        trans = np.where(changed, code, unchanged)
        out["transition"] = np.where(valid, trans, nodata).astype(dtype)
    return out


def output_specs(
    out_dir: Path,
    classes: int,
    names: list[str],
    *,
    write_probability: bool,
    probability_dtype: str,
) -> list[OutputSpec]:
    """The rasters of a prediction into ``out_dir``: dtype, nodata, tags and colour tables."""
    specs: list[OutputSpec] = []
    if write_probability:
        is_float = probability_dtype == "float32"
        specs.append(
            OutputSpec(
                "probability",
                out_dir / PROBABILITY_FILE,
                "float32" if is_float else "uint8",
                float("nan") if is_float else NODATA_U8,
                "average",
                {PROBABILITY_SCALE_TAG: "1" if is_float else str(PROBABILITY_SCALE)},
            )
        )
    change_colors = {value: (*rgb, 255) for value, rgb in CHANGE_COLORS.items()}
    specs.append(
        OutputSpec(
            "change",
            out_dir / CHANGE_FILE,
            "uint8",
            NODATA_U8,
            "nearest",
            {CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES))},
            change_colors,
        )
    )
    if classes:
        specs += _semantic_specs(out_dir, classes, names)
    return specs


def _semantic_specs(out_dir: Path, classes: int, names: list[str]) -> list[OutputSpec]:
    """The class maps of both dates and the transition raster of a semantic model."""
    colours = class_colours(classes)
    cmap = {i: (*c, 255) for i, c in enumerate(colours)}
    tags = {CLASS_NAMES_TAG: json.dumps(names)}
    specs = [
        OutputSpec(key, out_dir / PREDICTION_FILES[key], "uint8", NODATA_U8, "nearest", tags, cmap)
        for key in ("semantic_pre", "semantic_post")
    ]
    nodata, unchanged, dtype = _transition_codes(classes)
    transition_names = {
        str(a * classes + b): f"{names[a]} -> {names[b]}"
        for a in range(classes)
        for b in range(classes)
    }
    transition_names[str(unchanged)] = "no change"
    # Colour a transition by its destination class.
    tmap = None
    if dtype == "uint8":
        tmap = {a * classes + b: (*colours[b], 255) for a in range(classes) for b in range(classes)}
        tmap[unchanged] = (0, 0, 0, 255)
    specs.append(
        OutputSpec(
            "transition",
            out_dir / TRANSITION_FILE,
            dtype,
            nodata,
            "nearest",
            {**tags, TRANSITION_NAMES_TAG: json.dumps(transition_names)},
            tmap,
        )
    )
    return specs

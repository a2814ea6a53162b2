"""geochange.pseudo: the package keeps every name the single module ``pseudo.py`` defined."""

from __future__ import annotations

import importlib

import pytest

import geochange.pseudo as pseudo

# Every public name ``geochange/pseudo.py`` defined or re-exported before it became a package.
OLD_NAMES = [
    "BoolArray", "CEGMode", "CLASS_NAMES_TAG", "ChangeScore", "DEFAULT_CLASS_NAMES",
    "DEFAULT_CONFIDENCE", "DEFAULT_CONFUSIONS", "DEFAULT_MIN_INSTANCE_AREA",
    "DEFAULT_OVERLAP_THRESHOLD", "FloatArray", "IntArray", "PSEUDO_LABELS_TAG",
    "PseudoLabelSummary", "change_event_generation", "change_event_generation_batch",
    "degrade_class_map", "evaluate_pseudo_labels", "generate_pseudo_labels",
    "resolve_change_classes", "score_change",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted({*OLD_NAMES, *pseudo.__all__}))
def test_old_and_exported_names_resolve(name: str) -> None:
    assert getattr(pseudo, name) is not None


def test_names_have_one_home() -> None:
    homes = {
        "change_event_generation": "ceg", "resolve_change_classes": "inputs",
        "generate_pseudo_labels": "scene", "ChangeScore": "scoring",
        "degrade_class_map": "degrade",
    }  # fmt: skip
    for name, module in homes.items():
        home = importlib.import_module(f"geochange.pseudo.{module}")
        assert getattr(pseudo, name) is getattr(home, name)
    assert pseudo.DEFAULT_MIN_INSTANCE_AREA == pseudo.DEFAULT_MIN_INSTANCE_PIXELS == 10

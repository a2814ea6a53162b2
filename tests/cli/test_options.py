"""The command-line options shared by ``geochange evaluate`` and ``geochange pseudo-labels``."""

from __future__ import annotations

import argparse

import pytest

from geochange.cli import _options
from geochange.cli import evaluate as evaluate_cli
from geochange.cli import pseudo_labels as pseudo_cli


def _parser(module: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


@pytest.mark.parametrize("module", [evaluate_cli, pseudo_cli], ids=["evaluate", "pseudo-labels"])
def test_mask_values_and_class_names_are_the_shared_options(module: object) -> None:
    parser = _parser(module)
    mask = _action(parser, "--mask-values")
    assert mask.choices == ["auto", "0,1", "0,255"] and mask.default == "auto"
    assert mask.metavar == "auto|0,1|0,255"
    assert "0,255 (255 = change, e.g. LEVIR-CD labels)" in (mask.help or "")
    assert (_action(parser, "--class-names").help or "").startswith(
        "comma-separated class names in id order ("
    )
    args = parser.parse_args(
        [*_required(module), "--mask-values", "0,255", "--class-names", "a, b"]
    )
    assert args.mask_values == "0,255" and args.class_names == "a, b"
    with pytest.raises(SystemExit):
        parser.parse_args([*_required(module), "--mask-values", "1,255"])


def _required(module: object) -> list[str]:
    if module is evaluate_cli:
        return ["--prediction", "p", "--out-dir", "r"]
    return ["--semantic-pre", "a", "--semantic-post", "b", "--out", "c"]


def test_evaluate_prediction_mask_values_is_the_same_option() -> None:
    parser = _parser(evaluate_cli)
    pred = _action(parser, "--prediction-mask-values")
    ref = _action(parser, "--mask-values")
    assert (pred.choices, pred.metavar, pred.default) == (ref.choices, ref.metavar, ref.default)
    assert "geochange's change.tif is always 0/1" in (pred.help or "")


def test_split_names() -> None:
    assert _options.split_names(None) is None
    assert _options.split_names("") is None
    assert _options.split_names(" new building, ,demolished building ") == [
        "new building",
        "demolished building",
    ]

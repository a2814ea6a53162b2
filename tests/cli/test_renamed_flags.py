"""The glossary's flag renames (docs/glossary.md): new spelling, old one for one release.

Every renamed flag is made by :func:`geochange.cli.add_renamed_option`: both spellings store
the same value, the old one warns on stderr, giving both is a usage error, and ``--help`` marks
the old one as deprecated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from geochange.cli import add_renamed_option, build_parser
from geochange.cli import main as cli_main

PREDICT = ["predict", "--checkpoint", "m.ckpt", "--pre", "a.tif", "--post", "b.tif"]
PREDICT_OUT = [*PREDICT, "--out-dir", "o"]
EVALUATE = ["evaluate", "--prediction", "p"]
PSEUDO = ["pseudo-labels", "--semantic-pre", "a.tif", "--semantic-post", "b.tif", "--out", "c"]

# (command, new, old, the other arguments, value given, the value parsed)
RENAMES = [
    ("predict", "--out-dir", "--out", PREDICT, "out/", Path("out/")),
    ("predict", "--num-workers", "--workers", PREDICT_OUT, "3", 3),
    ("predict", "--res", "--resolution", PREDICT_OUT, "0.5", 0.5),
    ("evaluate", "--out-dir", "--report", EVALUATE, "report/", "report/"),
    ("pseudo-labels", "--min-instance-pixels", "--min-instance-area", PSEUDO, "7", 7),
]
IDS = [f"{command}{new}" for command, new, *_ in RENAMES]


def _warning(command: str, new: str, old: str) -> str:
    return (
        f"geochange {command}: warning: {old} is deprecated and will be removed in the next "
        f"release; use {new}\n"
    )


@pytest.mark.parametrize(("command", "new", "old", "base", "given", "parsed"), RENAMES, ids=IDS)
def test_new_spelling_parses_silently(command, new, old, base, given, parsed, capsys) -> None:
    args = build_parser().parse_args([*base, new, given])
    dest = new.lstrip("-").replace("-", "_")
    assert getattr(args, dest) == parsed
    assert not hasattr(args, old.lstrip("-").replace("-", "_"))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("command", "new", "old", "base", "given", "parsed"), RENAMES, ids=IDS)
def test_old_spelling_still_works_and_warns(command, new, old, base, given, parsed, capsys) -> None:
    args = build_parser().parse_args([*base, old, given])
    assert getattr(args, new.lstrip("-").replace("-", "_")) == parsed
    assert capsys.readouterr().err == _warning(command, new, old)


@pytest.mark.parametrize(("command", "new", "old", "base", "given", "parsed"), RENAMES, ids=IDS)
def test_both_spellings_are_a_usage_error(command, new, old, base, given, parsed, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*base, new, given, old, given])
    assert exit_info.value.code == 2
    assert f"give {new} or its deprecated spelling {old}, not both" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "new", "old", "base", "given", "parsed"), RENAMES, ids=IDS)
def test_help_marks_the_old_spelling(command, new, old, base, given, parsed, capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert f"{new} {new.lstrip('-').replace('-', '_').upper()}, {old}" in shown
    assert f"({old}: deprecated spelling)" in shown


def test_a_parser_reused_for_two_parses_does_not_see_both_spellings(capsys) -> None:
    parser = argparse.ArgumentParser(prog="geochange x")
    add_renamed_option(parser, "--out-dir", "--out")
    assert parser.parse_args(["--out", "a"]).out_dir == "a"
    assert parser.parse_args(["--out-dir", "b"]).out_dir == "b"
    assert parser.parse_args(["--out-dir", "c", "--out-dir", "d"]).out_dir == "d"
    assert capsys.readouterr().err == _warning("x", "--out-dir", "--out")


@pytest.mark.parametrize("flag", ["--num-workers", "--workers"])
def test_predict_passes_the_reader_count_to_the_predictor(flag, monkeypatch, tmp_path) -> None:
    """The renamed predict flags reach the predictor, whichever spelling was used."""
    import geochange.predict

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def from_checkpoint(path, **overrides):
        seen.update(overrides, path=path)
        raise Stop

    monkeypatch.setattr(geochange.predict.ChangePredictor, "from_checkpoint", from_checkpoint)
    with pytest.raises(Stop):
        cli_main([*PREDICT[:-4], "--pre", "a", "--post", "b", "--out", str(tmp_path / "o"),
                  flag, "2", "--quiet"])  # fmt: skip
    assert seen["num_workers"] == 2 and seen["path"] == "m.ckpt"


def _deprecated_spellings() -> dict[str, set[str]]:
    """Subcommand -> the old spellings of its renamed flags."""
    from geochange.cli import _RenamedOption

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return {
        name: {a.option_strings[-1] for a in sub._actions if isinstance(a, _RenamedOption)}
        for name, sub in subparsers.choices.items()
    }


def test_docs_show_no_deprecated_spelling() -> None:
    """README.md and docs/ teach the new spellings (help blocks list both, as argparse does)."""
    from tests.cli.docs_commands import _tokens, invocations

    old = _deprecated_spellings()
    found = [
        f"{i.source}: {option}"
        for i in invocations()
        for option in {t.split("=", 1)[0] for t in _tokens(i.text)} & old.get(i.command, set())
    ]
    assert not found, "deprecated flag spellings in the docs:\n" + "\n".join(found)

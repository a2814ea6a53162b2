"""Tests of ``geochange synth`` (geochange/cli/synth.py)."""

from __future__ import annotations

import pytest

from geochange.synthetic import Scene


def test_cli_writes_a_scene(tmp_path, capsys) -> None:
    from geochange.cli import main

    out = tmp_path / "cli"
    argv = ["synth", str(out), "--size", "200x300", "--seed", "3", "--res", "0.5", "--quiet"]
    assert main(argv) == 0
    assert "Mpixel/s" in capsys.readouterr().out
    scene = Scene.load(out)
    assert (scene.height, scene.width, scene.res, scene.seed) == (200, 300, 0.5, 3)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(out), "--size", "20O0x3"])
    assert exit_info.value.code == 2 and "HEIGHTxWIDTH" in capsys.readouterr().err
    # Library errors become a clean message and exit code 1.
    assert main(["synth", str(tmp_path / "bad"), "--size", "64x64", "--bands", "2"]) == 1
    assert "bands" in capsys.readouterr().err


def test_cli_realism_flag(tmp_path, capsys) -> None:
    from geochange.cli import main
    from geochange.synthetic import PRESETS

    base = ["--size", "256x256", "--seed", "2", "--quiet"]
    assert main(["synth", str(tmp_path / "levir"), *base, "--realism", "levir"]) == 0
    assert Scene.load(tmp_path / "levir").realism == PRESETS["levir"].to_dict()
    assert main(["synth", str(tmp_path / "lean"), *base, "--realism", "lean"]) == 0
    assert Scene.load(tmp_path / "lean").realism == {"lean": PRESETS["levir"].to_dict()["lean"]}
    assert main(["synth", str(tmp_path / "none"), *base, "--realism", "none"]) == 0
    assert Scene.load(tmp_path / "none").realism == {}
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "bad"), *base, "--realism", "urban"]) == 1
    assert "unknown realism 'urban'" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "scene.json").exists()

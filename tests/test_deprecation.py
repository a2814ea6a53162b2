"""Tests of :mod:`geochange._deprecation` (renamed arguments, one release of grace)."""

from __future__ import annotations

import warnings

import pytest

from geochange._deprecation import renamed_argument
from geochange.errors import ConfigurationError


def save(out_dir: str | None = None, *, directory: str | None = None) -> str | None:
    return renamed_argument(out_dir, directory, old="directory", new="out_dir", where="save")


def count(pixels: int = 10, *, area: int | None = None) -> int:
    return renamed_argument(
        pixels, area, old="area", new="pixels", default=10, reason="it counts pixels",
        error=ConfigurationError,
    )  # fmt: skip


def _wrapper(directory: str) -> str | None:
    return renamed_argument(None, directory, old="directory", new="out_dir", stacklevel=3)


def public(directory: str) -> str | None:
    return _wrapper(directory)


def test_new_name_passes_through_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save("a") == "a"
        assert save() is None
        assert count(3) == 3


def test_old_name_warns_at_the_callers_line_and_gives_its_value() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"save\(directory=\.\.\.\) is deprecated, use out_dir"
    ) as caught:
        assert save(directory="b") == "b"
    assert len(caught) == 1 and caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match=r"area=\.\.\. is deprecated.*\(it counts pixels\)"):
        assert count(area=4) == 4


def test_stacklevel_skips_private_wrappers() -> None:
    with pytest.warns(DeprecationWarning, match="out_dir") as caught:
        assert public("c") == "c"
    assert caught[0].filename == __file__
    assert caught[0].lineno != _wrapper.__code__.co_firstlineno + 1


def test_both_names_with_different_values_are_refused() -> None:
    # The old name was used: it warns first, then the disagreement is refused.
    with (
        pytest.warns(DeprecationWarning, match="directory"),
        pytest.raises(
            TypeError,
            match=r"save\(\) got both 'out_dir' and its deprecated name 'directory', "
            r"which disagree \('a' vs 'b'\)",
        ),
    ):
        save("a", directory="b")
    with (
        pytest.warns(DeprecationWarning, match="area"),
        pytest.raises(ConfigurationError, match=r"disagree \(3 vs 4\): give 'pixels' only"),
    ):
        count(3, area=4)


def test_both_names_with_the_same_value_or_the_default_only_warn() -> None:
    with pytest.warns(DeprecationWarning):
        assert save("a", directory="a") == "a"
    with pytest.warns(DeprecationWarning):
        assert count(10, area=4) == 4  # 10 is the default: the new name was not given


def strict(res: float | None = None, *, resolution: float | None = None) -> float | None:
    return renamed_argument(
        res, resolution, old="resolution", new="res", message="resolution is now res",
        conflict="res={value} / resolution={old_value}: not both", refuse_both=True,
        error=ConfigurationError,
    )  # fmt: skip


def test_own_messages_and_refusing_both_names() -> None:
    with pytest.warns(DeprecationWarning, match="^resolution is now res$") as caught:
        assert strict(resolution=2.0) == 2.0
    assert caught[0].filename == __file__
    assert strict(3.0) == 3.0
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match=r"^res=2\.0 / resolution=2\.0: not both$"),
    ):
        strict(2.0, resolution=2.0)  # refused even though they agree
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="'res' and its"):
        renamed_argument(1, 1, old="resolution", new="res", where="f", refuse_both=True)

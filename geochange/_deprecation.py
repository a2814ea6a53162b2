"""Deprecation helpers: accept a renamed argument under its old name for one release.

Use :func:`renamed_argument` in every public function whose argument was renamed (see
docs/glossary.md), so old names warn, and conflict, the same way everywhere.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["renamed_argument"]


def renamed_argument[T](
    value: T,
    old_value: T | None,
    *,
    old: str,
    new: str,
    where: str | None = None,
    default: Any = None,
    reason: str = "",
    error: type[Exception] = TypeError,
    stacklevel: int = 2,
    message: str | None = None,
    conflict: str | None = None,
    refuse_both: bool = False,
) -> T:
    """The value of a renamed argument, taking its old name for one release.

    Give the renamed argument the default ``None`` under its old name, then resolve both
    spellings in one line at the top of the function::

        def save(out_dir=None, *, directory=None):
            out_dir = renamed_argument(out_dir, directory, old="directory", new="out_dir",
                                       where="save")

    Args:
        value: what the caller passed under the new name (``default`` when not passed).
        old_value: what the caller passed under the old name; ``None`` when not passed.
        old: the old argument name.
        new: the new argument name.
        where: the public function's name, for the messages (``"EvaluationReport.save"``).
        default: the new argument's default: a ``value`` equal to it counts as not passed.
        reason: why it was renamed, appended to the warning (``"it counts pixels"``).
        error: exception class raised when both names are given with different values.
        stacklevel: as in :func:`warnings.warn`, counted from the function that calls this
            helper: ``2`` (default) points the warning at the line calling that function;
            add one per private wrapper in between.
        message: the warning's text instead of the standard one (for a message that users
            already know from an older release).
        conflict: the error's text instead of the standard one; ``{value}`` and
            ``{old_value}`` are replaced by the two values.
        refuse_both: refuse both names even when they agree (for a rename whose error users
            already know from an older release).

    Returns:
        ``value`` when the old name was not used, else ``old_value`` (after a
        ``DeprecationWarning``).

    Raises:
        error: if both names were given (``value`` is not ``default``) with different values
            (or at all, with ``refuse_both``); after the warning, as the old name was used.
    """
    if old_value is None:
        return value
    call = f"{where}()" if where else "the call"
    if message is None:
        prefix = f"{where}({old}=...)" if where else f"{old}=..."
        message = f"{prefix} is deprecated, use {new}=...; {old!r} goes in the next release"
        if reason:
            message += f" ({reason})"
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel + 1)
    if value is not default and value != default and (refuse_both or value != old_value):
        if conflict is not None:
            raise error(conflict.format(value=value, old_value=old_value))
        if value == old_value:
            raise error(f"{call} got both {new!r} and its deprecated name {old!r}: not both")
        raise error(
            f"{call} got both {new!r} and its deprecated name {old!r}, which disagree"
            f" ({value!r} vs {old_value!r}): give {new!r} only"
        )
    return old_value

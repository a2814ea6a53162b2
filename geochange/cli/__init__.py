"""The ``geochange`` command line.

``geochange fit|validate|test`` are LightningCLI commands (see :mod:`geochange.cli.lightning`);
every other subcommand lives in its own module of this package exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run`` so the
command line starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from geochange.errors import GeochangeError

#: Subcommand name -> module implementing it.
SUBCOMMANDS: dict[str, str] = {
    "demo": "geochange.cli.demo",
    "synth": "geochange.cli.synth",
    "predict": "geochange.cli.predict",
    "vectorize": "geochange.cli.vectorize",
    "evaluate": "geochange.cli.evaluate",
    "pseudo-labels": "geochange.cli.pseudo_labels",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test")


class _RenamedOption(argparse.Action):
    """A store action whose last option string is a deprecated spelling: using it warns."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        new, old = self.option_strings[0], self.option_strings[-1]
        # Which spellings this parse has seen, kept on the namespace (the parser may be reused).
        seen = f"_spelling_of_{self.dest}"
        if getattr(namespace, seen, option_string) != option_string:
            parser.error(f"give {new} or its deprecated spelling {old}, not both")
        setattr(namespace, seen, option_string)
        if option_string == old:
            # On stderr, like every other CLI message: a DeprecationWarning is hidden by default.
            print(
                f"{parser.prog}: warning: {old} is deprecated and will be removed in "
                f"the next release; use {new}",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)


def add_renamed_option(
    parser: argparse.ArgumentParser, new: str, old: str, **kwargs: Any
) -> argparse.Action:
    """Add the option ``new`` that still accepts its old spelling ``old`` for one release.

    The old spelling works as before, prints a deprecation warning on stderr and is marked
    deprecated in ``--help``; giving both spellings is a usage error. Used for the flag renames
    of docs/glossary.md.

    Args:
        parser: The (sub)command's parser.
        new: The glossary's spelling, e.g. ``"--out-dir"``.
        old: The deprecated spelling, e.g. ``"--out"``.
        **kwargs: ``add_argument`` keyword arguments of a storing option (``type``,
            ``default``, ``required``, ``help``, ...).

    Returns:
        The argparse action.
    """
    kwargs["help"] = f"{kwargs.get('help', '')} ({old}: deprecated spelling)".lstrip()
    kwargs.setdefault("dest", new.lstrip("-").replace("-", "_"))
    return parser.add_argument(new, old, action=_RenamedOption, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with one subparser per available subcommand."""
    parser = argparse.ArgumentParser(
        prog="geochange",
        description="Bi-temporal change detection over very large georeferenced scenes.",
        epilog="fit | validate | test --config CONFIG.yaml: training through LightningCLI.",
    )
    from geochange import __version__

    parser.add_argument("--version", action="version", version=f"geochange {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def _warning_printer(command: str) -> Any:
    """A ``warnings.showwarning`` that prints ``geochange COMMAND: warning: MESSAGE``."""
    default = warnings.showwarning

    def show(message: Any, category: Any, filename: Any, lineno: Any, *rest: Any) -> None:
        if issubclass(category, DeprecationWarning | PendingDeprecationWarning):
            default(message, category, filename, lineno, *rest)  # for developers, as usual
            return
        print(f"geochange {command}: warning: {message}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in LIGHTNING_COMMANDS:
        from geochange.cli.lightning import main as lightning_main

        lightning_main(args_list)
        return 0
    parser = build_parser()
    args = parser.parse_args(args_list)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            # A warning is news for the user about their data, not about a source line.
            warnings.showwarning = _warning_printer(args.command)
            return int(args._run(args) or 0)
    except GeochangeError as err:
        print(f"geochange {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        # Safety net: an I/O error that no boundary named (GDAL's included) is still the user's
        # file or disk, not a bug report; say what failed instead of printing a traceback.
        from geochange.io import error_detail

        print(f"geochange {args.command}: error: {error_detail(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Find the ``geochange`` command lines shown in README.md and docs/**/*.md.

Every documented invocation is reduced to its *combination*: the subcommand and the set of
options it uses (values do not matter). Rules, so that any docs addition is picked up:

* Commands are looked for in fenced code blocks (any language) and in inline code spans. A
  command is a line that, after an optional ``$`` prompt, starts with ``geochange SUBCOMMAND``
  or ``python -m geochange SUBCOMMAND``; backslash continuations are joined and ``# comments``
  dropped. An inline span counts only when it uses at least one option (```geochange synth```
  alone names the command, it does not run it).
* ``[...]`` groups are optional: the invocation gives its combination without them and its
  combination with all of them.
* ``...`` stands for the options of the previous complete (``...``-free) invocation of the same
  subcommand in the same file, or, when there is none, for the subcommand's required options.
* ``geochange fit | validate | test --config X`` gives one combination per alternative.
* ``--opt=value`` uses ``--opt``; short options count as their long form.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from geochange.cli import LIGHTNING_COMMANDS, SUBCOMMANDS, build_parser

REPO = Path(__file__).parents[2]
SUBCOMMAND_NAMES = (*SUBCOMMANDS, *LIGHTNING_COMMANDS)

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_START = re.compile(
    r"^(?:\$\s+)?(?:python3? -m )?geochange\s+((?:[a-z-]+\s*\|\s*)*[a-z-]+)(?=\s|$)(.*)$"
)
_OPTION = re.compile(r"^--?[A-Za-z]")
_GROUP = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Invocation:
    """One documented command line and the combinations it stands for."""

    source: str  # "docs/vectorize.md:37"
    text: str
    command: str
    combinations: tuple[frozenset[str], ...]


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _code_lines(text: str) -> list[tuple[int, str, bool]]:
    """(line number, candidate command text, inline?) of fenced code lines and inline spans."""
    out: list[tuple[int, str, bool]] = []
    fence: str | None = None
    pending = ""
    pending_line = 0
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                continue
            out.extend((number, span, True) for span in _INLINE.findall(line))
            continue
        if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
            fence = None
            pending = ""
            continue
        stripped = line.strip()
        if not pending:
            pending_line = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append((pending_line, pending + stripped, False))
        pending = ""
    return out


@cache
def _canonical_options() -> dict[str, dict[str, str]]:
    """Option string -> its canonical (long) form, for every argparse subcommand."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    result: dict[str, dict[str, str]] = {}
    for name, sub in subparsers.choices.items():
        mapping: dict[str, str] = {}
        for action in sub._actions:
            if action.option_strings:
                long = _canonical(action.option_strings)
                mapping.update({opt: long for opt in action.option_strings})
        result[name] = mapping
    return result


def required_options(command: str) -> frozenset[str]:
    """The options an argparse subcommand cannot run without (none for LightningCLI)."""
    if command in LIGHTNING_COMMANDS:
        return frozenset()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    sub = subparsers.choices[command]
    return frozenset(
        _canonical(a.option_strings) for a in sub._actions if a.option_strings and a.required
    )


def _canonical(option_strings: list[str]) -> str:
    """The long form of an option: the first ``--`` spelling (a renamed flag's new name)."""
    return next((o for o in option_strings if o.startswith("--")), max(option_strings, key=len))


def options_of(command: str, tokens: list[str]) -> frozenset[str]:
    """The set of options in ``tokens`` (``--opt=value`` -> ``--opt``), in canonical form."""
    mapping = _canonical_options().get(command, {})
    found = set()
    for token in tokens:
        if _OPTION.match(token):
            option = token.split("=", 1)[0]
            found.add(mapping.get(option, option))
    return frozenset(found)


def combination(argv: list[str]) -> tuple[str, frozenset[str]]:
    """(subcommand, options) of an argument list starting with the subcommand."""
    return argv[0], options_of(argv[0], argv[1:])


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # unbalanced quotes in prose: keep what is there
        return text.split()


def parse_invocations(text: str, source: str) -> list[Invocation]:
    """The invocations shown in one Markdown text, in order (``source`` names the file)."""
    found: list[Invocation] = []
    previous: dict[str, frozenset[str]] = {}
    for number, candidate, inline in _code_lines(text):
        match = _START.match(candidate.strip())
        if match is None:
            continue
        commands = [c.strip() for c in match.group(1).split("|")]
        if not all(c in SUBCOMMAND_NAMES for c in commands):
            continue
        rest = match.group(2)
        optional = _tokens(" ".join(_GROUP.findall(rest)))
        base = _tokens(_GROUP.sub(" ", rest))
        if inline and not any(_OPTION.match(t) for t in base + optional):
            continue
        for command in commands:
            options = options_of(command, base)
            if "..." in base:
                options |= previous.get(command, required_options(command))
            else:
                previous[command] = options
            combos = [options]
            if optional:
                combos.append(options | options_of(command, optional))
            found.append(
                Invocation(
                    source=f"{source}:{number}",
                    text=candidate.strip(),
                    command=command,
                    combinations=tuple(combos),
                )
            )
    return found


def invocations() -> list[Invocation]:
    """Every documented invocation, file by file."""
    return [
        invocation
        for path in doc_files()
        for invocation in parse_invocations(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO))
        )
    ]


def documented_combinations() -> dict[tuple[str, frozenset[str]], list[str]]:
    """(subcommand, options) -> where the docs show it."""
    result: dict[tuple[str, frozenset[str]], list[str]] = {}
    for invocation in invocations():
        for options in invocation.combinations:
            result.setdefault((invocation.command, options), []).append(invocation.source)
    return result


def documented_help() -> list[tuple[str, str, str]]:
    """(source, subcommand, shown output) of every ``$ geochange CMD --help`` console block."""
    shown: list[tuple[str, str, str]] = []
    for path in doc_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^\$ (?:python3? -m )?geochange ([a-z-]+) --help\s*$", line.strip())
            if match is None:
                continue
            body = []
            for following in lines[i + 1 :]:
                if _FENCE.match(following) or following.startswith("$ "):
                    break
                body.append(following)
            shown.append((f"{path.relative_to(REPO)}:{i + 1}", match.group(1), "\n".join(body)))
    return shown

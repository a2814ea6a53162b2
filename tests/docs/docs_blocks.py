"""Extract and run the fenced code blocks of README.md and docs/**/*.md, as a reader would.

The docs are tests: every ``python``, ``bash``/``sh`` and ``console`` block runs, in page order,
in one fresh working directory per page, so a later block sees the names and files of earlier
ones. Python blocks share one namespace per page; shell blocks run with ``bash -euo pipefail``
with the project's virtual environment first on ``PATH`` (so ``python`` and ``geochange`` are
the installed ones). The working directory holds links to the repository's ``examples/`` and
``benchmarks/`` and ``.ci/`` and a ``../shared`` beside it, as in a clone (its ``.ci/venv``
only checks that ``.venv`` exists: the tests already run in that environment, and a reinstall
from the temporary folder would break it).

Markers, written as HTML comments (invisible in the rendered page) on the lines just above a
fence:

- ``<!-- docs-test: skip REASON -->``: the block is not run; the test report lists it as
  skipped with REASON. Only for what CI cannot do (a GPU, hours of compute, your own files).
- ``<!-- docs-test: skip-line COMMAND -- REASON -->``: the shell lines that start with COMMAND
  are not run (reported as skipped with REASON), nor the lines continuing them after a
  trailing backslash; the rest of the block runs.

Budgets shrink only through the documented environment variables set by :data:`BUDGET_ENV`
(see docs/index.md, "The docs are tests"): Lightning reads ``PL_TRAINER_*`` as defaults for
every ``Trainer`` argument a script does not set, and geochange's LightningCLI reads
``PL_FIT__TRAINER__*``. The text the reader sees is what runs.

Blocks that include a file (``--8<-- "examples/x.py"``) show a script that tests/examples runs;
``text`` blocks are output and ``yaml`` blocks with a ``title`` must equal the file they name.

Run ``python tests/docs/docs_blocks.py list`` for the table of every block and how it is run,
``python tests/docs/docs_blocks.py run PAGE.md WORKDIR`` to run one page by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell",
                 "console": "shell", "shell": "shell"}  # fmt: skip
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)(?P<info>.*)$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<verb>[\w-]+)\s*(?P<arg>.*?)\s*-->")
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^"]+)"\s*$')

#: The documented budget mechanism (docs/index.md): Lightning's own environment defaults.
BUDGET_ENV = {
    "PL_TRAINER_MAX_STEPS": "4",  # stops a max_epochs=N loop after 4 optimizer steps
    "PL_TRAINER_LIMIT_TRAIN_BATCHES": "2",
    "PL_TRAINER_LIMIT_VAL_BATCHES": "2",
    "PL_TRAINER_LIMIT_TEST_BATCHES": "2",
    "JSONARGPARSE_DEFAULT_ENV": "true",  # LightningCLI reads PL_FIT__TRAINER__* too
    "PL_FIT__TRAINER__MAX_STEPS": "4",
    "PL_FIT__TRAINER__LIMIT_TRAIN_BATCHES": "2",
    "PL_FIT__TRAINER__LIMIT_VAL_BATCHES": "2",
}


@dataclass
class Block:
    """One fenced block of a Markdown page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    info: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)
    skipped_lines: dict[str, str] = field(default_factory=dict)  # command prefix -> reason

    @property
    def kind(self) -> str:
        """``python``, ``shell``, ``include``, ``file`` (yaml with a title) or ``static``."""
        if all(INCLUDE.match(line) for line in self.code.splitlines() if line.strip()):
            if self.code.strip():
                return "include"
        if self.lang in RUN_LANGUAGES:
            return RUN_LANGUAGES[self.lang]
        if self.lang == "yaml" and "title=" in self.info:
            return "file"
        return "static"

    @property
    def where(self) -> str:
        """``page.md:LINE`` relative to the repository."""
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        """The reason of a ``docs-test: skip`` marker, if any."""
        return self.markers.get("skip")


def pages() -> list[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def parse(page: Path) -> list[Block]:
    """All fenced blocks of ``page`` with the markers written just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            text = lines[i]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            i += 1
        markers: dict[str, str] = {}
        skipped_lines: dict[str, str] = {}
        j = start - 1
        while j >= 0 and (not lines[j].strip() or MARKER.search(lines[j])):
            for marker in MARKER.finditer(lines[j]):
                if marker["verb"] == "skip-line":
                    command, _, reason = marker["arg"].partition(" -- ")
                    skipped_lines[command.strip()] = reason.strip()
                else:
                    markers.setdefault(marker["verb"], marker["arg"])
            j -= 1
        blocks.append(
            Block(
                page,
                start + 1,
                match["lang"].lower(),
                match["info"].strip(),
                "\n".join(body) + "\n",
                markers,
                skipped_lines,
            )
        )
        i += 1
    return blocks


def command_lines(block: Block) -> list[str]:
    """A shell block's command lines: its ``$ ``-prompted lines without the prompt, else all."""
    lines = block.code.splitlines()
    prompted = [line[2:] for line in lines if line.startswith("$ ")]
    return prompted or lines


def shell_commands(block: Block) -> str:
    """The shell text to run: :func:`command_lines` less the ``skip-line`` ones.

    A skipped line that ends with a backslash takes its continuation lines with it.
    """
    kept: list[str] = []
    continued = False  # the previous line was skipped and ends with a backslash
    for line in command_lines(block):
        skipped = continued or any(line.startswith(c) for c in block.skipped_lines)
        continued = skipped and line.rstrip().endswith("\\")
        if not skipped:
            kept.append(line)
    return "\n".join(kept) + "\n"


def prepare_workdir(workdir: Path) -> None:
    """A fresh working directory laid out like a clone: examples/, .ci/, .venv, ../shared."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("examples", "benchmarks", "pyproject.toml"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(REPO / name)
    if not (workdir / ".venv").exists():  # the environment running the tests, wherever it lives
        (workdir / ".venv").symlink_to(Path(sys.prefix))
    # .ci/ scripts as in the clone, except .ci/venv: the tests already run in the environment,
    # and an install from this temporary folder would re-point its editable geochange here.
    ci = workdir / ".ci"
    if not ci.exists():
        ci.mkdir()
        for script in (REPO / ".ci").iterdir():
            if script.name != "venv":
                (ci / script.name).symlink_to(script)
        (ci / "venv").write_text(
            "#!/usr/bin/env bash\n# docs tests: the environment running the tests is the venv\n"
            '[ -x .venv/bin/python ] || { echo "no .venv" >&2; exit 1; }\n'
        )
    shared = REPO.parent / "shared"
    beside = workdir.parent / "shared"
    if shared.exists() and not beside.exists():
        beside.symlink_to(shared)


def run_environment() -> dict[str, str]:
    """The environment of the blocks: venv first on PATH, this checkout importable, budgets."""
    env = {**os.environ, **BUDGET_ENV, "MPLBACKEND": "Agg"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_page(page: Path, workdir: Path) -> int:
    """Run every runnable, unskipped block of ``page`` in order; 0 when all pass."""
    prepare_workdir(workdir)
    os.chdir(workdir)
    env = run_environment()
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in parse(page):
        if block.kind not in ("python", "shell") or block.skip_reason is not None:
            continue
        print(f"\n>> {block.where} ({block.kind})", flush=True)
        began = time.perf_counter()
        if block.kind == "python":
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except BaseException:  # report which block failed, then fail the page
                traceback.print_exc()
                print(f"FAILED {block.where}:\n{block.code}", flush=True)
                return 1
        else:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", shell_commands(block)], cwd=workdir, env=env,
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                print(f"FAILED {block.where} (exit {done.returncode}):\n{block.code}", flush=True)
                return 1
        print(f"<< {block.where} {time.perf_counter() - began:.1f} s", flush=True)
    return 0


def describe(block: Block) -> str:
    """How the docs tests handle ``block`` (one line of the ``list`` table)."""
    if block.skip_reason is not None:
        return f"skipped: {block.skip_reason}"
    if block.skipped_lines:
        lines = "; ".join(f"{c!r} skipped: {r}" for c, r in block.skipped_lines.items())
        return f"executed (bash) except {lines}"
    return {
        "python": "executed (python, page namespace)",
        "shell": "executed (bash)",
        "include": "shows a file that tests/examples runs; checked to exist",
        "file": "compared with the file it names",
        "static": "not code (output or illustration)",
    }[block.kind]


def main(argv: list[str]) -> int:
    """``list`` or ``run PAGE WORKDIR``."""
    if argv[:1] == ["list"]:
        for page in pages():
            for block in parse(page):
                print(f"{block.where}\t{block.lang or '-'}\t{describe(block)}")
        return 0
    if argv[:1] == ["run"] and len(argv) == 3:
        return run_page(Path(argv[1]).resolve(), Path(argv[2]).resolve())
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

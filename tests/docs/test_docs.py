"""The docs are tests: every code block of README.md and docs/ runs as the reader sees it.

One test per page runs its blocks in order in a fresh interpreter and working directory
(:mod:`docs_blocks`); each block marked ``<!-- docs-test: skip REASON -->`` is reported as a
skipped test with its reason. ``python tests/docs/docs_blocks.py list`` prints every block and
how it is handled.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.docs_blocks import REPO, Block, command_lines, pages, parse, shell_commands

PAGE_TIMEOUT_S = 1500

PAGES = [page for page in pages() if any(b.kind in ("python", "shell") for b in parse(page))]
SKIPPED = [b for page in pages() for b in parse(page) if b.skip_reason is not None]
SKIPPED_LINES = [
    (b, c, r) for page in pages() for b in parse(page) for c, r in b.skipped_lines.items()
]
INCLUDES = [b for page in pages() for b in parse(page) if b.kind == "include"]
FILES = [b for page in pages() for b in parse(page) if b.kind == "file"]


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_runs(page: Path, tmp_path: Path) -> None:
    """Every runnable block of the page, in order, exits cleanly."""
    runnable = [b for b in parse(page) if b.kind in ("python", "shell") and not b.skip_reason]
    if not runnable:
        pytest.skip("every block of this page is marked skip")
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("docs_blocks.py")),
            "run",
            str(page),
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=PAGE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


@pytest.mark.parametrize("block", SKIPPED, ids=lambda b: b.where)
def test_marked_block(block: Block) -> None:
    """A block the page marks as not runnable in CI is reported as skipped, with its reason."""
    assert block.skip_reason, f"{block.where}: a skip marker needs a reason"
    pytest.skip(block.skip_reason)


@pytest.mark.parametrize(
    ("block", "command", "reason"),
    SKIPPED_LINES,
    ids=[f"{b.where}:{c}" for b, c, _ in SKIPPED_LINES],
)
def test_marked_line(block: Block, command: str, reason: str) -> None:
    """A command line marked as not runnable here is reported as skipped, with its reason."""
    assert reason, f"{block.where}: a skip-line marker needs a reason"
    assert any(line.startswith(command) for line in command_lines(block)), (
        f"{block.where}: no line starts with {command!r}"
    )
    pytest.skip(f"{command}: {reason}")


@pytest.mark.parametrize("block", INCLUDES, ids=lambda b: b.where)
def test_included_file_is_tested(block: Block) -> None:
    """A block that shows a script names a file that exists and that a test runs."""
    from tests.docs.docs_blocks import INCLUDE

    for line in block.code.splitlines():
        match = INCLUDE.match(line)
        if match is None:
            continue
        path = REPO / match["path"]
        assert path.is_file(), f"{block.where}: {path} does not exist"
        tests = "".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
        assert path.stem in tests, f"{block.where}: no test runs {match['path']}"


@pytest.mark.parametrize("block", FILES, ids=lambda b: b.where)
def test_file_block_matches(block: Block) -> None:
    """A ``yaml title="path"`` block shows that file as it is."""
    name = block.info.split("title=", 1)[1].strip().strip("\"'")
    assert block.code.strip() == (REPO / name).read_text().strip(), (
        f"{block.where}: the block differs from {name}"
    )


def test_skip_line_takes_its_continuation_lines(tmp_path: Path) -> None:
    """A skipped command continued with backslashes is skipped whole; the next command runs."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- docs-test: skip-line python run.py --root -- your own data -->\n"
        "```bash\n"
        "python run.py\n"
        "python run.py --root /data \\\n"
        "    --epochs 200 \\\n"
        "    --batch-size 8\n"
        "echo done\n"
        "```\n"
    )
    (block,) = parse(page)
    assert block.skipped_lines == {"python run.py --root": "your own data"}
    assert shell_commands(block) == "python run.py\necho done\n"

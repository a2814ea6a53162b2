"""The layout rules of docs/architecture.md: small modules, short functions, no upward imports.

They keep the package navigable; a failure names the file and what to split.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "geochange"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _modules(part: str) -> list[Path]:
    root = PACKAGE / part
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


# One case per top-level module or subpackage, so `-k vectorize` checks one part.
PARTS = sorted(
    p.stem if p.suffix == ".py" else p.name
    for p in PACKAGE.iterdir()
    if (p.suffix == ".py" or (p / "__init__.py").exists())
)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function body without its docstring."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            body = body[1:]
    if not body:
        return 0
    end = max(getattr(n, "end_lineno", n.lineno) or n.lineno for n in body)
    return end - body[0].lineno + 1


@pytest.mark.parametrize("part", PARTS)
def test_modules_are_small(part: str) -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in _modules(part)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them): {long}"


@pytest.mark.parametrize("part", PARTS)
def test_functions_are_short(part: str) -> None:
    long: dict[str, int] = {}
    for path in _modules(part):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = _body_lines(node)
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"] = n
    assert not long, f"function bodies over {MAX_FUNCTION_LINES} lines (name the phases): {long}"


@pytest.mark.parametrize(
    "module",
    [
        "geochange.predict",
        "geochange.vectorize",
        "geochange.evaluate",
        "geochange.checkpoint",
        "geochange.io",
        "geochange.losses",
        "geochange.transforms",
        "geochange.synthetic",
    ],
)
def test_inference_and_plumbing_do_not_import_lightning(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'lightning', 'pytorch_lightning'} "
        "or m.startswith(('geochange.trainers', 'geochange.cli')))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    found = f"{result.stdout.strip()} {result.stderr[-500:]}"
    assert result.returncode == 0, f"{module} imports {found}"

"""The code's shape as checked rules: the layering contracts (import-linter, configured in
pyproject.toml) hold and fail when broken; no module or function outgrows what one reader takes in."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "whisperft"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under `root` (its pyproject.toml holds the contracts)."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail(f"{lint} missing: `make setup` installs import-linter (the dev extra)")
    env = {**os.environ, "PYTHONPATH": str(root)}  # this copy of the package, not the installed one
    return subprocess.run([str(lint), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


def test_layering_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " BROKEN" not in result.stdout and "KEPT" in result.stdout


@pytest.mark.parametrize("module, added, contract", [
    ("subtitles.py", "import torch", "imports no torch"),
    ("report.py", "import torch", "HTML pages import no torch"),
    ("metrics.py", "from . import cli", "never imports the command line"),
    ("data.py", "from . import train", "data layer knows no trainer"),
    ("models.py", "from . import data", "Model I/O knows no training loop"),
    ("tokens.py", "from . import windows", "No two modules import each other"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, added, contract):
    """Each rule bites: one forbidden import added to a copy of the package fails lint-imports."""
    shutil.copytree(PACKAGE, tmp_path / "whisperft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "whisperft" / module
    path.write_text(path.read_text() + f"\n{added}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken) or contract in result.stdout.split("Broken contracts")[-1], \
        result.stdout[-3000:]


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_module_or_function_outgrows_a_reading():
    too_long = []
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {lines} lines")
        for fn in _functions(ast.parse(source)):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_FUNCTION_LINES:
                too_long.append(f"{path.name}:{fn.lineno} {fn.name}: {length} lines")
    assert not too_long, f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {too_long}"

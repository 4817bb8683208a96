"""Imports run one way: gateway -> ensemble -> backends; bench and evals import down only.

Read from the source with ``ast`` (every import, also those inside functions), so a cycle or an
upward import fails here before it fails anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "backends": {"backends"},
    "ensemble": {"ensemble", "backends"},
    "gateway": {"gateway", "ensemble", "backends"},
    "bench": {"bench", "gateway", "ensemble", "backends"},
    "evals": {"evals", "ensemble", "backends"},
}


def _imports(path: Path) -> set[str]:
    """The project packages a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_below_itself(package: str) -> None:
    upward = {
        str(path.relative_to(ROOT)): sorted(_imports(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in upward.items() if v} == {}

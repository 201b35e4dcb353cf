"""The apps' layers, read from their imports (at the top of a module or inside a function):
orgs at the bottom, presence above it, the integrations above presence; nothing imports upwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
ABOVE = {"orgs": ("presence", "integrations"), "presence": ("integrations",)}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("app", sorted(ABOVE))
def test_an_app_imports_nothing_of_the_apps_above_it(app):
    upward = sorted(
        f"{path.relative_to(PROJECT_DIR)} imports {name}"
        for path in (PROJECT_DIR / app).rglob("*.py")
        for name in _imports(path)
        if name.partition(".")[0] in ABOVE[app]
    )

    assert upward == []

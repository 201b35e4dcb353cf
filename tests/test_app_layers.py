"""The apps' layers, read from their imports (at the top of a module or inside a function):
orgs at the bottom, presence above it, the integrations above presence; nothing imports upwards,
no module imports another that imports it back, and the engine is pure Python."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
ABOVE = {"orgs": ("presence", "integrations"), "presence": ("integrations",)}
PACKAGES = ("orgs", "presence", "integrations", "sparks_site", "deploy")


def _imports(path: Path) -> set[str]:
    """The modules `path` imports; `from package import name` counts as importing the module
    `package.name` where there is one."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module_of(path: Path) -> str:
    parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports() -> dict[str, set[str]]:
    paths = [path for package in PACKAGES for path in (PROJECT_DIR / package).rglob("*.py")]
    modules = {_module_of(path): path for path in paths}
    return {module: (_imports(path) & modules.keys()) - {module} for module, path in modules.items()}


@pytest.mark.parametrize("app", sorted(ABOVE))
def test_an_app_imports_nothing_of_the_apps_above_it(app):
    upward = sorted(
        f"{path.relative_to(PROJECT_DIR)} imports {name}"
        for path in (PROJECT_DIR / app).rglob("*.py")
        for name in _imports(path)
        if name.partition(".")[0] in ABOVE[app]
    )

    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = _project_imports()
    reaches: dict[str, set[str]] = {}

    def reachable(start: str) -> set[str]:
        if start not in reaches:
            seen, todo = set(), [start]
            while todo:
                for name in graph[todo.pop()]:
                    if name not in seen:
                        seen.add(name)
                        todo.append(name)
            reaches[start] = seen
        return reaches[start]

    rings = sorted(module for module in graph if module in reachable(module))

    assert rings == []


def test_the_engine_imports_nothing_of_django_or_of_another_app():
    """The engine and the presence modules it reads are plain Python: table-testable with no setup."""
    graph = _project_imports()
    pure = {"presence.engine"}
    todo = ["presence.engine"]
    while todo:
        for name in graph[todo.pop()]:
            if name not in pure:
                pure.add(name)
                todo.append(name)
    outside = sorted(
        f"{module} imports {name}"
        for module in pure
        for name in _imports(PROJECT_DIR.joinpath(*module.split(".")).with_suffix(".py"))
        if name.partition(".")[0] in ("django", "rest_framework", "channels", "celery", *PACKAGES)
        and not name.startswith("presence.")
    )

    assert sorted(pure) == ["presence.engine", "presence.microsoft", "presence.vocabulary"]
    assert outside == []

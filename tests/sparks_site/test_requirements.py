"""Every package is pinned: each line of requirements*.txt names one exact version, and a package
installed with extras brings nothing whose version floats (e.g. `uvicorn[standard]` brought
uvloop, httptools, websockets, watchfiles, ... at whatever version was newest)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT_DIR = Path(__file__).resolve().parents[2]
FILES = sorted(PROJECT_DIR.glob("requirements*.txt"))


def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-r "):
            lines.append(line)
    return lines


def pinned_here() -> set[str]:
    return {canonicalize_name(Requirement(line).name) for path in FILES for line in requirement_lines(path)}


def is_exact(requirement: Requirement) -> bool:
    return [spec.operator for spec in requirement.specifier] == ["=="]


def brought_by_extras(requirement: Requirement) -> list[Requirement]:
    """What the extras of `requirement` add, as the installed package's metadata declares it."""
    added = []
    for text in requires(requirement.name) or []:
        dependency = Requirement(text)
        if dependency.marker is None:
            continue  # a dependency of the package itself, not of an extra
        if any(dependency.marker.evaluate({"extra": extra}) for extra in requirement.extras) and not (
            dependency.marker.evaluate({"extra": ""})
        ):
            added.append(dependency)
    return added


def test_there_are_requirement_files():
    assert {path.name for path in FILES} >= {"requirements.txt", "requirements-dev.txt"}


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_every_requirement_is_pinned_to_one_version(path):
    loose = [line for line in requirement_lines(path) if not is_exact(Requirement(line))]

    assert loose == []


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_no_extra_brings_a_floating_package(path):
    pinned = pinned_here()
    floating = []
    pending = [Requirement(line) for line in requirement_lines(path) if Requirement(line).extras]
    while pending:
        requirement = pending.pop()
        try:
            added = brought_by_extras(requirement)
        except PackageNotFoundError:
            floating.append(f"{requirement.name} (not installed: run make)")
            continue
        for dependency in added:
            if not is_exact(dependency) and canonicalize_name(dependency.name) not in pinned:
                floating.append(f"{dependency} (from {requirement})")
            if dependency.extras:
                pending.append(dependency)

    assert floating == []


def test_uvicorn_comes_with_exactly_the_extras_production_runs():
    # deploy/processes.py runs uvicorn with --loop uvloop --http httptools --ws websockets-sansio.
    pinned = pinned_here()

    assert {"uvicorn", "uvloop", "httptools", "websockets"} <= pinned
    assert not {"watchfiles", "python-dotenv", "pyyaml"} & pinned

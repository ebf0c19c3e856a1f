"""What `pip install` puts into site-packages: `tensorgate` alone, and it stands on its own.

The servers (services/) and the training jobs (training/) run from the checkout or the image;
installed, generic top-level names like `services` or `training` would collide with other
projects. So the package must never import them.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from tests.support import REPO_ROOT


def test_only_the_tensorgate_package_is_installed() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["tensorgate*"]
    assert project["project"]["scripts"] == {"tensorgate": "tensorgate.cli:main"}


def imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_package_imports_nothing_from_the_checkout() -> None:
    offenders = {str(path.relative_to(REPO_ROOT)): sorted(imported_top_levels(path) & {"services", "training", "bench", "tests"})
                 for path in sorted((REPO_ROOT / "tensorgate").rglob("*.py"))}
    assert {path: names for path, names in offenders.items() if names} == {}

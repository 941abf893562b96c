"""The package layout's dependency direction, as docs/architecture.md writes it, checked statically.

A package may import only packages of a lower layer; packages in one layer never import each
other. ``pitstop/__init__.py`` and ``pitstop/components.py`` (the composition root, which only the
CLI and the Celery shells use) may import any.
Imports under ``if TYPE_CHECKING:`` are type hints, not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2] / "pitstop"

LAYERS: list[set[str]] = [
    {"kernel"},
    {"connection"},
    {"bus"},
    {"runs"},
    {"scripts"},
    {"workstreams"},
    {"triggers", "triage", "patches", "alerts", "deploy"},
    {"server", "web"},
    {"fleet"},
    {"cli"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
ROOT_MODULES = {"__init__", "__main__", "components"}


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                type_only.update(id(n) for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "pitstop":
                if len(parts) > 1:
                    found.add(parts[1])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "pitstop" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def test_every_package_has_a_layer() -> None:
    unplaced = [name for name in _packages() if name not in RANK]
    assert not unplaced, f"add these packages to LAYERS and docs/architecture.md: {unplaced}"


def test_top_level_is_only_the_composition_root() -> None:
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules <= ROOT_MODULES, f"modules outside a package: {sorted(modules - ROOT_MODULES)}"


def test_packages_import_only_lower_layers() -> None:
    violations = []
    for package in _packages():
        for path in sorted((ROOT / package).rglob("*.py")):
            for target in _runtime_imports(path):
                if target == package or target in ROOT_MODULES - {"components"}:
                    continue
                if target == "components":
                    if package != "cli":  # the composition root is for the application layer
                        violations.append(f"{path.relative_to(ROOT.parent)} imports pitstop.components")
                elif RANK.get(target, -1) >= RANK[package]:
                    violations.append(f"{path.relative_to(ROOT.parent)} imports pitstop.{target}")
    assert not violations, "\n".join(violations)


def test_kernel_never_imports_celery_or_redis_clients_of_other_layers() -> None:
    for path in (ROOT / "kernel").rglob("*.py"):
        assert "celery" not in _runtime_imports(path)
        assert "import celery" not in path.read_text()


def test_no_library_package_imports_celery() -> None:
    offenders = [str(path.relative_to(ROOT.parent)) for path in ROOT.rglob("*.py")
                 if path.parent.name != "cli"
                 and any(line.strip().startswith(("import celery", "from celery"))
                         for line in path.read_text().splitlines())]
    assert not offenders, offenders

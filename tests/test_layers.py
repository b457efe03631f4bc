"""Tests that the package's layers hold: a module imports only from its own subpackage or from
the layers below it (docs/architecture.md, "Layers"), so the layering cannot rot unnoticed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent / "gateway"
# Lowest first. Subpackages on one rank are siblings: neither may import the other.
LAYERS: list[set[str]] = [
    {"core"}, {"observe"}, {"crypto"}, {"store"}, {"pipeline"}, {"ingress", "delivery"},
    {"web"}, {"notify"}, {"service"}, {"admin"}, {"devkit"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _imported(path: Path) -> set[str]:
    """The gateway subpackages a module imports from, at any depth of its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "gateway" and len(parts) > 1:
                found.add(parts[1])
    return found


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def test_every_module_lives_in_a_layer() -> None:
    """Each module of gateway/ is in one of the layered subpackages (only the package's own
    `__init__` and `__main__` sit at the top), so a new module must choose its layer."""
    top = {p.name for p in ROOT.glob("*.py")}
    assert top == {"__init__.py", "__main__.py"}
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages == set(RANK)


def test_imports_point_down_the_layers() -> None:
    """No module imports from a subpackage of its own rank or above, other than its own."""
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent == ROOT:
            continue
        own = _package(path)
        for target in _imported(path) - {own}:
            if target not in RANK or RANK[target] >= RANK[own]:
                upward.append(f"{path.relative_to(ROOT)} imports gateway.{target}")
    assert upward == []


def test_relative_imports_are_not_used() -> None:
    """Imports are absolute (`from gateway.core.model import ...`), so the check above sees them
    all."""
    relative = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                if any(isinstance(n, ast.ImportFrom) and n.level > 0
                       for n in ast.walk(ast.parse(p.read_text())))]
    assert relative == []


def test_only_the_entry_point_sits_above_the_layers() -> None:
    """`gateway/__main__.py` is the one module above every layer: it gives the administrator's
    command line the devkit's demo; the package's `__init__` imports nothing of the package."""
    assert _imported(ROOT / "__init__.py") == set()
    assert _imported(ROOT / "__main__.py") == {"admin", "devkit"}

"""A module never reaches into another module's `_private` names: what two modules need lives once,
public (house style). Scans every module of pyctl/ with the AST, so the rule cannot quietly come back."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pyctl"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def cross_module_private_uses(path: Path, root: Path) -> list[str]:
    """`from pyctl.x import _name` and `module._name` where `module` is a pyctl module imported here."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    modules: set[str] = set()  # local names bound to pyctl modules (or to names from them)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pyctl":
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pyctl":
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    root = PACKAGE.parent
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in cross_module_private_uses(path, root)]
    assert not found, "private names used across modules (make them public where they belong):\n" + "\n".join(found)


def test_the_scan_finds_both_shapes(tmp_path):
    """The scan itself: a private import and a private attribute of an imported pyctl module are found,
    a module's own private names and `self._x` are not."""
    package = tmp_path / "pyctl"
    package.mkdir()
    source = package / "mod.py"
    source.write_text(
        "from pyctl.train.ddp import _parse_env\n"
        "from pyctl.train import manifests\n"
        "def _own():\n    return manifests._version('1.36')\n"
        "class A:\n    def f(self):\n        return self._x, _own()\n",
        encoding="utf-8",
    )
    assert cross_module_private_uses(source, tmp_path) == [
        "pyctl/mod.py:1: from pyctl.train.ddp import _parse_env",
        "pyctl/mod.py:4: manifests._version",
    ]

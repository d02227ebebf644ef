"""House style for roles: layout, role-prefixed names, defaults == argument_specs, generated READMEs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.tools import role_docs

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())


def test_there_are_roles():
    assert ROLES


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_layout(role):
    for part in ("defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml", "tasks/main.yml", "README.md"):
        assert (role / part).is_file(), f"{role.name} lacks {part}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_agree(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = role_docs.specs(role)
    assert set(defaults) == {name for name, spec in specs.items() if "default" in spec}, role.name
    for name, value in defaults.items():
        assert specs[name]["default"] == value, f"{role.name}: {name} default differs from argument_specs"
        assert specs[name].get("description"), f"{role.name}: {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_names_are_role_prefixed(role):
    prefix = role.name + "_"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    for name in defaults:
        assert name.startswith(prefix), f"{name} must start with {prefix}"
        if isinstance(defaults[name], bool):
            assert name.endswith("_enabled"), f"boolean {name} must end in _enabled"
    internals = role / "vars" / "main.yml"
    if internals.is_file():
        for name in yaml.safe_load(internals.read_text()) or {}:
            assert name.startswith("_" + prefix), f"{name} in vars/ must start with _{prefix}"
    for task_file in (role / "tasks").glob("*.yml"):
        for registered in re.findall(r"^\s*register:\s*(\S+)", task_file.read_text(), re.M):
            assert registered.startswith("__" + prefix), (
                f"{task_file.name}: register {registered} must start __{prefix}"
            )


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_variables_table_is_generated_from_argument_specs(role):
    assert (role / "README.md").read_text() == role_docs.rendered_readme(role), (
        f"{role.name}/README.md is stale: run python tests/tools/role_docs.py"
    )

"""Every prerequisite a role's tasks use on the host is installed by the role before the task that uses it:
ansible.builtin.deb822_repository needs python3-debian (the module's own `requirements`), a `gpg` key check needs
gnupg, an https download needs ca-certificates. A minimal server install has none of them, and the lab image no
longer carries them (tests/lab/test_lab_image.py), so a missing install step would otherwise go unseen."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
APT = {"ansible.builtin.apt", "apt"}


def tasks_in_order(role: Path, name: str = "main.yml") -> Iterator[dict]:
    """The role's tasks in the order they run, following import_tasks/include_tasks and blocks."""
    for task in yaml.safe_load((role / "tasks" / name).read_text()) or []:
        yield from _flatten(role, task)


def _flatten(role: Path, task: dict) -> Iterator[dict]:
    for key in ("ansible.builtin.import_tasks", "ansible.builtin.include_tasks", "import_tasks", "include_tasks"):
        if key in task:
            target = task[key]["file"] if isinstance(task[key], dict) else task[key]
            if "{{" not in target:
                yield from tasks_in_order(role, target)
            return
    if "block" in task:
        for inner in task["block"]:
            yield from _flatten(role, inner)
        return
    yield task


def expanded(text: str, role_vars: dict, depth: int = 4) -> str:
    """`text` with the role's internal variables it names replaced by their definitions (a few levels)."""
    for _ in range(depth):
        names = set(re.findall(r"\b(_[a-z0-9_]+)\b", text)) & role_vars.keys()
        if not names:
            break
        text += " " + " ".join(yaml.safe_dump(role_vars[n]) for n in names)
    return text


def needs(task: dict) -> set[str]:
    wanted = set()
    if "ansible.builtin.deb822_repository" in task:
        wanted.add("python3-debian")
    command = task.get("ansible.builtin.command")
    argv = command.get("argv", []) if isinstance(command, dict) else str(command or "").split()
    if argv[:1] == ["gpg"]:
        wanted.add("gnupg")
    if "ansible.builtin.get_url" in task:  # every download of the roles is https
        wanted.add("ca-certificates")
    return wanted


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_prerequisites_are_installed_before_the_tasks_that_need_them(role):
    vars_file = role / "vars" / "main.yml"
    role_vars = yaml.safe_load(vars_file.read_text()) if vars_file.is_file() else {}
    installed: set[str] = set()
    for task in tasks_in_order(role):
        module = next((k for k in task if k in APT), None)
        if module:
            installed |= set(
                re.findall(r"[a-z0-9][a-z0-9.+-]+", expanded(str(task[module].get("name", "")), role_vars))
            )
        missing = needs(task) - installed
        assert not missing, f"{role.name}: {task.get('name')!r} needs {sorted(missing)}, which no earlier task installs"


def test_the_check_covers_the_roles_that_add_repositories():
    users = {role.name for role in ROLES if any("ansible.builtin.deb822_repository" in t for t in tasks_in_order(role))}
    assert users >= {"containerd", "kubernetes"}

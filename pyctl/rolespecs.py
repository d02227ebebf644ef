"""The roles' argument specs (roles/<role>/meta/argument_specs.yml), checked against every host's inventory values.

The node phases' playbooks import their roles with `rolespec_validate: false`: Ansible's own check of a role's
arguments is one more task result per role and host (a forked worker each, on the controller, in every run).
pyctl's inventory check does the same check once, with Ansible's own validator (the one its
`validate_argument_spec` uses), on each host's merged group_vars and host_vars. A value that is a template
(`{{ ... }}`) is rendered only in a play: it is left to the role.

    problems(hosts_vars) -> [(hosts, variable, message), ...]   (hosts: "w1", or "w1, w2, ..." for a group's value)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"


def spec_files(roles_dir: Path = ROLES_DIR) -> list[Path]:
    """Every role's meta/argument_specs.yml, in name order."""
    return sorted(roles_dir.glob("*/meta/argument_specs.yml"))


@cache
def _options(path: Path) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return ((data.get("argument_specs") or {}).get("main") or {}).get("options") or {}


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_templated(v) for v in value)
    return False


def problems(hosts_vars: dict[str, dict[str, Any]], roles_dir: Path = ROLES_DIR) -> list[tuple[str, str, str]]:
    """(hosts, variable, message) for each value that a role's argument spec refuses: one entry for the hosts that
    share a refused value (a group's variable), not one per host."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    found: dict[tuple[str, str], list[str]] = {}
    for path in spec_files(roles_dir):
        options = _options(path)
        role = path.parent.parent.name
        for host, hvars in hosts_vars.items():
            given = {k: hvars[k] for k in options if k in hvars and not _templated(hvars[k])}
            if not given:
                continue
            result = ArgumentSpecValidator({k: options[k] for k in given}).validate(
                given, validate_role_argument_spec=True
            )
            for message in result.error_messages:
                variable = next((k for k in given if k in message), next(iter(given)))
                found.setdefault((variable, f"{message} (role {role}, its meta/argument_specs.yml)"), []).append(host)
    return [(", ".join(hosts), variable, message) for (variable, message), hosts in found.items()]

"""The roles' argument specs, checked once per run by pyctl's inventory check (the node phases import their roles
with `rolespec_validate: false`, so Ansible no longer checks them per role and host)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from pyctl import cli, inventory, rolespecs
from pyctl.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
NODE_PHASES = ("prepare_nodes", "container_runtime", "storage", "ssh_trust")

INVENTORY = """\
all:
  vars:
    node_prep_swap_off_enabled: {swap}
  children:
    control_plane:
      hosts:
        cp1: {{ansible_host: 192.168.10.11}}
    workers:
      hosts:
        w1: {{ansible_host: 192.168.10.12, ssh_trust_user_groups: {groups}}}
"""


def write(tmp_path: Path, swap: str = "true", groups: str = "[video]") -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(INVENTORY.format(swap=swap, groups=groups)), encoding="utf-8")
    return path


def test_values_the_roles_accept_pass(tmp_path):
    result = inventory.check(write(tmp_path))
    assert result.ok, [str(p) for p in result.problems]


def test_a_group_value_a_role_refuses_is_one_problem_naming_its_hosts_variable_and_role(tmp_path):
    found = inventory.check(write(tmp_path, swap="maybe")).problems
    assert len(found) == 1, [str(p) for p in found]
    assert found[0].host == "cp1, w1"
    assert found[0].field == "node_prep_swap_off_enabled"
    assert "not a valid boolean" in found[0].message and "role node_prep" in found[0].message
    assert found[0].line == 3


def test_a_host_value_a_role_refuses_names_that_host(tmp_path):
    found = inventory.check(write(tmp_path, groups="{a: 1}")).problems
    assert [(p.host, p.field) for p in found] == [("w1", "ssh_trust_user_groups")]
    assert "role ssh_trust" in found[0].message


def test_a_template_is_left_to_the_role_that_renders_it(tmp_path):
    result = inventory.check(write(tmp_path, swap='"{{ some_other_var }}"'))
    assert result.ok, [str(p) for p in result.problems]


def test_bootstrap_refuses_a_value_a_role_refuses_before_running_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYCTL_STATE_DIR", str(tmp_path / "state"))
    path = write(tmp_path, swap="maybe")
    assert cli.main(["bootstrap", "-i", str(path), "--phases", "prepare_nodes"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("pyctl: error: inventory") and "node_prep_swap_off_enabled" in first, err
    assert "not a valid boolean" in first and "Traceback" not in err
    assert not (tmp_path / "state" / "runs").exists()


def test_every_role_the_node_phases_import_unvalidated_has_a_spec_pyctl_checks():
    checked = {p.parent.parent.name for p in rolespecs.spec_files()}
    for phase in NODE_PHASES:
        for play in yaml.safe_load((ROOT / "playbooks" / f"{phase}.yml").read_text(encoding="utf-8")):
            for task in play.get("tasks") or []:
                imported = task.get("ansible.builtin.import_role") or {}
                if imported.get("rolespec_validate") is False:
                    assert imported["name"] in checked, (phase, imported["name"])

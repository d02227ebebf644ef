"""The node phases' input checks that read only the inventory run once per play, not once per host (each per-host
task result costs the controller a forked worker in every run), and still name every host whose value is wrong:
node_prep's kernel module and sysctl names, versions' Kubernetes version. The roles' own variables and check tasks
run in ansible-playbook on this machine against three inventory hosts (local connection)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NODE_PREP = ROOT / "roles" / "node_prep"
VERSIONS = ROOT / "roles" / "versions"

# badmod first: the run_once host checks the values it sees itself, the others' through hostvars.
HOSTS = {
    "badmod": {"node_prep_kernel_modules": ["overlay", "br_netfilter; reboot"], "kubernetes_version": "1.99"},
    "good": {},
    "badsysctl": {"node_prep_sysctls": {"net.ipv4.ip_forward 1": 1}, "kubernetes_version": "1.36.5"},
}


def task_named(tasks_file: Path, prefix: str) -> dict:
    task = next(t for t in yaml.safe_load(tasks_file.read_text()) if t["name"].startswith(prefix))
    return {**task, "ignore_errors": True}  # the next play still runs


def play(hosts: str, role: Path, task: dict) -> dict:
    return {"hosts": hosts, "gather_facts": False, "vars_files": [str(role / "vars" / "main.yml")], "tasks": [task]}


def inventory() -> dict:
    """The hosts, with the roles' defaults as group variables: below host variables, as role defaults are."""
    defaults = {}
    for role in (NODE_PREP, VERSIONS):
        defaults.update(yaml.safe_load((role / "defaults" / "main.yml").read_text()))
    base = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {"all": {"hosts": HOSTS, "vars": {**defaults, **base}}}


def run_checks(tmp_path: Path) -> list[dict]:
    """Each play's one task: {host: result} for every host that got a result."""
    node_prep = task_named(NODE_PREP / "tasks" / "preflight.yml", "Fail when")
    versions = task_named(VERSIONS / "tasks" / "main.yml", "Fail when")
    plays = [
        play("all", NODE_PREP, node_prep),
        play("all", VERSIONS, versions),
        play("good", NODE_PREP, node_prep),
        play("good", VERSIONS, versions),
    ]
    (tmp_path / "checks.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory(), sort_keys=False))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="json")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "hosts.yml"),
            str(tmp_path / "checks.yml"),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    output = json.loads(result.stdout[result.stdout.index("{") :])
    return [p["tasks"][0]["hosts"] for p in output["plays"]]


def test_input_checks_run_once_and_name_every_host_with_a_wrong_value(tmp_path):
    node_prep_all, versions_all, node_prep_good, versions_good = run_checks(tmp_path)

    # One task result per play, not one per host.
    assert len(node_prep_all) == 1 and len(versions_all) == 1, (node_prep_all, versions_all)
    (node_prep_result,) = node_prep_all.values()
    assert node_prep_result.get("failed") is True
    assert node_prep_result["msg"].endswith("fix the inventory value on badmod, badsysctl."), node_prep_result["msg"]
    (versions_result,) = versions_all.values()
    assert versions_result.get("failed") is True
    assert "kubernetes_version has no entry in versions_kubernetes on badmod (1.99):" in versions_result["msg"]
    assert "badsysctl" not in versions_result["msg"]  # 1.36.5 is in the table

    assert not node_prep_good["good"].get("failed"), node_prep_good
    assert not versions_good["good"].get("failed"), versions_good

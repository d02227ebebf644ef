"""ssh_trust's known_hosts: every cluster host's keys, from this run's facts or from the record on the controller.

A run limited to one host (pyctl node add) must read no other host when an earlier run recorded them: the record's
keys go into the new host's known_hosts and the record gains the new host. The filter is checked on its own, and the
role's preflight, record and known_hosts template run on this machine for a play limited to it, with the other
hosts' addresses unresolvable (any attempt to read them fails the play).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "ssh_trust"

_spec = importlib.util.spec_from_file_location("ssh_trust_keys", ROLE / "filter_plugins" / "ssh_trust_keys.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
host_keys = _module.ssh_trust_host_keys

FACTS = {
    "hostname": "web",
    "nodename": "web",
    "fqdn": "web.example.internal",
    "default_ipv4": {"address": "10.0.0.5"},
    "ssh_host_key_rsa_public": "AAAArsa",
    "ssh_host_key_rsa_public_keytype": "ssh-rsa",
    "ssh_host_key_ed25519_public": "AAAAed",
    "ssh_host_key_ed25519_public_keytype": "ssh-ed25519",
}
RECORDED = {"names": ["db"], "keys": ["ssh-ed25519 AAAAdb"]}


def test_a_host_with_facts_is_taken_from_them_in_known_hosts_order():
    found = host_keys(["web"], [FACTS], {"web": {"names": ["old"], "keys": ["ssh-ed25519 OLD"]}})
    assert found == {
        "web": {
            "names": ["web", "web.example.internal", "10.0.0.5"],
            "keys": ["ssh-ed25519 AAAAed", "ssh-rsa AAAArsa"],
        }
    }


def test_a_host_without_facts_comes_from_the_record_and_hosts_in_neither_or_gone_are_left_out():
    found = host_keys(["web", "db", "new"], [FACTS, {}, {}], {"db": RECORDED, "removed": RECORDED})
    assert sorted(found) == ["db", "web"]
    assert found["db"] == RECORDED


PLAYBOOK = """
- hosts: all
  gather_facts: true
  gather_subset: [min, network]
  vars_files: [{role}/defaults/main.yml, {role}/vars/main.yml]
  tasks:
    - name: Run the role's preflight as a play limited to this host does
      ansible.builtin.import_tasks: {role}/tasks/preflight.yml
    - name: Record the hosts' keys as the role does
      ansible.builtin.import_tasks: {role}/tasks/record.yml
    - name: Render known_hosts as the role does
      ansible.builtin.template:
        src: {role}/templates/known_hosts.j2
        dest: {out}/known_hosts
        mode: "0644"
      delegate_to: localhost
"""


def test_a_limited_run_takes_the_other_hosts_from_the_record_and_records_the_new_one(tmp_path):
    key_dir = tmp_path / "ssh"
    key_dir.mkdir()
    record = {"far1": {"names": ["far1"], "keys": ["ssh-ed25519 AAAAfar1"]}, "far2": RECORDED}
    (key_dir / "host_keys.json").write_text(json.dumps(record))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n"
        f"    here: {{ansible_connection: local, ansible_python_interpreter: {sys.executable}}}\n"
        "    far1: {ansible_host: far1.invalid}\n"
        "    far2: {ansible_host: far2.invalid}\n"
    )
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE, out=tmp_path))
    env = dict(
        os.environ,
        ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"),
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "--limit",
            "here",
            "-e",
            json.dumps({"ssh_trust_key_dir": str(key_dir), "ansible_python_interpreter": sys.executable}),
            str(playbook),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in (tmp_path / "known_hosts").read_text().splitlines() if not line.startswith("#")]
    assert "far1,far1.invalid ssh-ed25519 AAAAfar1" in lines
    assert "far2,far2.invalid,db ssh-ed25519 AAAAdb" in lines
    assert any(line.startswith("here,") for line in lines), lines
    recorded = json.loads((key_dir / "host_keys.json").read_text())
    assert sorted(recorded) == ["far1", "far2", "here"]
    assert recorded["far2"] == RECORDED and recorded["here"]["keys"]
    assert oct((key_dir / "host_keys.json").stat().st_mode & 0o777) == "0o600"

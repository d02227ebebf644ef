"""`pyctl bootstrap` through ansible-runner against real hosts (network-namespace lab hosts with sshd)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import recap

pytestmark = pytest.mark.lab


def bootstrap(inventory: Path, *args: str, state: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYCTL_STATE_DIR=str(state))
    return subprocess.run(
        [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def variant(lab, tmp_path: Path, change) -> Path:
    data = yaml.safe_load(Path(lab.inventory_path).read_text())
    change(data)
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_preflight_on_real_hosts_recaps_every_host_ok(lab, tmp_path):
    hosts = lab(nodes=3, kind="netns")
    result = bootstrap(Path(hosts.inventory_path), "--phases", "preflight", state=tmp_path / "state")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = recap(result.stdout)
    assert sorted(rows) == sorted(h.name for h in hosts.hosts)
    for host, (ok, changed, failed, unreachable, *_rest) in rows.items():
        assert ok >= 10 and changed == 0 and failed == 0 and unreachable == 0, host
    # one plain line per task result (not a terminal), all in phase preflight
    assert "== phase preflight" in result.stdout
    assert len(re.findall(r"^\d\d:\d\d ok +node1 ", result.stdout, re.M)) >= 10
    run = next((tmp_path / "state" / "runs").iterdir())
    assert "TASK [preflight : Gather the facts the checks need]" in (run / "pyctl.log").read_text()


def test_a_failing_and_an_unreachable_host_are_named_with_hints(lab, tmp_path):
    hosts = lab(nodes=2, kind="netns")
    subnet = hosts.hosts[0].address.rsplit(".", 1)[0]

    def change(data):
        data["all"]["hosts"]["node2"]["preflight_min_memory_mb_worker"] = 10**9
        # No host answers there: ssh waits out its ConnectTimeout (ansible.cfg's 30 s); the ghost alone gets 5 s.
        data["all"]["hosts"]["ghost"] = {"ansible_host": f"{subnet}.250", "ansible_ssh_timeout": 5}
        data["all"]["children"]["workers"]["hosts"]["ghost"] = None

    inventory = variant(hosts, tmp_path, change)
    result = bootstrap(inventory, "--phases", "preflight", state=tmp_path / "state")
    assert result.returncode == 3, result.stdout + result.stderr  # unreachable wins over failed
    rows = recap(result.stdout)
    assert rows["node1"][2:4] == [0, 0]
    assert rows["node2"][2] == 1
    assert rows["ghost"][3] == 1
    assert "node2: failed: [preflight] Fail when the host has too little memory: node2 has" in result.stderr
    assert "ghost: unreachable: [preflight]" in result.stderr
    assert re.search(r"^  hint: .+", result.stderr, re.M)
    assert "full log: " in result.stderr and "Traceback" not in result.stderr


def test_only_a_failing_host_exits_1(lab, tmp_path):
    hosts = lab(nodes=2, kind="netns")

    def change(data):
        data["all"]["hosts"]["node2"]["preflight_min_free_disk_gb"] = 10**7

    result = bootstrap(
        variant(hosts, tmp_path, change), "--limit", "node2", "--phases", "preflight", state=tmp_path / "state"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "node2: failed: [preflight] Fail when the file system holding /var is short of space" in result.stderr
    assert "node1" not in recap(result.stdout)


def test_phases_that_would_change_this_machine_are_refused_on_netns_hosts(lab, tmp_path):
    hosts = lab(nodes=2, kind="netns")
    result = bootstrap(Path(hosts.inventory_path), state=tmp_path / "state")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "netns lab hosts, which share this machine's files" in result.stderr
    assert "prepare_nodes" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "runs").exists(), "nothing may run"

"""netns labs, for real: namespaces, sshd per host, SSH through the generated ssh_config, teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyctl import inventory
from pyctl.cli import main
from pyctl.lab import LabSpec, down, get, network, processes, status, up
from pyctl.lab.errors import LabNameClash
from pyctl.lab.lifecycle import lab_dir
from pyctl.lab.model import Lab
from tests.conftest import require_root

pytestmark = pytest.mark.lab


def _ssh(lab: Lab, host: str, command: str) -> str:
    return lab.ssh(host, command, timeout=30).stdout.strip()


def assert_gone(lab: Lab) -> None:
    """Nothing of the lab is left: no namespace, no process, no mount, no directory."""
    assert network.lab_namespaces(lab.name) == []
    assert processes.pids_mentioning(str(lab.dir)) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lab.dir) not in mounts
    assert f"/run/netns/{lab.namespace} " not in mounts
    assert not lab.dir.exists()


def test_netns_lab_hosts_are_separate_machines(lab):
    my_lab = lab(nodes=3, kind="netns", gpu_nodes=1)

    # The inventory passes pyctl's own check (Ansible's inventory parser underneath) and says what we asked.
    result = inventory.check(my_lab.inventory_path)
    assert result.ok, result.problems
    cluster = result.cluster
    assert [h.name for h in cluster.hosts] == ["node1", "node2", "node3"]
    assert cluster.control_plane.name == "node1"
    assert [h.name for h in cluster.group("nfs_server")] == ["node1"]
    assert [h.name for h in cluster.workers] == ["node2", "node3"]
    assert [h.gpu for h in cluster.hosts] == [False, False, True]
    assert cluster.settings["nfs_allowed_cidr"] == my_lab.subnet
    assert cluster.hosts[0].vars["lab_kind"] == "netns"
    assert cluster.hosts[0].vars["lab_iface"] == "eth0"

    # Each host: its own name, its own address on eth0, its own /etc/hosts, its own /dev/shm.
    for host in my_lab.hosts:
        out = _ssh(my_lab, host.name, "hostname; ip -4 -o addr show dev eth0; getent hosts $(hostname)")
        name, addr_line, resolved = out.splitlines()
        assert name == host.name
        assert f"inet {host.address}/24" in addr_line
        assert resolved.split()[0] == host.address
    marker = f"pyctl-test-{os.getpid()}"
    _ssh(my_lab, "node1", f"echo one > /dev/shm/{marker}")
    assert _ssh(my_lab, "node1", f"cat /dev/shm/{marker}") == "one"
    assert _ssh(my_lab, "node2", f"ls /dev/shm/{marker} 2>/dev/null || echo absent") == "absent"
    assert not Path(f"/dev/shm/{marker}").exists()  # nor on this machine

    # Hosts reach each other on the lab network; SSH between them is not needed, TCP is.
    assert _ssh(my_lab, "node2", f"timeout 5 bash -c '</dev/tcp/{my_lab.hosts[0].address}/22' && echo open") == "open"

    # fabric (paramiko) honours the ssh_config's ProxyCommand and the pinned host key.
    with my_lab.connection("node3") as conn:
        assert conn.run("hostname", hide=True, in_stream=False).stdout.strip() == "node3"


def test_ansible_reaches_every_host_through_the_ssh_config(lab):
    my_lab = lab(nodes=2, kind="netns")
    result = subprocess.run(
        [
            "ansible",
            "-i",
            str(my_lab.inventory_path),
            "all",
            "-m",
            "ansible.builtin.command",
            "-a",
            "hostname",
        ],
        check=False,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=180,
        env={
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_CONFIG": str(Path.cwd() / "ansible.cfg"),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "node1 | CHANGED | rc=0 >>\nnode1" in result.stdout
    assert "node2 | CHANGED | rc=0 >>\nnode2" in result.stdout


def test_up_twice_is_a_no_op_and_status_reports_health(lab):
    my_lab = lab(nodes=2, kind="netns")
    pids = [status(my_lab.name).hosts[i].pid for i in range(2)]

    again = up(LabSpec(name=my_lab.name, nodes=2, kind="netns"))
    assert not again.changed
    assert again.lab.inventory_path == my_lab.inventory_path
    report = status(my_lab.name)
    assert report.healthy
    assert [h.pid for h in report.hosts] == pids
    assert [(h.name, h.address, h.kind) for h in report.hosts] == [
        ("node1", my_lab.hosts[0].address, "netns"),
        ("node2", my_lab.hosts[1].address, "netns"),
    ]

    # Only the gpu marks differ: the inventory is rewritten, the hosts are left alone.
    marked = up(LabSpec(name=my_lab.name, nodes=2, kind="netns", gpu_nodes=1))
    assert not marked.changed
    assert [h.gpu for h in inventory.check(my_lab.inventory_path).cluster.hosts] == [False, True]
    assert [h.pid for h in status(my_lab.name).hosts] == pids

    os.kill(pids[1], signal.SIGKILL)
    _wait(lambda: not processes.alive(pids[1]))
    report = status(my_lab.name)
    assert not report.healthy
    assert report.hosts[0].healthy
    assert not report.hosts[1].process_alive and not report.hosts[1].ssh_ok

    # up on an unhealthy lab of the same shape makes it again.
    fixed = up(LabSpec(name=my_lab.name, nodes=2, kind="netns"))
    assert fixed.changed
    assert status(my_lab.name).healthy


def test_down_leaves_nothing_behind_and_is_idempotent(lab):
    my_lab = lab(nodes=2, kind="netns")
    _ssh(my_lab, "node1", "sleep 600 >/dev/null 2>&1 &")  # outlives its SSH session: down must find it
    assert network.lab_namespaces(my_lab.name)
    result = down(my_lab.name)
    assert result.existed and result.namespaces == 3
    assert_gone(my_lab)
    assert not down(my_lab.name).existed


def test_down_cleans_up_after_a_crash(lab):
    my_lab = lab(nodes=2, kind="netns")
    # Crash: every sshd killed, a stray process left in a host namespace, state still saying "creating".
    for host in my_lab.hosts:
        pid = processes.read_pid(my_lab.host_dir(host) / "sshd.pid")
        os.kill(pid, signal.SIGKILL)
    stray = _stray_in(my_lab.hosts[1].namespace)
    my_lab.phase = "creating"
    my_lab.save()
    down(my_lab.name)
    stray.wait(timeout=10)
    assert_gone(my_lab)


def test_down_cleans_up_a_half_made_lab_without_state(lab, lab_name):
    name = lab_name("h")
    directory = lab_dir(get_settings(), name)
    directory.mkdir(parents=True)
    # What a run killed right after making the namespaces leaves: marked namespaces, a process, no state.
    network.create_lab_namespace(f"pyctl-{name}", "10.213.250.1", 24, directory)
    network.create_host_namespaces(
        f"pyctl-{name}", [network.HostLink(f"pyctl-{name}.node1", "v-node1", "10.213.250.11")], 24, directory
    )
    stray = _stray_in(f"pyctl-{name}")
    try:
        result = down(name)
        assert result.existed and result.namespaces == 2
        stray.wait(timeout=10)
        assert network.lab_namespaces(name) == []
        assert not directory.exists()
    finally:
        stray.kill()
        for ns in network.lab_namespaces(name):
            network.delete(ns)


def test_name_clash_is_a_clear_error(lab, capsys):
    my_lab = lab(nodes=2, kind="netns")
    with pytest.raises(LabNameClash, match="exists as 2 netns host"):
        up(LabSpec(name=my_lab.name, nodes=3, kind="netns"))
    assert main(["lab", "up", "--name", my_lab.name, "--kind", "netns", "--nodes", "3"]) == 2
    err = capsys.readouterr().err
    assert "pyctl: error: lab" in err and "pyctl lab down --name" in err
    assert status(my_lab.name).healthy  # the existing lab was not touched


def test_a_namespace_pyctl_did_not_make_is_a_clash(capsys, lab_name):
    require_root()
    name = lab_name("f")
    subprocess.run(["ip", "netns", "add", f"pyctl-{name}"], check=True)
    try:
        assert main(["lab", "up", "--name", name, "--kind", "netns", "--nodes", "1"]) == 2
        err = capsys.readouterr().err
        assert f"network namespace pyctl-{name} exists but was not made by this pyctl" in err
        assert network.exists(f"pyctl-{name}")  # not ours: left alone
        assert main(["lab", "down", "--name", name]) == 0
        assert network.exists(f"pyctl-{name}")
    finally:
        subprocess.run(["ip", "netns", "delete", f"pyctl-{name}"], check=False)
        down(name)


def test_cli_up_json_status_and_down(capsys, lab_name):
    require_root()
    name = lab_name("c")
    try:
        assert main(["lab", "up", "--name", name, "--kind", "netns", "--nodes", "2", "--gpu-nodes", "1", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["inventory"].endswith(f"/{name}/inventory.yml")
        assert Path(data["ssh_config"]).is_file()
        assert [(h["name"], h["kind"], h["gpu"]) for h in data["hosts"]] == [
            ("node1", "netns", False),
            ("node2", "netns", True),
        ]
        assert main(["lab", "up", "--name", name, "--kind", "netns", "--nodes", "2", "--gpu-nodes", "1"]) == 0
        assert capsys.readouterr().out.strip() == data["inventory"]
        assert main(["lab", "status", "--name", name, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["healthy"] and all(h["ssh_ok"] and h["process_alive"] for h in report["hosts"])
        ssh_config = Path(data["ssh_config"]).read_text()
        assert f"ProxyCommand /usr/bin/nsenter --net=/run/netns/pyctl-{name} /usr/bin/socat - TCP:%h:%p" in ssh_config
        assert "StrictHostKeyChecking yes" in ssh_config
    finally:
        assert main(["lab", "down", "--name", name]) == 0
    assert network.lab_namespaces(name) == []
    with pytest.raises(Exception, match="no lab named"):
        get(name)


def get_settings():
    from pyctl.config import load_settings

    return load_settings()


def _stray_in(namespace: str) -> subprocess.Popen:
    """A process left running inside `namespace` (once it is really in there: Popen returns earlier)."""
    stray = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "600"])
    inode = network.inode(namespace)
    _wait(lambda: processes.ns_inode(f"/proc/{stray.pid}/ns/net") == inode)
    return stray


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)

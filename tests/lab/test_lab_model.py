"""Lab shapes, names, addresses, the inventory and ssh_config it writes, and prerequisite errors.

No root needed: nothing here touches the machine.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from pyctl import inventory
from pyctl.cli import main
from pyctl.errors import UsageError
from pyctl.lab import Lab, LabSpec, image, prereqs
from pyctl.lab import inventory as lab_inventory
from pyctl.lab.errors import MissingTools, NotRoot
from pyctl.lab.model import POD_CIDR, SERVICE_CIDR, check_name, plan_hosts, subnet_for
from pyctl.lab.ssh import write_ssh_config


@pytest.mark.parametrize("name", ["default", "a", "t123-4", "x" * 24])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "1lab", "lab-", "a--b", "a.b", "a_b", "x" * 25, "a/b"])
def test_invalid_names(name):
    with pytest.raises(UsageError, match="not valid"):
        check_name(name)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LabSpec(nodes=0), "a vm lab has 1 to 50"),
        (LabSpec(nodes=51, kind="vm"), "a vm lab has 1 to 50"),
        (LabSpec(nodes=101, kind="container"), "a container lab has 1 to 100"),
        (LabSpec(nodes=201, kind="netns"), "a netns lab has 1 to 200"),
        (LabSpec(nodes=2, gpu_nodes=3), "give 0 to 2"),
        (LabSpec(kind="docker"), "not one of vm, container, netns"),
    ],
)
def test_invalid_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        spec.validate()


def test_container_and_netns_labs_take_the_hosts_a_scale_test_needs(tmp_path):
    LabSpec(nodes=100, kind="container").validate()
    spec = LabSpec(name="big", nodes=200, kind="netns").validate()
    addresses = [h.address for h in _lab(tmp_path, spec).hosts]
    assert len(set(addresses)) == 200
    assert addresses[-1] == "10.213.7.210"


def _lab(tmp_path: Path, spec: LabSpec) -> Lab:
    subnet = subnet_for(7)
    return Lab(name=spec.name, kind=spec.kind, dir=tmp_path, subnet=subnet, hosts=plan_hosts(spec, subnet))


def test_hosts_roles_addresses_and_gpu_marks(tmp_path):
    lab = _lab(tmp_path, LabSpec(name="x", nodes=4, kind="vm", gpu_nodes=2))
    assert [h.name for h in lab.hosts] == ["node1", "node2", "node3", "node4"]
    assert lab.hosts[0].groups == ("control_plane", "nfs_server")
    assert all(h.groups == ("workers",) for h in lab.hosts[1:])
    assert [h.gpu for h in lab.hosts] == [False, False, True, True]
    assert [h.address for h in lab.hosts] == ["10.213.7.11", "10.213.7.12", "10.213.7.13", "10.213.7.14"]
    assert lab.gateway == "10.213.7.1"
    assert len({h.mac for h in lab.hosts}) == 4
    network = ipaddress.ip_network(lab.subnet)
    for cidr in (POD_CIDR, SERVICE_CIDR):
        assert not network.overlaps(ipaddress.ip_network(cidr))


def test_written_inventory_passes_pyctl_check(tmp_path):
    lab = _lab(tmp_path, LabSpec(name="x", nodes=3, kind="container", gpu_nodes=1))
    lab.apt_proxy = "http://10.213.7.1:3142"
    write_ssh_config(lab)
    result = inventory.check(lab_inventory.write(lab))
    assert result.ok, result.problems
    cluster = result.cluster
    assert cluster.control_plane.name == "node1"
    assert [h.name for h in cluster.workers] == ["node2", "node3"]
    assert [h.gpu for h in cluster.hosts] == [False, False, True]
    assert cluster.settings["nfs_allowed_cidr"] == lab.subnet
    assert cluster.settings["pod_cidr"] == POD_CIDR
    node = cluster.hosts[0].vars
    assert node["ansible_ssh_common_args"] == f"-F {lab.ssh_config_path}"
    assert node["ansible_user"] == "root"
    assert node["lab_kind"] == "container"
    assert node["lab_iface"] == "eth0"
    assert node["lab_apt_proxy"] == "http://10.213.7.1:3142"
    # Lab hosts share the controller's disk (netns, container) or have a small image (vm): the preflight's
    # space check runs against the lab's own minimum, which a VM image can meet, not a real node's 10 GiB.
    assert node["preflight_min_free_disk_gb"] == lab_inventory.LAB_MIN_FREE_DISK_GB
    assert int(image.DISK_SIZE.rstrip("G")) > lab_inventory.LAB_MIN_FREE_DISK_GB


@pytest.mark.parametrize(("kind", "source"), [("container", "docker"), ("vm", "distribution")])
def test_the_inventory_points_the_roles_at_the_labs_own_repositories(tmp_path, kind, source):
    lab = _lab(tmp_path, LabSpec(name="x", nodes=2, kind=kind))
    fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567"
    lab.extra["repo"] = {
        "url": "http://10.213.7.1:8080",
        "fingerprint": fingerprint,
        "containerd_io_version": "2.1.9-1",
    }
    write_ssh_config(lab)
    result = inventory.check(lab_inventory.write(lab))
    assert result.ok, result.problems
    settings = result.cluster.hosts[0].vars
    mirrors = settings["mirrors_repositories"]
    assert mirrors["kubernetes"]["url"] == "http://10.213.7.1:8080/pkgs.k8s.io/core:/stable:/v1.36/deb/"
    assert mirrors["docker"]["key_url"] == "http://10.213.7.1:8080/download.docker.com/linux/debian/gpg"
    assert mirrors["nvidia"]["key_url"] == "http://10.213.7.1:8080/nvidia.github.io/libnvidia-container/gpgkey"
    assert {name: mirror["fingerprint"] for name, mirror in mirrors.items()} == dict.fromkeys(
        ("kubernetes", "docker", "nvidia"), fingerprint
    )
    assert "kubernetes_packages_enabled" not in settings
    # containerd 2.x from the lab's repository on container hosts; VMs keep the distribution's 1.x path
    assert settings["containerd_source"] == source
    assert ("containerd_unsupported_version_enabled" in settings) == (kind == "vm")
    assert settings.get("containerd_docker_version") == ("2.1.9-1" if kind == "container" else None)


def test_single_host_lab_is_control_plane_and_nfs_server(tmp_path):
    lab = _lab(tmp_path, LabSpec(name="x", nodes=1, kind="netns"))
    result = inventory.check(lab_inventory.write(lab))
    assert result.ok, result.problems
    assert result.cluster.hosts[0].groups == ("control_plane", "nfs_server")


def test_ssh_config_has_one_block_per_host(tmp_path):
    lab = _lab(tmp_path, LabSpec(name="x", nodes=2, kind="vm"))
    text = write_ssh_config(lab).read_text()
    assert text.count("\nHost ") == 2
    assert "Host node2 10.213.7.12\n  HostName 10.213.7.12\n" in text
    for line in (
        "User root",
        f"IdentityFile {lab.key_path}",
        f"UserKnownHostsFile {lab.known_hosts_path}",
        "StrictHostKeyChecking yes",
        "ProxyCommand /usr/bin/nsenter --net=/run/netns/pyctl-x /usr/bin/socat - TCP:%h:%p",
    ):
        assert text.count(line) == 2, line


def test_not_root_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(prereqs, "is_root", lambda: False)
    monkeypatch.setattr(prereqs, "missing", lambda tools: {})
    assert main(["lab", "up", "--kind", "netns", "--name", "nobody"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "pyctl: error: pyctl lab (netns) needs root (network namespaces, bridges, mounts)"
    assert err[1] == "pyctl: hint: run it with sudo"


def test_missing_tools_without_root_names_the_packages(monkeypatch):
    monkeypatch.setattr(prereqs, "is_root", lambda: False)
    monkeypatch.setattr(prereqs, "missing", lambda tools: {"socat": "socat", "sshd": "openssh-server"})
    with pytest.raises(MissingTools) as info:
        prereqs.ensure({}, what="pyctl lab (netns)")
    assert "socat, sshd" in info.value.message
    assert "apt-get install openssh-server socat" in info.value.hint
    assert info.value.exit_code == 2


def test_down_without_root_is_refused(monkeypatch, capsys):
    from pyctl.lab import lifecycle

    monkeypatch.setattr(lifecycle, "is_root", lambda: False)
    assert main(["lab", "down", "--name", "nobody"]) == 2
    assert "needs root" in capsys.readouterr().err
    with pytest.raises(NotRoot):
        lifecycle.down("nobody")


def test_leftover_scan_does_not_confuse_labs_sharing_a_prefix(tmp_path):
    import subprocess
    import time

    from pyctl.lab import processes

    other = tmp_path / "labs" / "t12"
    proc = subprocess.Popen(["sh", "-c", "sleep 60", f"{other}/hosts/node1/sshd_config"])
    try:
        deadline = time.monotonic() + 10
        while "sleep 60" not in processes.cmdline(proc.pid):  # Popen returns before the child's exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert proc.pid in processes.pids_mentioning(other)
        assert proc.pid not in processes.pids_mentioning(tmp_path / "labs" / "t1")
    finally:
        proc.kill()
        proc.wait()


def test_lab_ssh_leaves_the_callers_stdin_blocking(tmp_path, monkeypatch):
    # A stand-in for ssh killed mid-run: ssh makes its stdin non-blocking and only restores it on a clean
    # exit. Sharing the caller's stdin would leave it non-blocking, and every later ansible refuses to start.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    double = bin_dir / "ssh"
    double.write_text("#!/usr/bin/env python3\nimport os\nos.set_blocking(0, False)\nprint('node1')\n")
    double.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    lab = _lab(tmp_path, LabSpec(name="x", nodes=2, kind="netns"))
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        assert lab.ssh("node1", "hostname").stdout.strip() == "node1"
        assert os.get_blocking(0), "lab.ssh let ssh switch the caller's stdin to non-blocking"
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)

"""vm hosts, for real: QEMU VMs with their own kernel. These tests run on node1 of the session's 2-host mixed
lab (a VM and a container host, shared with tests/lab/test_lab_mixed.py), because each VM boot costs a minute
under TCG; tests/roles boots Debian 12 VMs of its own."""

from __future__ import annotations

import os
import time

import pytest

from pyctl import inventory
from pyctl.lab import LabSpec, status, up

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def vms(session_lab):
    return session_lab(nodes=2, kind="mixed", os="debian-13")


def test_vm_hosts_answer_ssh_with_their_own_kernel(vms):
    assert [h.name for h in vms.hosts_of("vm")] == ["node1"]
    for host in vms.hosts_of("vm"):
        out = vms.ssh(
            host.name,
            "hostname; uname -r; systemd-detect-virt; systemctl is-system-running || true; ip -4 -o addr show dev eth0",
            timeout=120,
        ).stdout.split("\n")
        assert out[0] == host.name
        assert out[1] != os.uname().release  # its own kernel, not this machine's
        assert out[2] == "qemu"
        assert out[3] in ("running", "degraded"), out
        assert f"inet {host.address}/24" in out[4]
    assert vms.accel in ("kvm", "tcg")


def test_vm_loads_modules_and_has_swap(vms):
    out = vms.ssh(
        "node1",
        "modprobe br_netfilter && test -d /sys/module/br_netfilter && echo loaded; swapon --show=NAME --noheadings",
        timeout=120,
    ).stdout.split()
    assert out[0] == "loaded"
    assert "/dev/vdb" in out[1:]


def test_vm_installs_packages_through_the_lab_proxy(vms):
    result = vms.ssh(
        "node1",
        "apt-get -q update && apt-get install -y -q --no-install-recommends hello && hello",
        timeout=900,
    )
    assert "Hello, world!" in result.stdout
    # The lab image turns off initramfs regeneration (VMs boot the initrd exported at build time): the -u that
    # dpkg's initramfs-tools trigger runs after a package install is a no-op here.
    result = vms.ssh("node1", "update-initramfs -u", timeout=120)
    assert "Not updating initramfs." in result.stdout, result.stdout + result.stderr


def test_vm_inventory_is_valid_and_up_again_is_a_no_op(vms):
    result = inventory.check(vms.inventory_path)
    assert result.ok, result.problems
    assert result.cluster.hosts[0].vars["lab_kind"] == "vm"
    assert result.cluster.settings["nfs_allowed_cidr"] == vms.subnet

    started = time.monotonic()
    again = up(LabSpec(name=vms.name, nodes=2, kind="mixed", os="debian-13"))
    assert not again.changed
    assert again.lab.inventory_path == vms.inventory_path
    assert time.monotonic() - started < 60
    report = status(vms.name)
    assert report.healthy
    assert [h.kind for h in report.hosts] == ["vm", "container"]
    assert all(h.process_alive and h.ssh_ok for h in report.hosts)

"""container labs, for real: systemd-nspawn booting systemd from the shared image, apt through the proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyctl import inventory
from pyctl.lab import LabSpec, cgroups, container, down, network, processes, status, up

pytestmark = pytest.mark.lab


def test_container_lab_boots_systemd_and_installs_packages(lab):
    my_lab = lab(nodes=2, kind="container")

    result = inventory.check(my_lab.inventory_path)
    assert result.ok, result.problems
    node_vars = result.cluster.hosts[0].vars
    assert node_vars["lab_kind"] == "container"
    assert node_vars["lab_apt_proxy"] == f"http://{my_lab.gateway}:3142"

    for host in my_lab.hosts:
        out = my_lab.ssh(
            host.name,
            "hostname; systemd-detect-virt; systemctl is-system-running || true;"
            " ip -4 -o addr show dev eth0; getent hosts node1 node2 | wc -l; sysctl -n net.ipv4.ip_forward",
            timeout=60,
        ).stdout.split("\n")
        assert out[0] == host.name
        assert out[1] == "systemd-nspawn"
        assert out[2] in ("running", "degraded"), out
        assert f"inet {host.address}/24" in out[3]
        assert out[4] == "2"
        assert out[5] == "1"  # set by the lab from outside: /proc/sys is read-only inside
        # Each host's systemd has a cgroup tree of its own (shared, units of different hosts race: 219/CGROUP).
        own = f"/{cgroups.TOP}/{my_lab.name}/{host.name}/"
        nspawn_cgroups = Path(f"/proc/{container.pid(my_lab, host)}/cgroup").read_text()
        assert all(
            own in line for line in nspawn_cgroups.splitlines() if "name=systemd" in line or line.startswith("0::")
        )
        assert cgroups.cpu_seconds(my_lab, host) > 0

    # apt works inside through the lab's proxy (the lab itself has no way out).
    install = my_lab.ssh(
        "node2",
        "apt-get -q update && apt-get install -y -q --no-install-recommends hello && hello",
        timeout=600,
    )
    assert "Hello, world!" in install.stdout
    proxy = my_lab.ssh("node2", "apt-config dump Acquire::http::Proxy", timeout=30).stdout
    assert f"http://{my_lab.gateway}:3142" in proxy

    # Each container writes to its own overlay layer, never to the shared image.
    my_lab.ssh("node1", "echo mine > /etc/pyctl-test-marker", timeout=30)
    assert my_lab.ssh("node2", "cat /etc/pyctl-test-marker 2>/dev/null || echo absent", timeout=30).stdout.strip() == (
        "absent"
    )
    assert (my_lab.host_dir("node1") / "upper" / "etc" / "pyctl-test-marker").exists()
    image_root = Path(my_lab.extra["image_dir"]) / "rootfs"
    assert not (image_root / "etc" / "pyctl-test-marker").exists()

    # Memory: a container host is a handful of processes.
    pids = container.container_pids(my_lab, my_lab.hosts[0])
    assert len(pids) >= 3

    # up again: nothing to do.
    again = up(LabSpec(name=my_lab.name, nodes=2, kind="container"))
    assert not again.changed
    assert status(my_lab.name).healthy


def test_container_lab_down_leaves_nothing(lab):
    my_lab = lab(nodes=2, kind="container")
    nspawn = [container.pid(my_lab, h) for h in my_lab.hosts]
    assert all(nspawn)
    down(my_lab.name)
    assert network.lab_namespaces(my_lab.name) == []
    assert not any(processes.alive(p) for p in nspawn)
    assert processes.pids_mentioning(str(my_lab.dir)) == []
    assert str(my_lab.dir) not in Path("/proc/self/mountinfo").read_text()
    assert (
        not list(container.PROPAGATE_DIR.glob(f"pyctl-{my_lab.name}-*")) if container.PROPAGATE_DIR.exists() else True
    )
    assert not my_lab.dir.exists()
    assert not any(path.exists() for path in cgroups.lab_paths(my_lab.name))

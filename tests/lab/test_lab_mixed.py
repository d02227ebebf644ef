"""Mixed labs: node1 a VM (control plane and NFS server, with a kernel of its own), the workers container hosts.

The model, validation and inventory tests need no root and touch nothing. The one lab test brings up the
smallest mixed lab (1 VM + 1 container host) and takes it down again.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from pyctl import inventory
from pyctl.cli import main
from pyctl.errors import UsageError
from pyctl.lab import Lab, LabSpec, lifecycle
from pyctl.lab import inventory as lab_inventory
from pyctl.lab.model import plan_hosts, subnet_for
from pyctl.lab.ssh import write_ssh_config

FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


def _lab(tmp_path, spec: LabSpec) -> Lab:
    subnet = subnet_for(9)
    spec.validate()
    return Lab(name=spec.name, kind=spec.kind, dir=tmp_path, subnet=subnet, hosts=plan_hosts(spec, subnet), os=spec.os)


def test_a_mixed_lab_has_node1_a_vm_and_its_workers_container_hosts(tmp_path):
    spec = LabSpec(name="m", nodes=3, kind="mixed", gpu_nodes=1, os="debian-13")
    lab = _lab(tmp_path, spec)
    assert spec.host_kinds == lab.host_kinds == ("vm", "container")
    assert [(h.name, h.kind, h.groups, h.gpu) for h in lab.hosts] == [
        ("node1", "vm", ("control_plane", "nfs_server"), False),
        ("node2", "container", ("workers",), False),
        ("node3", "container", ("workers",), True),
    ]
    vm, *containers = lab.hosts
    assert vm.mac and vm.namespace is None  # a tap on the bridge, its address from dnsmasq by MAC
    assert all(h.namespace == f"pyctl-m.{h.name}" and h.mac is None for h in containers)  # a veth on the bridge
    assert lab.describe() == "1 vm + 2 container hosts"
    assert [h["kind"] for h in lab.summary()["hosts"]] == ["vm", "container", "container"]
    assert lab.uses_services


@pytest.mark.parametrize("kind", ["vm", "container", "netns"])
def test_a_lab_of_one_kind_has_every_host_of_that_kind(tmp_path, kind):
    lab = _lab(tmp_path, LabSpec(name="u", nodes=2, kind=kind))
    assert [h.kind for h in lab.hosts] == [kind, kind]
    assert lab.uses_services == (kind != "netns")


def test_a_one_host_mixed_lab_is_refused_with_a_pointer_to_kind_vm(capsys):
    with pytest.raises(UsageError, match="for one host use --kind vm"):
        LabSpec(nodes=1, kind="mixed").validate()
    with pytest.raises(UsageError, match="a mixed lab has 2 to 100 hosts"):
        LabSpec(nodes=101, kind="mixed").validate()
    assert main(["lab", "up", "--kind", "mixed", "--nodes", "1", "--name", "nobody"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyctl: error: --nodes 1: a mixed lab")
    assert "use --kind vm" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_host_kinds_survive_the_state_file_and_old_state_files_load_with_the_labs_kind(tmp_path):
    lab = _lab(tmp_path / "m", LabSpec(name="m", nodes=2, kind="mixed"))
    lab.save()
    loaded = Lab.load(lab.dir)
    assert [h.kind for h in loaded.hosts] == ["vm", "container"]
    assert loaded.same_shape(LabSpec(name="m", nodes=2, kind="mixed"))
    assert not loaded.same_shape(LabSpec(name="m", nodes=2, kind="container"))
    assert not loaded.same_shape(LabSpec(name="m", nodes=2, kind="mixed", vm_memory_mib=2048))

    old = _lab(tmp_path / "c", LabSpec(name="c", nodes=2, kind="container"))
    old.save()
    data = json.loads(old.state_path.read_text())
    for host in data["hosts"]:
        del host["kind"]  # what a state file written before hosts carried their kind holds
    old.state_path.write_text(json.dumps(data))
    assert [h.kind for h in Lab.load(old.dir).hosts] == ["container", "container"]


def _written(lab: Lab) -> dict:
    lab.apt_proxy = f"http://{lab.gateway}:3142"
    lab.extra["repo"] = {
        "url": f"http://{lab.gateway}:8080",
        "fingerprint": FINGERPRINT,
        "containerd_io_version": "2.1.9-1",
    }
    write_ssh_config(lab)
    path = lab_inventory.write(lab)
    result = inventory.check(path)
    assert result.ok, result.problems
    return yaml.safe_load(path.read_text())["all"]


def test_a_mixed_inventory_gives_each_host_the_settings_of_its_kind(tmp_path):
    data = _written(_lab(tmp_path, LabSpec(name="m", nodes=3, kind="mixed", gpu_nodes=1)))
    assert "lab_kind" not in data["vars"] and "containerd_source" not in data["vars"]
    assert data["vars"]["mirrors_repositories"]["docker"]["fingerprint"] == FINGERPRINT  # the same for all
    node1, node2, node3 = (data["hosts"][n] for n in ("node1", "node2", "node3"))
    # The VM keeps Debian's containerd 1.x; the container hosts run 2.x from the lab's repository.
    assert node1["lab_kind"] == "vm" and node1["containerd_source"] == "distribution"
    assert node1["containerd_unsupported_version_enabled"] is True
    for node in (node2, node3):
        assert node["lab_kind"] == "container" and node["containerd_source"] == "docker"
        assert node["containerd_docker_version"] == "2.1.9-1"
        assert "containerd_unsupported_version_enabled" not in node
    assert node3["gpu"] is True and "gpu" not in node2
    assert list(data["children"]["control_plane"]["hosts"]) == ["node1"]
    assert list(data["children"]["nfs_server"]["hosts"]) == ["node1"]
    assert list(data["children"]["workers"]["hosts"]) == ["node2", "node3"]


def test_a_one_kind_inventory_keeps_the_kind_settings_once_for_all_hosts(tmp_path):
    data = _written(_lab(tmp_path, LabSpec(name="c", nodes=2, kind="container")))
    assert data["vars"]["lab_kind"] == "container" and data["vars"]["containerd_source"] == "docker"
    assert all(set(h) <= {"ansible_host", "gpu"} for h in data["hosts"].values())


def test_status_asks_each_hosts_own_driver(tmp_path, monkeypatch):
    from pyctl.lab import container, ssh, vm

    lab = _lab(tmp_path, LabSpec(name="m", nodes=3, kind="mixed"))
    monkeypatch.setattr(vm, "pid", lambda _lab, host: 100 + host.index)
    monkeypatch.setattr(container, "pid", lambda _lab, host: 200 + host.index)
    monkeypatch.setattr(ssh, "reachable", lambda _lab, host: host.name != "node3")
    statuses = lifecycle.host_statuses(lab)
    assert [(s.name, s.kind, s.pid, s.healthy) for s in statuses] == [
        ("node1", "vm", 101, True),
        ("node2", "container", 202, True),
        ("node3", "container", 203, False),
    ]
    assert lifecycle.unhealthy_hosts(lab) == ["node3"]


# --- the lab, for real ----------------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.slow
def test_a_mixed_lab_runs_a_vm_and_a_container_host_on_one_network(lab, capsys):
    from tests.conftest import lab_leftovers

    mixed = lab(nodes=2, kind="mixed", os="debian-13")
    node1, node2 = mixed.hosts
    script = "hostname; uname -r; systemd-detect-virt; . /etc/os-release; echo $VERSION_ID; ip -4 -o addr show dev eth0"
    vm_out = mixed.ssh(node1, script, timeout=120).stdout.splitlines()
    ct_out = mixed.ssh(node2, script, timeout=120).stdout.splitlines()
    assert vm_out[0] == "node1" and ct_out[0] == "node2"
    assert vm_out[1] != os.uname().release and vm_out[2] == "qemu"  # node1: a kernel of its own
    assert ct_out[1] == os.uname().release and ct_out[2] == "systemd-nspawn"  # node2: this machine's kernel
    assert vm_out[3] == ct_out[3] == "13"
    assert f"inet {node1.address}/24" in vm_out[4] and f"inet {node2.address}/24" in ct_out[4]

    # One bridge: the VM's tap and the container's veth reach each other and the gateway's services.
    mixed.ssh(node1, f"ping -c1 -W5 {node2.address} && ping -c1 -W5 node2", timeout=60)
    mixed.ssh(node2, f"ping -c1 -W5 {node1.address} && ping -c1 -W5 node1", timeout=60)
    probe = f"python3 -c \"import urllib.request as u; u.urlopen('{mixed.extra['repo']['url']}/', timeout=10)\""
    for host in mixed.hosts:
        mixed.ssh(host, probe, timeout=60)

    # Each host reboots as its kind does (the VM in place, the container host started again by the lab).
    boot_ids = {h.name: mixed.ssh(h, lifecycle.BOOT_ID).stdout for h in mixed.hosts}
    lifecycle.reboot(mixed)
    assert all(mixed.ssh(h, lifecycle.BOOT_ID).stdout != boot_ids[h.name] for h in mixed.hosts)

    assert main(["lab", "status", "--name", mixed.name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "mixed" and report["healthy"]
    assert [(h["name"], h["kind"]) for h in report["hosts"]] == [("node1", "vm"), ("node2", "container")]

    lifecycle.down(mixed.name)
    assert lab_leftovers(mixed.name) == []

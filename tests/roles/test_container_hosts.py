"""The node phases on container hosts (systemd-nspawn: no modprobe, no swapoff, read-only /proc/sys), and the
containerd checks that matter most: a GPU host without a driver is refused with what to do, and a foreign
drop-in that silently replaces containerd's CRI section (containerd < 2.0 merges imports section by section)
is caught by the check of `containerd config dump`.

These hosts keep Debian's containerd 1.x (`containerd_1x`: the distribution path pyctl still supports for
Kubernetes <= 1.35, run past the role's refusal for 1.36). The lab's own inventory gives container hosts
containerd 2.x from the lab's repository: tests/lab/test_lab_repository.py covers that path."""

from __future__ import annotations

import subprocess

import pytest

from pyctl.lab import container
from tests.roles.conftest import (
    PHASES,
    bootstrap,
    inventory_variant,
    without_nfs_server,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("container-state")


def containerd_1x(data):
    """Debian's own containerd (1.6 on Debian 12) instead of the lab's containerd 2.x, and no NFS server."""
    without_nfs_server(data)
    data["all"]["vars"].update({"containerd_source": "distribution", "containerd_unsupported_version_enabled": True})


@pytest.fixture(scope="module")
def inventory(container_lab, tmp_path_factory):
    return inventory_variant(container_lab, tmp_path_factory.mktemp("inv"), containerd_1x)


def test_check_mode_on_fresh_hosts_reports_changes_and_changes_nothing(container_lab, inventory, state):
    run = bootstrap(inventory, state, "--phases", PHASES, "--check")
    assert run.returncode == 0, run.output
    assert all(run.per_host("changed").get(h.name, 0) > 0 for h in container_lab.hosts), run.output
    out = container_lab.ssh(
        "node2",
        "dpkg -s containerd >/dev/null 2>&1 && echo installed;"
        " ls /etc/sysctl.d/99-zz-pyctl-kubernetes.conf 2>&1; id pyctl 2>&1",
        check=False,
    ).stdout
    assert "installed" not in out and "No such file" in out and "no such user" in out, out


def test_phases_converge_on_containers_where_the_facts_hold_and_rerun_changes_nothing(container_lab, inventory, state):
    first = bootstrap(inventory, state, "--phases", PHASES)
    assert first.returncode == 0, first.output
    second = bootstrap(inventory, state, "--phases", PHASES)
    assert second.returncode == 0, second.output
    changed = {host: n for host, n in second.per_host("changed").items() if n}
    assert not changed, f"a re-run changed something: {changed}\n{second.output}"
    # Where nothing differs, each role's probe keeps its change tasks from being evaluated at all: a handful of
    # skipped results per host (14 here; 43 when every change task was evaluated and skipped one by one).
    skipped = second.per_host("skipped")
    assert max(skipped.values()) <= 16, f"the re-run evaluated change tasks it did not need: {skipped}"
    # br_netfilter is built into this kernel without a /sys/module entry (FIELD_NOTES #8): found, not modprobed.
    out = container_lab.ssh("node1", "ls /sys/module/br_netfilter 2>&1; ls /proc/sys/net/bridge | head -1").stdout
    assert "No such file" in out and "bridge-nf-call" in out
    print(f"\ncontainers: first run {first.seconds:.0f} s, re-run {second.seconds:.0f} s")


def test_a_container_whose_sysctl_is_wrong_fails_with_what_to_do(container_lab, inventory, state):
    host = container_lab.hosts[1]
    forward = ["nsenter", f"--net=/run/netns/{host.namespace}", "sysctl", "-q", "-w"]
    subprocess.run([*forward, "net.ipv4.ip_forward=0"], check=True, timeout=30)
    try:
        run = bootstrap(inventory, state, "--phases", "prepare_nodes", "--limit", host.name)
    finally:
        container.set_host_sysctls([host.namespace])  # as the lab set it
    assert run.returncode == 1, run.output
    assert (
        f"{host.name} is a container with a read-only /proc/sys and needs net.ipv4.ip_forward=1: set them for the"
        " container from the machine that runs it" in run.stderr
    ), run.output


def test_a_gpu_host_without_nvidia_smi_fails_with_what_to_do(container_lab, tmp_path, state):
    def gpu_node1(data):
        containerd_1x(data)
        data["all"]["hosts"]["node1"]["gpu"] = True

    run = bootstrap(inventory_variant(container_lab, tmp_path, gpu_node1), state, "--phases", "container_runtime")
    assert run.returncode == 1, run.output
    assert "node1 is marked gpu=true but nvidia-smi is not installed: install the NVIDIA driver" in run.stderr, (
        run.output
    )
    assert "node2" not in run.stderr  # the host without a GPU mark converges


def test_a_drop_in_that_replaces_the_cri_section_is_caught(container_lab, inventory, state):
    """A registry-mirror drop-in without the runtimes makes containerd 1.x forget SystemdCgroup (containerd#5837)."""
    drop_in = "/etc/containerd/conf.d/90-mirror.toml"
    container_lab.ssh(
        "node2",
        f'printf \'version = 2\\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\\n'
        f'  endpoint = ["https://mirror.example"]\\n\' > {drop_in}',
    )
    try:
        run = bootstrap(inventory, state, "--phases", "container_runtime", "--limit", "node2")
    finally:
        container_lab.ssh("node2", f"rm -f {drop_in}")
    assert run.returncode == 1, run.output
    assert (
        "node2: failed: [container_runtime] Fail when containerd's effective configuration is not the one pyctl wrote"
        in run.stderr
    )
    assert "SystemdCgroup = False" in run.stderr, run.output

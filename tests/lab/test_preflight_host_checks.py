"""The preflight's cgroup, port and firewall checks for real, on network-namespace lab hosts: a listener
started in a host's namespace, an nftables ruleset loaded there, and this machine's own cgroup layout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab.test_bootstrap_lab import bootstrap, recap, variant

pytestmark = pytest.mark.lab

LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 6443)); s.listen(); print('listening', flush=True); time.sleep(600)\n"
)
# Input policy drop: SSH, loopback and replies only (the cluster's ports are not opened).
RULESET = """\
table inet pyctl_preflight_test {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    tcp dport 22 accept
  }
}
"""


def test_cgroup_v1_is_refused_on_kubelet_hosts_and_reported_on_netns_lab_hosts(lab, tmp_path):
    hosts = lab(nodes=2, kind="netns")
    as_lab = bootstrap(Path(hosts.inventory_path), "--phases", "preflight", state=tmp_path / "lab")
    assert as_lab.returncode == 0, as_lab.stdout + as_lab.stderr

    def real_servers(data):  # the same hosts, no longer marked as netns lab hosts
        data["all"]["vars"].pop("lab_kind")

    result = bootstrap(variant(hosts, tmp_path, real_servers), "--phases", "preflight", state=tmp_path / "real")
    seen = hosts.ssh("node1", "stat -fc %T /sys/fs/cgroup/").stdout.strip()  # the host's own view
    if seen == "cgroup2fs":
        assert result.returncode == 0, result.stdout + result.stderr
        return
    # this machine's hybrid v1/v2 layout: a netns host sees no cgroup2fs at /sys/fs/cgroup
    assert "ok          node1            Say that a netns lab host without cgroup v2 is not refused" in as_lab.stdout
    assert result.returncode == 1, result.stdout + result.stderr
    for host in ("node1", "node2"):
        assert (
            f"{host}: failed: [preflight] Fail when a Kubernetes node is not on cgroup v2: {host} is not on cgroup"
            f" v2 (/sys/fs/cgroup is {seen}, not cgroup2fs), and the kubelet of Kubernetes 1.35 and later refuses"
        ) in result.stderr.replace("\n", " ")


@pytest.mark.skipif(shutil.which("nft") is None and not os.environ.get("CI"), reason="nft is not installed")
def test_a_taken_port_and_a_firewall_that_drops_the_cluster_ports_are_named(lab, tmp_path):
    hosts = lab(nodes=2, kind="netns")
    node1, node2 = hosts.hosts
    enter = ["nsenter", f"--net=/run/netns/{node1.namespace}"]
    listener = subprocess.Popen([*enter, sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    firewall = ["nsenter", f"--net=/run/netns/{node2.namespace}", "nft"]
    try:
        assert listener.stdout.readline().strip() == "listening"
        comm = Path(f"/proc/{listener.pid}/comm").read_text().strip()  # nsenter execs the listener in place
        subprocess.run([*firewall, "-f", "-"], input=RULESET, check=True, text=True, timeout=30)
        result = bootstrap(Path(hosts.inventory_path), "--phases", "preflight", state=tmp_path / "state")
    finally:
        subprocess.run([*firewall, "delete", "table", "inet", "pyctl_preflight_test"], check=False, timeout=30)
        listener.kill()
        listener.wait(timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "node1: failed: [preflight] Fail when a port the cluster needs is taken: On node1 6443/tcp (the Kubernetes"
        f" API server) is taken by {comm} (pid {listener.pid}) on 0.0.0.0: stop or move what holds it"
    ) in result.stderr.replace("\n", " ")
    # node2 is a worker: the kubelet's port from the control plane, and flannel's from every host
    assert (
        "node2: failed: [preflight] Fail when the host firewall blocks a port the cluster needs: The firewall"
        f" (nftables) of node2 blocks 10250/tcp (the kubelet) from node1 ({node1.address}); 8472/udp (flannel's"
        f" VXLAN) from node1 ({node1.address})"
    ) in result.stderr.replace("\n", " ")
    assert recap(result.stdout)["node1"][2] == 1 and recap(result.stdout)["node2"][2] == 1
    assert yaml.safe_load(Path(hosts.inventory_path).read_text())["all"]["vars"]["lab_kind"] == "netns"

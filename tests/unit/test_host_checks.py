"""The preflight's judgements of a host, on recorded output: cgroup version, the cluster's ports (a re-run on
a bootstrapped host converges), the active firewall (nftables, ufw, firewalld), and the GPU driver against
the payload image's CUDA build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyctl import cuda, firewall, hostcheck, hostports
from pyctl.ansible_plugins.filter import pyctl_preflight

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "firewall"
DROP_POLICY = json.loads((FIXTURES / "nft-drop-policy.json").read_text())
DEBIAN_DEFAULT = json.loads((FIXTURES / "nft-debian-default.json").read_text())

# `ss -H -ltnup` on a bootstrapped control plane that is also the NFS server (format of iproute2 6.1).
SS_BOOTSTRAPPED = """\
tcp LISTEN 0      4096   127.0.0.1:10257 0.0.0.0:* users:(("kube-controller",pid=2201,fd=3))
tcp LISTEN 0      4096   127.0.0.1:10259 0.0.0.0:* users:(("kube-scheduler",pid=2202,fd=3))
tcp LISTEN 0      4096   10.20.0.11:2379 0.0.0.0:* users:(("etcd",pid=2100,fd=8))
tcp LISTEN 0      4096   10.20.0.11:2380 0.0.0.0:* users:(("etcd",pid=2100,fd=7))
tcp LISTEN 0      4096           *:6443       *:* users:(("kube-apiserver",pid=2300,fd=3))
tcp LISTEN 0      4096           *:10250      *:* users:(("kubelet",pid=1900,fd=12))
tcp LISTEN 0      64       0.0.0.0:2049 0.0.0.0:*
udp UNCONN 0      0        0.0.0.0:8472 0.0.0.0:*
tcp LISTEN 0      128      0.0.0.0:22   0.0.0.0:* users:(("sshd",pid=700,fd=3))
"""
VXLAN_FLANNEL = (
    "5: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group"
    " default \\    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff promiscuity 0 allmulti 0 minmtu 68 maxmtu"
    " 65535 \\    vxlan id 1 local 10.20.0.11 dev eth0 srcport 0 0 dstport 8472 nolearning ttl auto ageing 300"
)
ALL_ROLES = ["control_plane", "node", "nfs_server"]


def test_a_bootstrapped_host_holds_its_own_ports_and_a_rerun_is_not_refused():
    assert hostports.taken(ALL_ROLES, SS_BOOTSTRAPPED, VXLAN_FLANNEL) == []


def test_a_foreign_listener_on_a_cluster_port_is_named_with_its_process():
    ss = 'tcp LISTEN 0      128    127.0.0.1:6443 0.0.0.0:* users:(("python3",pid=12457,fd=3))\n'
    assert hostports.taken(["control_plane", "node"], ss) == [
        "6443/tcp (the Kubernetes API server) is taken by python3 (pid 12457) on 127.0.0.1"
    ]


def test_a_vxlan_socket_that_is_not_flannels_is_a_conflict():
    ss = "udp UNCONN 0      0        0.0.0.0:8472 0.0.0.0:*\n"
    cilium = VXLAN_FLANNEL.replace("flannel.1", "cilium_vxlan")
    assert hostports.taken(["node"], ss, cilium) == [
        "8472/udp (flannel's VXLAN) is taken by a kernel socket on 0.0.0.0"
    ]
    assert hostports.taken(["node"], ss, VXLAN_FLANNEL) == []


def test_workers_need_only_the_node_ports_and_the_nfs_server_2049():
    assert [p.label for p in hostports.needed(["node"])] == ["10250/tcp", "8472/udp"]
    assert [p.label for p in hostports.needed(["nfs_server"])] == ["2049/tcp"]
    labels = [p.label for p in hostports.needed(ALL_ROLES)]
    assert labels == ["6443/tcp", "2379/tcp", "2380/tcp", "10257/tcp", "10259/tcp", "10250/tcp", "8472/udp", "2049/tcp"]


@pytest.mark.parametrize(
    ("probe", "blocked"),
    [
        (firewall.Probe("tcp", 6443, "10.20.0.12"), False),  # the cluster subnet is allowed
        (firewall.Probe("tcp", 6443, "10.30.0.5"), True),  # another subnet: the final reject
        (firewall.Probe("tcp", 2379, "10.20.0.11"), False),  # accepted in the chain it jumps to
        (firewall.Probe("tcp", 2380, "10.20.0.12"), True),  # returned from it, then rejected
        (firewall.Probe("udp", 8472, "10.20.0.12"), False),
        (firewall.Probe("tcp", 8472, "10.20.0.12"), True),  # the accept is for udp
        (firewall.Probe("tcp", 2049, "10.20.0.12"), True),
        (firewall.Probe("tcp", 22, "10.30.0.5"), False),
        (firewall.Probe("tcp", 10250, ""), False),  # a source it cannot tell: never named blocked
    ],
)
def test_a_recorded_nftables_ruleset_is_judged_as_the_kernel_would(probe, blocked):
    assert firewall.nft_blocks(DROP_POLICY, probe) is blocked


def test_debians_shipped_nftables_conf_and_an_empty_ruleset_block_nothing():
    for port in (6443, 2049, 10250):
        assert not firewall.nft_blocks(DEBIAN_DEFAULT, firewall.Probe("tcp", port, "10.20.0.12"))
    assert not firewall.nft_blocks({"nftables": [{"metainfo": {}}]}, firewall.Probe("tcp", 6443, "10.20.0.12"))


UFW_STATUS = """\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), deny (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    Anywhere
6443/tcp                   ALLOW IN    10.20.0.0/24
2379:2380/tcp              ALLOW IN    10.20.0.11
10250                      DENY IN     10.20.0.99
10250                      ALLOW IN    Anywhere
22/tcp (v6)                ALLOW IN    Anywhere (v6)
"""


def test_ufw_rules_are_matched_first_to_last_before_the_default():
    def blocks(proto, port, source):
        return firewall.ufw_blocks(UFW_STATUS, firewall.Probe(proto, port, source))

    assert not blocks("tcp", 6443, "10.20.0.12")
    assert blocks("tcp", 6443, "10.30.0.5")
    assert not blocks("tcp", 2380, "10.20.0.11") and blocks("tcp", 2380, "10.20.0.12")
    assert blocks("tcp", 10250, "10.20.0.99") and not blocks("tcp", 10250, "10.20.0.12")
    assert blocks("udp", 8472, "10.20.0.12")
    assert not firewall.ufw_blocks("Status: inactive\n", firewall.Probe("udp", 8472, "10.20.0.12"))


FIREWALLD_ZONES = """\
trusted (active)
  target: ACCEPT
  icmp-block-inversion: no
  interfaces:
  sources: 10.20.0.11
  services:
  ports:

public (default, active)
  target: default
  icmp-block-inversion: no
  interfaces: eth0
  sources:
  services: dhcpv6-client ssh kube-apiserver
  ports: 8472/udp 10250/tcp
  forward: yes
  rich rules:
\trule family="ipv4" source address="10.20.0.0/24" port port="2049" protocol="tcp" accept

block
  target: %%REJECT%%
  ports: 6443/tcp
"""


def test_firewalld_zones_decide_by_source_then_by_the_active_zones():
    def blocks(proto, port, source):
        return firewall.firewalld_blocks(FIREWALLD_ZONES, firewall.Probe(proto, port, source))

    assert not blocks("tcp", 6443, "10.20.0.12")  # service kube-apiserver
    assert not blocks("tcp", 2379, "10.20.0.11")  # the trusted zone takes this source
    assert blocks("tcp", 2379, "10.20.0.12")
    assert not blocks("udp", 8472, "10.20.0.12") and not blocks("tcp", 10250, "10.20.0.12")
    assert not blocks("tcp", 2049, "10.20.0.12")  # the rich rule


def probe_output(cgroup: str, ss: str = "", nft: dict | None = None, ufw: str = "", vxlan: str = "") -> str:
    lines = [f"cgroup {cgroup}"] + [f"ss {line}" for line in ss.splitlines()]
    lines += [f"vxlan {line}" for line in vxlan.splitlines()]
    if nft is not None:
        lines.append("nft " + json.dumps(nft))
    lines += [f"ufw {line}" for line in ufw.splitlines()]
    return "\n".join(lines) + "\n"


def test_the_probe_is_judged_per_host_naming_each_blocked_port_and_peer():
    peers = {"node2": "10.20.0.12", "far": "10.30.0.5"}
    report = pyctl_preflight.host_check(probe_output("tmpfs", nft=DROP_POLICY), ["node"], peers, ["far"])
    assert report["cgroup_v2"] is False and report["cgroup"] == "tmpfs"
    assert report["firewall"] == "nftables"
    # 10250 is reached from the control plane only; 8472/udp from every host
    assert report["blocked"] == [
        "10250/tcp (the kubelet) from far (10.30.0.5)",
        "8472/udp (flannel's VXLAN) from far (10.30.0.5)",
    ]
    clean = pyctl_preflight.host_check(
        probe_output("cgroup2fs", SS_BOOTSTRAPPED, vxlan=VXLAN_FLANNEL), ALL_ROLES, peers, []
    )
    assert clean["cgroup_v2"] is True and clean["ports"] == [] and clean["blocked"] == [] and clean["firewall"] == ""


def test_an_active_ufw_decides_before_the_nftables_it_drives():
    report = hostcheck.judge(
        probe_output("cgroup2fs", nft=DROP_POLICY, ufw=UFW_STATUS),
        ["nfs_server"],
        [hostcheck.Peer("node2", "10.20.0.12", False)],
    )
    assert report["firewall"] == "ufw"
    assert report["blocked"] == ["2049/tcp (the NFS server) from node2 (10.20.0.12)"]


def summary(driver: str, cuda_version: str) -> str:
    """The header of plain `nvidia-smi` (driver 580 layout)."""
    return (
        "+-----------------------------------------------------------------------------------------+\n"
        f"| NVIDIA-SMI {driver}             Driver Version: {driver}     CUDA Version: {cuda_version}     |\n"
        "+-----------------------------------------+------------------------+----------------------+\n"
    )


def test_a_gpu_host_with_branch_570_cannot_run_the_cuda_13_payload():
    problem = cuda.driver_problem("gpu1", summary("570.195.03", "12.8"))
    assert problem.startswith("gpu1 has NVIDIA driver 570.195.03 (CUDA 12.8), but the payload image's torch 2.13.0")
    assert "driver branch 580 or newer" in problem and "nvidia-headless-580-server" in problem
    assert cuda.driver_problem("gpu1", summary("535.247.01", "12.2"))
    assert cuda.driver_problem("gpu1", summary("580.95.05", "13.0")) == ""
    assert cuda.driver_problem("gpu1", summary("590.44.01", "13.1")) == ""
    assert "does not report" in cuda.driver_problem("gpu1", "GPU 0: NVIDIA H100 (UUID: GPU-1)\n")


def test_the_driver_floor_follows_nvidias_minor_version_compatibility_table():
    assert pyctl_preflight.cuda_min_driver("13.0") == 580
    assert cuda.min_driver_branch("13.2") == 580
    assert cuda.min_driver_branch("12.6") == 525
    assert cuda.wheel_tag("13.0") == "cu130"
    with pytest.raises(ValueError, match=r"no driver floor is known for CUDA 14\.0"):
        cuda.min_driver_branch("14.0")

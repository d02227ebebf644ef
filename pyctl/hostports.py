"""The ports a cluster host must have free, and who may already hold them, judged from `ss -H -ltnup`.

Upstream sources (read 2026-12): Kubernetes "Ports and Protocols" (kubernetes.io/docs/reference/networking/
ports-and-protocols): control plane 6443 (API server), 2379-2380 (etcd), 10250 (kubelet), 10257
(kube-controller-manager), 10259 (kube-scheduler); every node 10250. kubeadm's preflight checks the same
control-plane ports (Port-6443, Port-10259, Port-10257, Port-10250, Port-2379, Port-2380). flannel's
vxlan backend (the pinned manifest) uses UDP 8472 on every node; NFSv4 uses TCP 2049 on the server.

A re-run must converge: a port held by the component that the cluster itself runs there (kube-apiserver on
6443, the kernel's nfsd on 2049, flannel's VXLAN device on 8472/udp ...) is not a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTROL_PLANE = "control_plane"
NODE = "node"
NFS_SERVER = "nfs_server"


@dataclass(frozen=True)
class Port:
    number: int
    proto: str
    purpose: str
    owners: tuple[str, ...]  # process names (ss shows the first 15 characters) that are the cluster's own
    kernel_owner: str = ""  # a socket with no process is ours when this kernel feature holds it
    peers: str = "cluster"  # who must reach it: "cluster" (every other host), "control_plane", or "" (nobody)

    @property
    def label(self) -> str:
        return f"{self.number}/{self.proto}"


PORTS: dict[str, tuple[Port, ...]] = {
    CONTROL_PLANE: (
        Port(6443, "tcp", "the Kubernetes API server", ("kube-apiserver",)),
        Port(2379, "tcp", "etcd clients", ("etcd",), peers="control_plane"),
        Port(2380, "tcp", "etcd peers", ("etcd",), peers="control_plane"),
        Port(10257, "tcp", "kube-controller-manager", ("kube-controller",), peers=""),
        Port(10259, "tcp", "kube-scheduler", ("kube-scheduler",), peers=""),
    ),
    NODE: (
        Port(10250, "tcp", "the kubelet", ("kubelet",), peers="control_plane"),
        Port(8472, "udp", "flannel's VXLAN", (), kernel_owner="flannel.1"),
    ),
    NFS_SERVER: (Port(2049, "tcp", "the NFS server", (), kernel_owner="nfsd"),),
}


@dataclass(frozen=True)
class Listener:
    proto: str
    address: str
    port: int
    process: str  # "" when ss names none (a kernel socket)
    pid: str


_USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')


def needed(roles: list[str]) -> list[Port]:
    """The ports a host with these roles (control_plane, node, nfs_server) needs, each once."""
    ports: dict[str, Port] = {}
    for role in roles:
        for port in PORTS.get(role, ()):
            ports.setdefault(port.label, port)
    return list(ports.values())


def listeners(ss_output: str) -> list[Listener]:
    """Listening TCP and bound UDP sockets from `ss -H -ltnup` (netid, state, queues, local, peer, process)."""
    found = []
    for line in ss_output.splitlines():
        cells = line.split()
        if len(cells) < 5 or cells[0] not in ("tcp", "udp"):
            continue
        local = cells[4]
        address, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        users = _USERS.search(line)
        found.append(
            Listener(cells[0], address, int(port), users.group(1) if users else "", users.group(2) if users else "")
        )
    return found


def taken(roles: list[str], ss_output: str, vxlan_output: str = "") -> list[str]:
    """One phrase per needed port that something other than the cluster holds ("6443/tcp (...) by python3 ...")."""
    problems = []
    held = listeners(ss_output)
    for port in needed(roles):
        for sock in (s for s in held if s.port == port.number and s.proto == port.proto):
            if sock.process and sock.process in port.owners:
                continue
            if not sock.process and port.kernel_owner and _kernel_holds(port, vxlan_output):
                continue
            who = f"{sock.process} (pid {sock.pid})" if sock.process else "a kernel socket"
            problems.append(f"{port.label} ({port.purpose}) is taken by {who} on {sock.address}")
            break
    return problems


def _kernel_holds(port: Port, vxlan_output: str) -> bool:
    if port.kernel_owner == "nfsd":  # the kernel NFS server pyctl's nfs_server role runs
        return True
    # `ip -d -o link show type vxlan`: "5: flannel.1: <...> ... vxlan id 1 ... dstport 8472 ..."
    return any(
        f" {port.kernel_owner}:" in f" {line}" and f"dstport {port.number} " in f"{line} "
        for line in vxlan_output.splitlines()
    )

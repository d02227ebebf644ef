"""What a lab is: its requested shape (LabSpec), its hosts and addresses, and the state file it keeps.

A lab named NAME lives in `settings.labs_dir / NAME`. Its network is one namespace, `pyctl-NAME`, holding
a bridge (`br0`) with the lab's gateway address. Host i is `node<i>` at `<subnet>.<10 + i>`. netns and
container hosts each get their own namespace `pyctl-NAME.node<i>` joined to the bridge by a veth whose
host end is `eth0`; VMs get a tap on the bridge and `eth0` inside (net.ifnames=0).

Every host records its own kind. A lab of one kind has hosts of that kind; a `mixed` lab has node1 (the
control plane and NFS server) as a VM, which has the kernel an NFS server needs, and its workers as
container hosts, which cost seconds to start rather than a VM's minute under TCG. Taps and veths sit on the
same bridge, so every host reaches every other and the gateway's services whatever its kind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyctl.errors import UsageError

HOST_KINDS = ("vm", "container", "netns")  # what one host can be
KINDS = (*HOST_KINDS, "mixed")  # what a lab can be: one host kind for all, or mixed (node1 vm, the rest container)
DEFAULT_KIND = "vm"
DEFAULT_NAME = "default"
DEFAULT_NODES = 3
# Per kind: a VM needs 1 GiB; a container or netns host a few MiB (addresses: the /24 holds .11 to .254).
# A mixed lab has one VM and container hosts after it.
MAX_NODES = {"vm": 50, "container": 100, "netns": 200, "mixed": 100}
MIN_NODES = {"mixed": 2}
# Host kinds that boot the lab image and use the lab's services on its gateway (apt proxy, repository server).
SERVICE_KINDS = ("vm", "container")

NAMESPACE_PREFIX = "pyctl-"
BRIDGE = "br0"
HOST_IFACE = "eth0"  # the interface carrying each host's lab address, on every kind
HOST_OFFSET = 10  # node<i> gets <subnet>.<HOST_OFFSET + i>
APT_PROXY_PORT = 3142

# Lab subnets are /24s inside this range, one per lab. They live only inside the lab's namespaces, and
# must stay clear of the Kubernetes ranges the inventory sets (one source for both: these constants).
LAB_NETWORKS = ipaddress.ip_network("10.213.0.0/16")
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"

STATE_VERSION = 1
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$|^[a-z]$")


def check_name(name: str) -> str:
    if not _NAME.match(name) or "--" in name:
        raise UsageError(
            f"lab name {name!r} is not valid",
            hint="use 1-24 lower-case letters, digits and single dashes, starting with a letter",
        )
    return name


@dataclass(frozen=True)
class LabSpec:
    """The shape a user asks for. `gpu_nodes` marks the last K hosts gpu=true in the inventory, no more."""

    name: str = DEFAULT_NAME
    nodes: int = DEFAULT_NODES
    kind: str = DEFAULT_KIND
    gpu_nodes: int = 0
    vm_memory_mib: int = 1024
    vm_cpus: int = 1
    os: str = "debian-12"  # vm and container hosts: the image's operating system (pyctl.lab.image.OPERATING_SYSTEMS)

    def validate(self) -> LabSpec:
        check_name(self.name)
        if self.kind not in KINDS:
            raise UsageError(f"lab kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "mixed" and self.nodes == 1:
            raise UsageError(
                "--nodes 1: a mixed lab is a VM (node1) and container hosts after it; for one host use --kind vm"
            )
        low = MIN_NODES.get(self.kind, 1)
        if not low <= self.nodes <= MAX_NODES[self.kind]:
            raise UsageError(f"--nodes {self.nodes}: a {self.kind} lab has {low} to {MAX_NODES[self.kind]} hosts")
        if not 0 <= self.gpu_nodes <= self.nodes:
            raise UsageError(f"--gpu-nodes {self.gpu_nodes}: give 0 to {self.nodes} (the lab has {self.nodes} hosts)")
        if self.vm_memory_mib < 256 or self.vm_cpus < 1:
            raise UsageError("a VM needs at least 256 MiB of memory and 1 CPU")
        from pyctl.lab.image import DEFAULT_OS, OPERATING_SYSTEMS

        if self.os not in OPERATING_SYSTEMS:
            raise UsageError(f"--os {self.os}: lab hosts run one of {', '.join(OPERATING_SYSTEMS)}")
        if self.kind == "netns" and self.os != DEFAULT_OS:
            raise UsageError(f"--os {self.os}: netns hosts run this machine's own system; use --kind container or vm")
        return self

    @property
    def host_kinds(self) -> tuple[str, ...]:
        """The kinds of host this lab will have, in the order of its hosts."""
        return tuple(dict.fromkeys(host_kind(self.kind, i) for i in range(1, self.nodes + 1)))


def host_kind(lab_kind: str, index: int) -> str:
    """The kind of host `node<index>` is in a lab of `lab_kind`: mixed labs have node1 a VM, the rest containers."""
    if lab_kind == "mixed":
        return "vm" if index == 1 else "container"
    return lab_kind


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int
    address: str
    groups: tuple[str, ...]
    gpu: bool
    namespace: str | None = None  # netns and container hosts: the host's own network namespace
    mac: str | None = None  # VMs: the MAC dnsmasq hands the address to
    kind: str = DEFAULT_KIND  # vm, container or netns (HOST_KINDS): which driver starts it

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["groups"] = list(self.groups)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabHost:
        return cls(**{**data, "groups": tuple(data["groups"])})


@dataclass
class Lab:
    """A lab as recorded in its state file. Paths are derived from `dir`."""

    name: str
    kind: str  # one of KINDS; each host's own kind is host.kind
    dir: Path
    subnet: str
    hosts: list[LabHost]
    gpu_nodes: int = 0
    vm_memory_mib: int = 1024
    vm_cpus: int = 1
    phase: str = "creating"  # creating -> ready
    image: str | None = None  # the root filesystem recipe hash (vm, container)
    accel: str | None = None  # vm: kvm or tcg
    apt_proxy: str | None = None  # vm, container: http://gateway:3142
    extra: dict[str, Any] = field(default_factory=dict)
    os: str = "debian-12"  # vm, container: the image's operating system

    # --- names and paths ------------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return namespace_name(self.name)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def nodes(self) -> int:
        return len(self.hosts)

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def ssh_config_path(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def key_path(self) -> Path:
        return self.dir / "id_ed25519"

    def host_dir(self, host: LabHost | str) -> Path:
        return self.dir / "hosts" / (host if isinstance(host, str) else host.name)

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if name in (host.name, host.address):
                return host
        raise UsageError(f"lab {self.name} has no host {name!r}", hint=f"its hosts: {self.host_names()}")

    def etc_hosts(self) -> str:
        """/etc/hosts for every lab host: localhost, then each host's name at its lab address."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address}\t{h.name}" for h in self.hosts]
        return "\n".join(lines) + "\n"

    def host_names(self) -> str:
        return ", ".join(h.name for h in self.hosts)

    @property
    def host_kinds(self) -> tuple[str, ...]:
        """The kinds of its hosts, each once, in host order (one for a lab of one kind)."""
        return tuple(dict.fromkeys(h.kind for h in self.hosts))

    @property
    def uses_services(self) -> bool:
        """Whether any host uses the lab's apt proxy and repository server (vm and container hosts do)."""
        return any(h.kind in SERVICE_KINDS for h in self.hosts)

    def hosts_of(self, kind: str) -> list[LabHost]:
        return [h for h in self.hosts if h.kind == kind]

    def describe(self) -> str:
        """'3 vm hosts' or '1 vm + 2 container hosts'."""
        counts = " + ".join(f"{len(self.hosts_of(k))} {k}" for k in self.host_kinds)
        return f"{counts} host{'s' if self.nodes != 1 else ''}"

    def same_shape(self, spec: LabSpec) -> bool:
        return (self.kind, self.nodes, self.os) == (spec.kind, spec.nodes, spec.os) and (
            "vm" not in self.host_kinds or (self.vm_memory_mib, self.vm_cpus) == (spec.vm_memory_mib, spec.vm_cpus)
        )

    # --- using the lab ------------------------------------------------------------------------

    def ssh_argv(
        self,
        host: LabHost | str,
        command: str | Sequence[str] = (),
        *,
        connect_timeout: int = 10,
        subsystem: str | None = None,
    ) -> list[str]:
        """`ssh` through the lab's ssh_config; a list command is quoted for the remote shell."""
        name = host if isinstance(host, str) else host.name
        argv = ["ssh", "-F", str(self.ssh_config_path), "-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={connect_timeout}"]
        if subsystem:
            return [*argv, "-s", name, subsystem]
        remote = command if isinstance(command, str) else shlex.join(command)
        return [*argv, name, "--", remote] if remote else [*argv, name]

    def ssh(
        self, host: LabHost | str, command: str | Sequence[str], *, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a lab host; returns its output (text). Raises CalledProcessError when check.

        ssh gets a private /dev/null as stdin: it switches its stdin to non-blocking and does not switch it
        back when it is killed (timeout), which would leave the caller's stdin non-blocking, and Ansible
        refuses to start on a non-blocking stdin.
        """
        return subprocess.run(
            self.ssh_argv(host, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def connection(self, host: LabHost | str) -> Any:
        """A fabric Connection to a lab host: ssh_config (ProxyCommand, key) honoured, host key pinned."""
        import paramiko
        from fabric import Config, Connection

        name = host if isinstance(host, str) else host.name
        config = Config(runtime_ssh_path=str(self.ssh_config_path), overrides={"load_ssh_configs": True})
        conn = Connection(name, config=config, connect_kwargs={"look_for_keys": False, "allow_agent": False})
        conn.client.load_host_keys(str(self.known_hosts_path))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn

    # --- the state file -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "kind": self.kind,
            "subnet": self.subnet,
            "gpu_nodes": self.gpu_nodes,
            "vm_memory_mib": self.vm_memory_mib,
            "vm_cpus": self.vm_cpus,
            "phase": self.phase,
            "image": self.image,
            "accel": self.accel,
            "apt_proxy": self.apt_proxy,
            "os": self.os,
            "namespace": self.namespace,
            "hosts": [h.to_dict() for h in self.hosts],
            "extra": self.extra,
        }

    def summary(self) -> dict[str, Any]:
        """What `pyctl lab up --json` prints."""
        return {
            "name": self.name,
            "kind": self.kind,
            "os": self.os,
            "inventory": str(self.inventory_path),
            "ssh_config": str(self.ssh_config_path),
            "namespace": self.namespace,
            "subnet": self.subnet,
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "kind": h.kind,
                    "groups": list(h.groups),
                    "gpu": h.gpu,
                }
                for h in self.hosts
            ],
        }

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.state_path)

    @classmethod
    def load(cls, directory: Path) -> Lab | None:
        """The lab recorded in `directory`, or None when there is no readable state file."""
        try:
            data = json.loads((directory / "state.json").read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                return None
            return cls(
                name=data["name"],
                kind=data["kind"],
                dir=directory,
                subnet=data["subnet"],
                # A state file written before hosts carried their kind: every host is of the lab's kind.
                hosts=[LabHost.from_dict({"kind": data["kind"], **h}) for h in data["hosts"]],
                gpu_nodes=data.get("gpu_nodes", 0),
                vm_memory_mib=data.get("vm_memory_mib", 1024),
                vm_cpus=data.get("vm_cpus", 1),
                phase=data.get("phase", "creating"),
                image=data.get("image"),
                accel=data.get("accel"),
                apt_proxy=data.get("apt_proxy"),
                extra=data.get("extra", {}),
                os=data.get("os", "debian-12"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def namespace_name(lab: str) -> str:
    return f"{NAMESPACE_PREFIX}{lab}"


def host_namespace_name(lab: str, host: str) -> str:
    # A dot cannot appear in a lab name, so pyctl-a.node1 never collides with another lab's namespace.
    return f"{NAMESPACE_PREFIX}{lab}.{host}"


def subnet_for(index: int) -> str:
    return str(list(LAB_NETWORKS.subnets(new_prefix=24))[index])


def preferred_subnet_index(name: str) -> int:
    """Where to start looking for a free subnet: stable per name, so a re-created lab keeps its addresses."""
    return 1 + zlib.crc32(name.encode()) % 250


def plan_hosts(spec: LabSpec, subnet: str) -> list[LabHost]:
    network = ipaddress.IPv4Network(subnet)
    hosts = []
    for index in range(1, spec.nodes + 1):
        name = f"node{index}"
        groups = ("control_plane", "nfs_server") if index == 1 else ("workers",)
        if spec.nodes == 1:
            groups = ("control_plane", "nfs_server")
        address = str(network.network_address + HOST_OFFSET + index)
        kind = host_kind(spec.kind, index)
        hosts.append(
            LabHost(
                name=name,
                index=index,
                address=address,
                groups=groups,
                gpu=index > spec.nodes - spec.gpu_nodes,
                namespace=host_namespace_name(spec.name, name) if kind in ("netns", "container") else None,
                mac=_mac(network, index) if kind == "vm" else None,
                kind=kind,
            )
        )
    return hosts


def _mac(network: ipaddress.IPv4Network, index: int) -> str:
    third = int(network.network_address) >> 8 & 0xFF
    return f"52:54:00:d5:{third:02x}:{index:02x}"


def lab_dirs(labs_dir: Path) -> list[Path]:
    if not labs_dir.is_dir():
        return []
    return sorted(p for p in labs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def used_subnets(labs_dir: Path, except_name: str | None = None) -> set[str]:
    used = set()
    for directory in lab_dirs(labs_dir):
        if directory.name == except_name:
            continue
        lab = Lab.load(directory)
        if lab is not None:
            used.add(lab.subnet)
    return used


def is_root() -> bool:
    return os.geteuid() == 0

"""The lab's network: namespaces, the bridge, and the links that join hosts to it.

Nothing is added to the root network namespace: the bridge, its gateway address, veths, taps and every
service bound to the lab network live inside `pyctl-NAME`. Each namespace pyctl makes carries a marker
(the alias of its bridge or of its `eth0`) naming the lab directory that owns it, so pyctl can tell its
own leftovers from a namespace someone else made under the same name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pyctl.lab.model import BRIDGE, HOST_IFACE, NAMESPACE_PREFIX
from pyctl.lab.processes import ns_inode, run

NETNS_DIR = Path("/run/netns")
_MARKER = "pyctl-lab "


def marker_for(lab_dir: Path) -> str:
    return f"{_MARKER}{lab_dir}"


def ns_path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return ns_path(name).exists()


def inode(name: str) -> int | None:
    return ns_inode(ns_path(name))


def lab_namespaces(lab: str) -> list[str]:
    """The lab namespace and its host namespaces that exist now (pyctl-LAB, pyctl-LAB.*)."""
    if not NETNS_DIR.is_dir():
        return []
    main = f"{NAMESPACE_PREFIX}{lab}"
    names = [p.name for p in NETNS_DIR.iterdir() if p.name == main or p.name.startswith(f"{main}.")]
    return sorted(names, key=lambda n: (n == main, n))  # host namespaces first, the lab's last


def all_pyctl_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NAMESPACE_PREFIX))


def marker(name: str) -> str | None:
    """The owner marker of a namespace: the alias of its bridge (lab) or eth0 (host); None if unmarked."""
    for link in (BRIDGE, HOST_IFACE):
        result = run(["ip", "-n", name, "-j", "link", "show", "dev", link], check=False, timeout=10)
        if result.returncode == 0:
            try:
                alias = json.loads(result.stdout)[0].get("ifalias", "")
            except (ValueError, IndexError, AttributeError):
                alias = ""
            if alias.startswith(_MARKER):
                return alias
    return None


def owned_by(name: str, lab_dir: Path) -> bool:
    return marker(name) == marker_for(lab_dir)


def _batch(namespace: str, commands: list[list[str]], what: str) -> None:
    """Run several `ip` commands inside one namespace with a single `ip -batch` (one exec, not many)."""
    lines = "".join(" ".join(f'"{arg}"' if " " in arg else arg for arg in command) + "\n" for command in commands)
    run(["ip", "-n", namespace, "-batch", "-"], input=lines, what=what)


def create_lab_namespace(name: str, gateway: str, prefixlen: int, lab_dir: Path) -> None:
    """The lab namespace: loopback up, and the bridge with the gateway address and the owner marker."""
    run(["ip", "netns", "add", name], what=f"creating network namespace {name}")
    _batch(
        name,
        [
            ["link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"],
            ["link", "set", BRIDGE, "alias", marker_for(lab_dir)],
            ["addr", "add", f"{gateway}/{prefixlen}", "dev", BRIDGE],
            ["link", "set", "lo", "up"],
            ["link", "set", BRIDGE, "up"],
        ],
        what=f"setting up the bridge in {name}",
    )


@dataclass(frozen=True)
class HostLink:
    namespace: str  # the host's own namespace
    port: str  # the veth end on the lab bridge
    address: str  # the host's address on its eth0


def create_host_namespaces(lab_ns: str, links: list[HostLink], prefixlen: int, lab_dir: Path) -> None:
    """Each host's own namespace joined to the lab bridge: `port` on the bridge, `eth0` with its address."""
    for link in links:
        run(["ip", "netns", "add", link.namespace], what=f"creating network namespace {link.namespace}")
    commands = []
    for link in links:
        commands.append(["link", "add", link.port, "type", "veth", "peer", "name", HOST_IFACE, "netns", link.namespace])
        commands.append(["link", "set", link.port, "master", BRIDGE, "up"])
    _batch(lab_ns, commands, what=f"joining hosts to the bridge in {lab_ns}")
    for link in links:
        _batch(
            link.namespace,
            [
                ["link", "set", HOST_IFACE, "alias", marker_for(lab_dir)],
                ["addr", "add", f"{link.address}/{prefixlen}", "dev", HOST_IFACE],
                ["link", "set", "lo", "up"],
                ["link", "set", HOST_IFACE, "up"],
            ],
            what=f"setting up {HOST_IFACE} in {link.namespace}",
        )


def create_taps(lab_ns: str, taps: list[str]) -> None:
    commands = []
    for tap in taps:
        commands.append(["tuntap", "add", "dev", tap, "mode", "tap"])
        commands.append(["link", "set", tap, "master", BRIDGE, "up"])
    _batch(lab_ns, commands, what=f"creating taps in {lab_ns}")


def delete(name: str) -> bool:
    """Remove a namespace (its links go with it). True if it existed."""
    if not exists(name):
        return False
    result = run(["ip", "netns", "delete", name], check=False, timeout=30)
    if result.returncode != 0 and exists(name):
        # `ip netns add` may have died between creating the file and bind-mounting the namespace on it.
        run(["umount", "-l", str(ns_path(name))], check=False, timeout=30)
        ns_path(name).unlink(missing_ok=True)
    return True

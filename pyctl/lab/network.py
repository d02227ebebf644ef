"""The lab's network: namespaces, the bridge, and the links that join hosts to it.

Nothing is added to the root network namespace: the bridge, its gateway address, veths, taps and every
service bound to the lab network live inside `pyctl-NAME`. Each namespace pyctl makes carries a marker
(the alias of its bridge or of its `eth0`) naming the lab directory that owns it, so pyctl can tell its
own leftovers from a namespace someone else made under the same name.
"""

from __future__ import annotations

import json
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


def create_lab_namespace(name: str, gateway: str, prefixlen: int, lab_dir: Path) -> None:
    """The lab namespace: loopback up, and the bridge with the gateway address and the owner marker."""
    run(["ip", "netns", "add", name], what=f"creating network namespace {name}")
    run(["ip", "-n", name, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "-n", name, "link", "set", BRIDGE, "alias", marker_for(lab_dir)])
    run(["ip", "-n", name, "addr", "add", f"{gateway}/{prefixlen}", "dev", BRIDGE])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    run(["ip", "-n", name, "link", "set", BRIDGE, "up"])


def create_host_namespace(lab_ns: str, host_ns: str, *, port: str, address: str, prefixlen: int, lab_dir: Path) -> None:
    """A host's own namespace joined to the lab bridge: `port` on the bridge, `eth0` with `address` inside."""
    run(["ip", "netns", "add", host_ns], what=f"creating network namespace {host_ns}")
    run(
        [
            "ip",
            "-n",
            lab_ns,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IFACE,
            "netns",
            host_ns,
        ]
    )
    run(["ip", "-n", host_ns, "link", "set", HOST_IFACE, "alias", f"{marker_for(lab_dir)}"])
    run(["ip", "-n", lab_ns, "link", "set", port, "master", BRIDGE, "up"])
    run(["ip", "-n", host_ns, "addr", "add", f"{address}/{prefixlen}", "dev", HOST_IFACE])
    run(["ip", "-n", host_ns, "link", "set", "lo", "up"])
    run(["ip", "-n", host_ns, "link", "set", HOST_IFACE, "up"])


def create_tap(lab_ns: str, tap: str) -> None:
    run(["ip", "-n", lab_ns, "tuntap", "add", "dev", tap, "mode", "tap"], what=f"creating tap {tap}")
    run(["ip", "-n", lab_ns, "link", "set", tap, "master", BRIDGE, "up"])


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

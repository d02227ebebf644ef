"""IPv4 helpers for the nfs_server role (no netaddr needed on the controller)."""

from __future__ import annotations

import ipaddress
from typing import Any


def nfs_server_host_ipv4(host: Any) -> str:
    """A host's cluster address from its hostvars: ansible_host when it is an IPv4 address, else the address
    of its default route (facts), else ''."""
    facts = host.get("ansible_facts") or {}
    candidates = [host.get("ansible_host"), (facts.get("default_ipv4") or {}).get("address")]
    for candidate in candidates:
        try:
            return str(ipaddress.IPv4Address(str(candidate).strip()))
        except ValueError:
            continue
    return ""


def nfs_server_interface_network(facts: dict, address: str) -> str:
    """The network (CIDR) of the interface in `facts` that carries `address`, or ''."""
    for name in facts.get("interfaces", []):
        iface = facts.get(name.replace("-", "_")) or facts.get(name) or {}
        entries = [iface.get("ipv4") or {}, *(iface.get("ipv4_secondaries") or [])]
        for entry in entries:
            if entry.get("address") == address and entry.get("prefix"):
                return str(ipaddress.IPv4Interface(f"{address}/{entry['prefix']}").network)
    return ""


def nfs_server_cidr_problem(cidr: str) -> str:
    """Why `cidr` must not be exported to ('' when it is a proper IPv4 network)."""
    text = str(cidr).strip()
    if not text or "*" in text:
        return "it is empty or a wildcard"
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        return "it is not an IPv4 network in CIDR form (like 10.0.0.0/24)"
    if network.prefixlen == 0:
        return "it is the whole Internet"
    if str(network) != text and "/" in text:
        return f"it has host bits set (the network is {network})"
    return ""


def nfs_server_outside(addresses: list[str], cidr: str) -> list[str]:
    """The addresses (literal IPv4) that lie outside `cidr`."""
    network = ipaddress.IPv4Network(str(cidr), strict=False)
    return [a for a in addresses if ipaddress.IPv4Address(a) not in network]


class FilterModule:
    def filters(self) -> dict:
        return {
            "nfs_server_host_ipv4": nfs_server_host_ipv4,
            "nfs_server_interface_network": nfs_server_interface_network,
            "nfs_server_cidr_problem": nfs_server_cidr_problem,
            "nfs_server_outside": nfs_server_outside,
        }

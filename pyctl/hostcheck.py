"""The preflight's judgement of one host's read-only probe (roles/preflight/vars/main.yml, _preflight_probe):
its cgroup version, the cluster's ports, and its active firewall. The probe prints one fact per line:

    cgroup FSTYPE                 (stat -fc %T /sys/fs/cgroup: cgroup2fs on a pure cgroup v2 host)
    ss LINE                       (ss -H -ltnup)
    vxlan LINE                    (ip -d -o link show type vxlan)
    nft JSON                      (nft -j list ruleset, where nft is installed)
    ufw LINE                      (ufw status verbose, where ufw is installed)
    firewalld LINE                (firewall-cmd --list-all-zones, where firewalld is running)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyctl import firewall, hostports


@dataclass(frozen=True)
class Peer:
    name: str
    address: str  # an IPv4 address, or "" when the inventory names the host by DNS name
    control_plane: bool


def sections(stdout: str) -> dict[str, str]:
    """Probe lines grouped by their first word, the rest of each line kept."""
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        found.setdefault(key, []).append(rest)
    return {key: "\n".join(lines) for key, lines in found.items()}


def judge(stdout: str, roles: list[str], peers: list[Peer]) -> dict[str, Any]:
    """{cgroup: FSTYPE, cgroup_v2: bool, ports: [phrase], firewall: NAME or '', blocked: [phrase]}."""
    facts = sections(stdout)
    cgroup = facts.get("cgroup", "").strip()
    name, blocks = _active_firewall(facts)
    blocked = []
    if blocks:
        for port in hostports.needed(roles):
            sources = [
                p for p in peers if port.peers == "cluster" or (port.peers == "control_plane" and p.control_plane)
            ]
            if not port.peers:
                continue
            denied = [p for p in sources if blocks(firewall.Probe(port.proto, port.number, p.address))]
            if denied:
                who = ", ".join(f"{p.name} ({p.address})" if p.address else p.name for p in denied)
                blocked.append(f"{port.label} ({port.purpose}) from {who}")
    return {
        "cgroup": cgroup or "unknown",
        "cgroup_v2": cgroup == "cgroup2fs",
        "ports": hostports.taken(roles, facts.get("ss", ""), facts.get("vxlan", "")),
        "firewall": name,
        "blocked": blocked,
    }


def _active_firewall(facts: dict[str, str]):
    """The firewall that decides (ufw and firewalld drive nftables/iptables themselves, so they come first)."""
    if "Status: active" in facts.get("ufw", ""):
        return "ufw", lambda probe: firewall.ufw_blocks(facts["ufw"], probe)
    if facts.get("firewalld", "").strip():
        return "firewalld", lambda probe: firewall.firewalld_blocks(facts["firewalld"], probe)
    if facts.get("nft", "").strip():
        ruleset = facts["nft"]
        return "nftables", lambda probe: firewall.nft_blocks(ruleset, probe)
    return "", None

"""Would the host's active firewall let a new connection from a peer reach a port? Read-only judgements of
what `nft -j list ruleset`, `ufw status verbose` and `firewall-cmd --list-all-zones` print.

The judgement errs towards "allowed": a rule whose match it cannot evaluate counts as matching when it
accepts and as not matching when it drops, so a port is named blocked only when the ruleset surely drops
it. Formats (read 2026-12): nftables JSON (libnftables-json(5), nftables 1.0.x), ufw 0.36 `status verbose`,
firewalld 1.x `--list-all-zones`, with service ports from firewalld's config/services/*.xml.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """A new connection (ct state new) from `source` (an IPv4 address, or '' when unknown) to proto/port."""

    proto: str
    port: int
    source: str = ""


# --- nftables --------------------------------------------------------------------------------------------


def nft_blocks(ruleset: Any, probe: Probe) -> bool:
    """True when an input base chain (inet or ip family) surely drops or rejects the probe."""
    data = json.loads(ruleset) if isinstance(ruleset, str) else ruleset
    items = (data or {}).get("nftables", [])
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[list[dict[str, Any]]]] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r.get("expr", []))
    bases = [
        (c.get("prio", 0), key)
        for key, c in chains.items()
        if c.get("hook") == "input" and c.get("type", "filter") == "filter" and key[0] in ("inet", "ip")
    ]
    for _prio, key in sorted(bases):
        verdict = _run_chain(key, rules, probe, depth=0)
        if verdict is None:
            verdict = chains[key].get("policy", "accept")
        if verdict in ("drop", "reject"):
            return True
    return False


def _run_chain(key, rules, probe: Probe, depth: int) -> str | None:
    """The chain's verdict for the probe: 'accept', 'drop', 'reject', or None (fell through / returned)."""
    if depth > 16:
        return None
    for expr in rules.get(key, []):
        known = True
        verdict = None
        for stmt in expr:
            if "match" in stmt:
                result = _match(stmt["match"], probe)
                if result is False:
                    verdict = "skip"
                    break
                known = known and result is True
            elif "vmap" in stmt:
                verdict = _vmap(stmt["vmap"], probe)
                verdict = verdict if verdict in ("accept", "drop", "reject") else "skip"
                break
            elif any(v in stmt for v in ("accept", "drop", "reject", "jump", "goto", "return", "queue")):
                verdict = next(iter(stmt))
                target = stmt[verdict].get("target") if isinstance(stmt[verdict], dict) else None
                if verdict in ("jump", "goto"):
                    sub = _run_chain((key[0], key[1], target), rules, probe, depth + 1)
                    if sub is None:
                        verdict = "return" if verdict == "goto" and known else "skip"
                    else:
                        verdict = sub if known or sub == "accept" else "skip"
                break
        if verdict in (None, "skip") or (not known and verdict in ("drop", "reject")):
            continue
        if verdict == "return":
            return None
        return "accept" if verdict == "queue" else verdict
    return None


def _vmap(vmap: dict[str, Any], probe: Probe) -> str | None:
    value = _left(vmap.get("key"), probe)
    if value is None:
        return None
    for element in (vmap.get("data") or {}).get("set", []):
        if isinstance(element, list) and len(element) == 2 and _equals(value, element[0]) is True:
            return next(iter(element[1]))
    return None


def _left(left: Any, probe: Probe) -> Any:
    """The probe's value for an nft expression; False for 'the packet cannot match'; None for unknown."""
    if not isinstance(left, dict):
        return None
    if "payload" in left:
        protocol, field = left["payload"].get("protocol"), left["payload"].get("field")
        if protocol in ("tcp", "udp") and field in ("dport", "sport"):
            return (probe.port if field == "dport" else None) if protocol == probe.proto else False
        if protocol == "th" and field == "dport":
            return probe.port
        if protocol == "ip" and field == "saddr":
            return probe.source or None
        if protocol == "ip" and field == "protocol":
            return probe.proto
        if protocol == "ip6":
            return False
        return None
    if "meta" in left:
        key = left["meta"].get("key")
        return {"l4proto": probe.proto, "nfproto": "ipv4", "protocol": "ip", "iifname": "<not lo>"}.get(key)
    if "ct" in left and left["ct"].get("key") == "state":
        return "new"
    return None


def _match(match: dict[str, Any], probe: Probe) -> bool | None:
    value = _left(match.get("left"), probe)
    if value is False:
        return False
    if value is None:
        return None
    op, right = match.get("op", "=="), match.get("right")
    if value == "<not lo>":  # the probe arrives on a cluster interface, never on lo
        if right == "lo":
            return op == "!="
        return None
    hit = _equals(value, right)
    if hit is None:
        return None
    return (not hit) if op == "!=" else hit if op in ("==", "in") else None


def _equals(value: Any, right: Any) -> bool | None:
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if isinstance(right, list):
        results = [_equals(value, r) for r in right]
        return True if True in results else (None if None in results else False)
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return _compare(value, low, high)
    if isinstance(right, dict) and "prefix" in right:
        return _in_network(value, f"{right['prefix']['addr']}/{right['prefix']['len']}")
    if isinstance(value, str) and _is_ip(value) and isinstance(right, str) and _is_ip(right):
        return ipaddress.ip_address(value) == ipaddress.ip_address(right)
    if isinstance(right, (int, str)):
        return str(value) == str(right)
    return None


def _compare(value: Any, low: Any, high: Any) -> bool | None:
    try:
        return int(low) <= int(value) <= int(high)
    except (TypeError, ValueError):
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _in_network(value: Any, network: str) -> bool | None:
    try:
        return ipaddress.ip_address(str(value)) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return None


# --- ufw -------------------------------------------------------------------------------------------------

_UFW_RULE = re.compile(
    r"^(?P<to>\S.*?)\s{2,}(?P<action>ALLOW|DENY|REJECT|LIMIT)(?: (?P<dir>IN|OUT|FWD))?\s{2,}(?P<frm>.+)$"
)


def ufw_blocks(status: str, probe: Probe) -> bool:
    """True when an active ufw (`ufw status verbose`) surely denies the probe: first matching rule, else default."""
    if not re.search(r"^Status: active", status, re.M):
        return False
    default = re.search(r"^Default: (\w+) \(incoming\)", status, re.M)
    for line in status.splitlines():
        rule = _UFW_RULE.match(line.strip())
        if not rule or "(v6)" in line or rule["dir"] in ("OUT", "FWD"):
            continue
        hit = _ufw_to(rule["to"], probe)
        source = _ufw_from(rule["frm"], probe)
        if hit is False or source is False:
            continue
        allows = rule["action"] in ("ALLOW", "LIMIT")
        if hit is None or source is None:
            if allows:
                return False
            continue
        return not allows
    return bool(default) and default.group(1) in ("deny", "reject")


def _ufw_to(to: str, probe: Probe) -> bool | None:
    to = to.strip()
    if to == "Anywhere":
        return True
    spec = re.fullmatch(r"(?:(\S+) )?([0-9][0-9,:]*)(?:/(tcp|udp))?", to)
    if not spec:
        return None  # an application profile, an interface: cannot tell
    if spec.group(3) and spec.group(3) != probe.proto:
        return False
    for part in spec.group(2).split(","):
        low, _, high = part.partition(":")
        if int(low) <= probe.port <= int(high or low):
            return True
    return False


def _ufw_from(frm: str, probe: Probe) -> bool | None:
    frm = frm.strip()
    if frm == "Anywhere":
        return True
    address = frm.split()[0]
    if not probe.source:
        return None
    return _in_network(probe.source, address)


# --- firewalld -------------------------------------------------------------------------------------------

# firewalld's services (config/services/<name>.xml) that open the cluster's ports.
FIREWALLD_SERVICES: dict[str, tuple[str, ...]] = {
    "kube-api": ("6443/tcp",),
    "kube-apiserver": ("6443/tcp",),
    "etcd-client": ("2379/tcp",),
    "etcd-server": ("2380/tcp",),
    "kubelet": ("10250/tcp",),
    "kubelet-worker": ("10250/tcp",),
    "kube-controller-manager": ("10257/tcp",),
    "kube-scheduler": ("10259/tcp",),
    "kube-control-plane": ("6443/tcp", "2379-2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp"),
    "kube-worker": ("10250/tcp",),
    "nfs": ("2049/tcp",),
    "nfs3": ("2049/tcp", "2049/udp"),
}


def firewalld_blocks(zones: str, probe: Probe) -> bool:
    """True when no active zone that could take the probe (`firewall-cmd --list-all-zones`) opens its port."""
    parsed = _firewalld_zones(zones)
    active = [z for z in parsed if z["active"] or z["default"]]
    by_source = [z for z in active if probe.source and any(_in_network(probe.source, s) for s in z["sources"])]
    # without a source binding, the zone of the receiving interface (unknown here: any such zone) or the default
    candidates = by_source or [z for z in active if z.get("interfaces", "").split() or z["default"]]
    return bool(candidates) and not any(_zone_allows(z, probe) for z in candidates)


def _firewalld_zones(text: str) -> list[dict[str, Any]]:
    zones: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.strip().startswith("rule ") and zones:
            zones[-1]["rich rules"] = zones[-1].get("rich rules", "") + "\n" + line.strip()
            continue
        header = re.match(r"^(\S+)(?: \(([^)]*)\))?\s*$", line)
        if header:
            flags = header.group(2) or ""
            zones.append({"name": header.group(1), "active": "active" in flags, "default": "default" in flags})
            continue
        field = re.match(r"^\s+([a-z -]+):\s?(.*)$", line)
        if field and zones:
            zones[-1][field.group(1).strip()] = field.group(2).strip()
    for zone in zones:
        zone["sources"] = zone.get("sources", "").split()
    return zones


def _zone_allows(zone: dict[str, Any], probe: Probe) -> bool:
    if zone.get("target", "default").upper() == "ACCEPT":
        return True
    opened = zone.get("ports", "").split()
    for service in zone.get("services", "").split():
        opened.extend(FIREWALLD_SERVICES.get(service, ()))
    for spec in opened:
        ports, _, proto = spec.partition("/")
        low, _, high = ports.partition("-")
        if proto == probe.proto and low.isdigit() and int(low) <= probe.port <= int(high or low):
            return True
    rich = zone.get("rich rules", "")
    return bool(re.search(rf'port="{probe.port}"[^\n]*protocol="{probe.proto}"[^\n]*accept', rich))

"""Every cluster host's names and SSH host keys, from this run's facts or from the record of an earlier run.

    {{ groups['all'] | ssh_trust_host_keys(facts_of_each_host, record) }}
    -> {host: {"names": [hostname, nodename, fqdn, IPv4], "keys": ["ssh-ed25519 AAAA...", ...]}}

A host whose facts carry a host key (the play's hosts, and those preflight read) is taken from its facts; any other
from `record` (the file an earlier run left on the controller); a host in neither is left out. Hosts no longer in
`hosts` are dropped from the record. Key types in the order known_hosts lists them: ed25519, ecdsa, rsa.
"""

from __future__ import annotations

from typing import Any

KEY_TYPES = ("ed25519", "ecdsa", "rsa")
NAME_FACTS = ("hostname", "nodename", "fqdn")


def _entry(facts: Any) -> dict[str, list[str]] | None:
    facts = dict(facts or {})
    keys = [
        f"{facts[f'ssh_host_key_{kind}_public_keytype']} {facts[f'ssh_host_key_{kind}_public']}"
        for kind in KEY_TYPES
        if facts.get(f"ssh_host_key_{kind}_public") and facts.get(f"ssh_host_key_{kind}_public_keytype")
    ]
    if not keys:
        return None
    names = [str(facts.get(name) or "") for name in NAME_FACTS]
    names.append(str((facts.get("default_ipv4") or {}).get("address") or ""))
    return {"names": list(dict.fromkeys(n for n in names if n and n != "localhost")), "keys": keys}


def ssh_trust_host_keys(hosts: Any, facts: Any, record: Any = None) -> dict[str, dict[str, list[str]]]:
    hosts = [str(h) for h in hosts or ()]
    facts = list(facts or ())
    record = dict(record or {})
    found: dict[str, dict[str, list[str]]] = {}
    for index, host in enumerate(hosts):
        entry = _entry(facts[index] if index < len(facts) else None)
        if entry is None and isinstance(record.get(host), dict) and record[host].get("keys"):
            entry = {"names": [str(n) for n in record[host].get("names") or []], "keys": list(record[host]["keys"])}
        if entry is not None:
            found[host] = entry
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"ssh_trust_host_keys": ssh_trust_host_keys}

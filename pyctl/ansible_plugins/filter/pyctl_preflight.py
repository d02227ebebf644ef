"""Filters the preflight phase uses to judge a host with pyctl's own code (pyctl.hostcheck, pyctl.cuda).

    {{ probe_stdout | pyctl_host_check(roles, peers, control_planes) }}   {cgroup, cgroup_v2, ports, firewall, blocked}
    {{ nvidia_smi_stdout | pyctl_cuda_driver_problem(host, cuda) }}   '' or one sentence
    {{ '13.0' | pyctl_cuda_min_driver }}                       580

`roles` is a list of control_plane, node, nfs_server; `peers` maps every other cluster host to its address
(ansible_host; a DNS name counts as unknown); `control_planes` lists the control plane hosts.
"""

from __future__ import annotations

import ipaddress
from typing import Any

DOCUMENTATION = """
name: pyctl_host_check
short_description: Judge a host's preflight probe (cgroup version, ports, firewall) with pyctl.hostcheck.
"""


def _ipv4(value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        return ""


def host_check(stdout: Any, roles: Any, peers: Any, control_planes: Any = ()) -> dict[str, Any]:
    from pyctl import hostcheck

    leaders = {str(h) for h in control_planes or ()}
    found = [
        hostcheck.Peer(str(name), _ipv4(address), str(name) in leaders) for name, address in dict(peers or {}).items()
    ]
    return hostcheck.judge(str(stdout or ""), [str(r) for r in roles or []], found)


def cuda_driver_problem(summary: Any, host: Any, payload_cuda: Any) -> str:
    from pyctl import cuda

    return cuda.driver_problem(str(host), str(summary or ""), str(payload_cuda))


def cuda_min_driver(payload_cuda: Any) -> int:
    from pyctl import cuda

    return cuda.min_driver_branch(str(payload_cuda))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "pyctl_host_check": host_check,
            "pyctl_cuda_driver_problem": cuda_driver_problem,
            "pyctl_cuda_min_driver": cuda_min_driver,
        }

"""The Ansible inventory a lab writes: YAML, passing `pyctl.inventory.check`.

Host vars live under `all.hosts` (each host once); the groups list their members. Ansible reaches the
hosts through the lab's ssh_config (`ansible_ssh_common_args: -F ...`), which holds the ProxyCommand into
the lab namespace, the lab key and the pinned host keys.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from pyctl.inventory import CONTROL_PLANE, NFS_SERVER, WORKERS
from pyctl.lab.model import HOST_IFACE, POD_CIDR, SERVICE_CIDR, Lab


def content(lab: Lab) -> dict[str, Any]:
    all_vars: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_ssh_common_args": f"-F {shlex.quote(str(lab.ssh_config_path))}",
        "ansible_python_interpreter": "/usr/bin/python3",
        "lab_name": lab.name,
        "lab_kind": lab.kind,
        # The interface carrying each host's lab address, the same on every host: training launchers
        # pin GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to it.
        "lab_iface": HOST_IFACE,
        "lab_subnet": lab.subnet,
        "nfs_allowed_cidr": lab.subnet,
        "pod_cidr": POD_CIDR,
        "service_cidr": SERVICE_CIDR,
        # The lab reaches Debian's mirror only (no download.docker.com), whose containerd is 1.x: the lab runs
        # it past the containerd role's refusal (Kubernetes 1.36 needs containerd 2.x), with its warning.
        "containerd_source": "distribution",
        "containerd_unsupported_version_enabled": True,
    }
    if lab.apt_proxy:
        all_vars["lab_apt_proxy"] = lab.apt_proxy
    hosts: dict[str, Any] = {}
    for host in lab.hosts:
        hvars: dict[str, Any] = {"ansible_host": host.address}
        if host.gpu:
            hvars["gpu"] = True
        hosts[host.name] = hvars
    children: dict[str, Any] = {}
    for group in (CONTROL_PLANE, NFS_SERVER, WORKERS):
        members = [h.name for h in lab.hosts if group in h.groups]
        if members:
            children[group] = {"hosts": dict.fromkeys(members)}
    return {"all": {"vars": all_vars, "hosts": hosts, "children": children}}


def write(lab: Lab) -> Path:
    header = (
        f"# Written by 'pyctl lab up' for lab {lab.name!r} ({lab.kind}, {lab.nodes} hosts) on every up.\n"
        f"# SSH by hand: ssh -F {lab.ssh_config_path} {lab.hosts[0].name}\n---\n"
    )
    body = yaml.safe_dump(content(lab), default_flow_style=False, sort_keys=False, width=1000)
    tmp = lab.inventory_path.with_suffix(".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(lab.inventory_path)
    return lab.inventory_path

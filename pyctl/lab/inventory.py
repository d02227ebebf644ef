"""The Ansible inventory a lab writes: YAML, passing `pyctl.inventory.check`.

Host vars live under `all.hosts` (each host once); the groups list their members. Ansible reaches the
hosts through the lab's ssh_config (`ansible_ssh_common_args: -F ...`), which holds the ProxyCommand into
the lab namespace, the lab key and the pinned host keys.

What depends on a host's kind (`lab_kind`, which containerd it runs) is worked out per host
(`kind_vars`); a value every host shares is written once in `all.vars`, one that differs (a mixed lab's
VM and container hosts) in each host's vars.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from pyctl.inventory import CONTROL_PLANE, NFS_SERVER, WORKERS
from pyctl.lab import repo
from pyctl.lab.model import HOST_IFACE, POD_CIDR, SERVICE_CIDR, Lab

# The free space a lab host must have on /var's file system (preflight_min_free_disk_gb; the role's default
# of 10 is for a real node).
LAB_MIN_FREE_DISK_GB = 2


def content(lab: Lab) -> dict[str, Any]:
    all_vars: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_ssh_common_args": f"-F {shlex.quote(str(lab.ssh_config_path))}",
        "ansible_python_interpreter": "/usr/bin/python3",
        "lab_name": lab.name,
        # The interface carrying each host's lab address, the same on every host: training launchers
        # pin GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME to it.
        "lab_iface": HOST_IFACE,
        "lab_subnet": lab.subnet,
        "nfs_allowed_cidr": lab.subnet,
        "pod_cidr": POD_CIDR,
        "service_cidr": SERVICE_CIDR,
        # A lab host is not a real node: netns and container hosts share the controller's file system (what
        # is free there is the machine's, not the host's), VM hosts have an image of image.DISK_SIZE. The
        # check still runs, against what a lab needs, not the 10 GiB of images a real node keeps.
        "preflight_min_free_disk_gb": LAB_MIN_FREE_DISK_GB,
    }
    if lab.apt_proxy:
        all_vars["lab_apt_proxy"] = lab.apt_proxy
    all_vars.update(repository_vars(lab))
    per_host = {h.name: kind_vars(lab, h.kind) for h in lab.hosts}
    shared = {
        key: value
        for key, value in per_host[lab.hosts[0].name].items()
        if all(key in hv and hv[key] == value for hv in per_host.values())
    }
    all_vars.update(shared)
    hosts: dict[str, Any] = {}
    for host in lab.hosts:
        hvars: dict[str, Any] = {"ansible_host": host.address}
        hvars.update({k: v for k, v in per_host[host.name].items() if k not in shared})
        if host.gpu:
            hvars["gpu"] = True
        hosts[host.name] = hvars
    children: dict[str, Any] = {}
    for group in (CONTROL_PLANE, NFS_SERVER, WORKERS):
        members = [h.name for h in lab.hosts if group in h.groups]
        if members:
            children[group] = {"hosts": dict.fromkeys(members)}
    return {"all": {"vars": all_vars, "hosts": hosts, "children": children}}


def kind_vars(lab: Lab, kind: str) -> dict[str, Any]:
    """The settings of a host of `kind` (vm, container, netns) in this lab: `lab_kind` and its containerd.

    Container hosts run containerd 2.x from the lab's Docker-shaped repository (unless the lab could not get
    Debian's containerd 2.x from the configured mirror: see repo-note.txt in the lab directory). VM and netns
    hosts keep Debian's containerd 1.x (the path pyctl still supports for Kubernetes <= 1.35), run past the
    containerd role's refusal for 1.36 with its warning.
    """
    out: dict[str, Any] = {"lab_kind": kind}
    served = lab.extra.get("repo") or {}
    if kind == "container" and served.get("containerd_io_version"):
        out["containerd_source"] = "docker"
        out["containerd_docker_version"] = served["containerd_io_version"]
    else:
        out["containerd_source"] = "distribution"
        out["containerd_unsupported_version_enabled"] = True
    return out


def repository_vars(lab: Lab) -> dict[str, Any]:
    """The roles' repository settings pointed at the lab's own signed repositories (pyctl.lab.repo)."""
    served = lab.extra.get("repo")
    if not served:
        return {}
    url, fingerprint = served["url"], served["fingerprint"]
    # Through the same mirror settings a user's inventory uses (mirrors_repositories: each repository's URL,
    # signing key and its fingerprint), so the lab exercises them and `pyctl inventory check` validates them.
    repo_vars: dict[str, Any] = {
        "lab_repo_url": url,
        "lab_repo_fingerprint": fingerprint,
        "mirrors_repositories": {
            "kubernetes": {
                "url": f"{url}/{repo.K8S_PATH}/",
                "key_url": f"{url}/{repo.K8S_PATH}/Release.key",
                "fingerprint": fingerprint,
            },
            "docker": {
                "url": f"{url}/{repo.DOCKER_PATH}",
                "key_url": f"{url}/{repo.DOCKER_PATH}/debian/gpg",
                "fingerprint": fingerprint,
            },
            "nvidia": {
                "url": f"{url}/{repo.NVIDIA_PATH}/stable/deb",
                "key_url": f"{url}/{repo.NVIDIA_PATH}/gpgkey",
                "fingerprint": fingerprint,
            },
        },
    }
    return repo_vars


def write(lab: Lab) -> Path:
    header = (
        f"# Written by 'pyctl lab up' for lab {lab.name!r} ({lab.kind}: {lab.describe()}) on every up.\n"
        f"# SSH by hand: ssh -F {lab.ssh_config_path} {lab.hosts[0].name}\n---\n"
    )
    body = yaml.safe_dump(content(lab), default_flow_style=False, sort_keys=False, width=1000)
    tmp = lab.inventory_path.with_suffix(".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(lab.inventory_path)
    return lab.inventory_path

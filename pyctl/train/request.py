"""What `pyctl train ddp` and `pyctl train distdgl` ask alike, checked once: the backend, `--env`,
paths on the nodes, bounds, the options that belong to one backend only, and which hosts run a job.

Each workload's request (`ddp.DdpRequest`, `distdgl.DistDglRequest`) is checked by its own `resolve`,
which calls these for the options the two share; every check raises `UsageError` (exit 2) naming the
option and what to do.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pyctl.errors import UsageError
from pyctl.inventory import Cluster, Host

BACKENDS = ("k8s", "ssh")
DEFAULT_NAMESPACE = "default"
DEFAULT_CLAIM = "pyctl-shared"  # the claim the k8s storage phase makes (shared_storage_pvc_name)
DEFAULT_CLAIM_MOUNT = "/mnt/pyctl-shared"
DEFAULT_SSH_USER = "pyctl"  # the ssh_trust role's training user
MAX_SCRIPT_BYTES = 900 * 1024  # a ConfigMap holds at most 1 MiB
DEFAULT_START_TIMEOUT_S = 900.0  # --start-timeout: a multi-GB CUDA image over a slow link takes minutes; 0 = none
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env(items: tuple[str, ...]) -> dict[str, str]:
    """`--env NAME=VALUE` (repeated) as a dict."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(name):
            raise UsageError(f"--env {item!r} is not NAME=VALUE")
        env[name] = value
    return env


def absolute(flag: str, value: str, where: str = "nodes") -> str:
    """A path on the nodes (or hosts), normalised; it must be absolute."""
    if not PurePosixPath(value).is_absolute():
        raise UsageError(f"{flag} {value!r} must be an absolute path (it is a path on the {where})")
    return str(PurePosixPath(value))


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")


def check_at_least(bounds: tuple[tuple[str, int | None, int], ...]) -> None:
    """(flag, value, lowest) for each counted option; None: not given."""
    for flag, value, low in bounds:
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be {low} or more")


def check_lr(lr: float | None) -> None:
    if lr is not None and not lr > 0:
        raise UsageError(f"--lr {lr}: must be a positive number")


def check_start_timeout(seconds: float) -> None:
    if not seconds >= 0:
        raise UsageError(f"--start-timeout {seconds}: give seconds (0 waits for ever)")


def refuse_iface_on_k8s(iface: str | None) -> None:
    """--iface names a host's NIC; a pod has its own network namespace (eth0 on flannel), and gloo/NCCL
    find the pod's address from its host name, so the host's name would break the job."""
    if iface:
        raise UsageError(
            f"--iface {iface} is for --backend ssh: pods do not have the hosts' interfaces (on flannel only eth0)",
            hint="leave --iface out for Kubernetes (pods use their own address); to force one, "
            "--env GLOO_SOCKET_IFNAME=eth0",
        )


def refuse_image_on_ssh(image: str | None) -> None:
    if image:
        raise UsageError("--image is for --backend k8s; on SSH hosts give the interpreter with --python")


def iface_of(host: Host) -> str | None:
    """The host's interface for gloo/NCCL from the inventory: `train_iface`, else `lab_iface`."""
    value = host.vars.get("train_iface") or host.vars.get("lab_iface")
    return str(value) if value else None


def host_pool(names: tuple[str, ...], cluster: Cluster, gpus_per_node: int = 0) -> list[Host]:
    """The hosts an SSH job may use, node 0 first: `--hosts` in its order (each once), else the
    Kubernetes nodes of the inventory (its hosts when it has none), GPU hosts when GPUs are asked for."""
    by_name = {h.name: h for h in cluster.hosts}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(
                f"--hosts names {', '.join(unknown)}, not in the inventory",
                hint=f"its hosts: {', '.join(by_name)}",
            )
        return [by_name[n] for n in dict.fromkeys(names)]
    pool = cluster.nodes or list(cluster.hosts)
    return [h for h in pool if h.gpu] if gpus_per_node > 0 else pool


def kubernetes_minor(text: str) -> tuple[int, int]:
    """`kubernetes_version` ("1.36" or "1.36.5") as (major, minor), for features that depend on it."""
    major, minor = text.split(".")[:2]
    return int(major), int(minor)

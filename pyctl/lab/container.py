"""container hosts: systemd-nspawn containers booting systemd from the shared lab image.

Each container's root is an overlay: the image's rootfs (read-only, shared by all) below, the host's
own `upper/` directory above, so a container costs only what it changes. nspawn mounts it in its own
mount namespace: nothing appears in this machine's mount table, and nothing is left when it dies.

Networking is the netns kind's: pyctl makes the host's network namespace (eth0 on the lab bridge, the
fixed address already set) and nspawn joins it (--network-namespace-path), so the container needs no
DHCP and never runs networkd. There is no systemd on this machine to register with, hence
--register=no --keep-unit (see LAB.md). Real inside: systemd, apt, sysctl per netns, containerd;
not: modprobe, swap, an NFS server (they need their own kernel: use vm).

What a container cannot do for itself the lab does from outside, as the machine running a container would:
/proc/sys is read-only inside, so the network sysctls Kubernetes needs (`HOST_SYSCTLS`) are set in each
host's network namespace before it boots. Each host gets cgroups of its own (see cgroups.py), and this
machine's inotify limits are raised to what N systemd instances need (each takes several inotify objects;
the kernel's default of 128 per user stops the 20th container or so with "Too many open files").
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pyctl.config import Settings
from pyctl.lab import aptcache, cgroups, image, network, repo
from pyctl.lab.model import Lab, LabHost
from pyctl.lab.netns import TOOLS as NETNS_TOOLS
from pyctl.lab.processes import pidfile_alive, run, spawn
from pyctl.lab.ssh import HOST_KEY

TOOLS = {
    **NETNS_TOOLS,
    **aptcache.TOOLS,
    **repo.TOOLS,
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
}
SYSTEMD = True
BOOT_TIMEOUT = 240.0
PARALLEL_START = True  # hosts are independent: start them all at once
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
# Set per host network namespace before boot (read-only inside): node_prep's sysctls that are per namespace.
HOST_SYSCTLS = {"net.ipv4.ip_forward": "1"}
# This machine's inotify limits, raised (never lowered) to fit this many objects per container host.
INOTIFY_INSTANCES_PER_HOST = 16
INOTIFY_WATCHES_PER_HOST = 4096
INOTIFY_BASE = {"fs.inotify.max_user_instances": 512, "fs.inotify.max_user_watches": 524288}


def prepare(lab: Lab, settings: Settings, progress: Callable[[str], None]) -> None:
    """The shared image (built if needed) and the shared apt proxy."""
    built = image.ensure(settings, progress, lab.os)
    lab.image = built.hash
    lab.extra["image_dir"] = str(built.dir)
    lab.extra["apt_cache_port"] = aptcache.ensure(settings)


def start_lab(lab: Lab, hosts: list[LabHost]) -> None:
    """Each container host's network namespace on the lab bridge, its sysctls, and room for its systemd."""
    network.create_host_namespaces(
        lab.namespace,
        [network.HostLink(h.namespace, f"v-{h.name}", h.address) for h in hosts if h.namespace],
        lab.network.prefixlen,
        lab.dir,
    )
    set_host_sysctls([h.namespace for h in hosts if h.namespace])
    raise_inotify_limits(len(hosts))


def set_host_sysctls(namespaces: list[str], sysctls: dict[str, str] | None = None) -> None:
    """`HOST_SYSCTLS` in each host's network namespace, in one process for all hosts."""
    sysctls = HOST_SYSCTLS if sysctls is None else sysctls
    if not namespaces or not sysctls:
        return
    settings = [f"{name}={value}" for name, value in sysctls.items()]
    script = 'for ns in "$@"; do nsenter --net="/run/netns/$ns" sysctl -q -w ' + " ".join(settings) + " || exit 1; done"
    run(["sh", "-c", script, "pyctl-lab-sysctl", *namespaces], what="setting the container hosts' sysctls")


def raise_inotify_limits(hosts: int, proc_sys: Path = Path("/proc/sys")) -> dict[str, int]:
    """Raise this machine's inotify limits where they are below what `hosts` more systemd instances need."""
    wanted = {
        "fs.inotify.max_user_instances": INOTIFY_BASE["fs.inotify.max_user_instances"]
        + INOTIFY_INSTANCES_PER_HOST * hosts,
        "fs.inotify.max_user_watches": INOTIFY_BASE["fs.inotify.max_user_watches"] + INOTIFY_WATCHES_PER_HOST * hosts,
    }
    raised = {}
    for name, value in wanted.items():
        path = proc_sys / name.replace(".", "/")
        if int(path.read_text(encoding="utf-8")) < value:
            path.write_text(f"{value}\n", encoding="utf-8")
            raised[name] = value
    return raised


def write_seed(lab: Lab, host: LabHost) -> Path:
    """The host's seed directory (keys, /etc/hosts, apt proxy), read by pyctl-lab-seed at boot."""
    seed = lab.host_dir(host) / "seed"
    seed.mkdir(parents=True, exist_ok=True)
    seed.chmod(0o700)
    authorized = (lab.dir / "authorized_keys").read_text(encoding="utf-8")
    files = image.seed_files(authorized, lab.host_dir(host) / HOST_KEY, lab.etc_hosts(), lab.apt_proxy)
    for name, (content, mode) in files.items():
        path = seed / name
        path.write_bytes(content)
        path.chmod(mode)
    return seed


def machine_name(lab: Lab, host: LabHost) -> str:
    return f"pyctl-{lab.name}-{host.name}"


def start(lab: Lab, host: LabHost) -> None:
    assert host.namespace is not None
    directory = lab.host_dir(host)
    rootfs = Path(lab.extra["image_dir"]) / "rootfs"
    upper = directory / "upper"
    upper.mkdir(parents=True, exist_ok=True)
    seed = write_seed(lab, host)
    procs = cgroups.make(lab, host)
    # The shell moves itself into the host's cgroups, then becomes nspawn (same pid: the pidfile holds).
    enter = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(procs)))
    wrapper = ["sh", "-c", f'{enter + " && " if enter else ""}shift {len(procs)} && exec "$@"', "pyctl-lab-host"]
    argv = [
        *wrapper,
        *map(str, procs),
        "systemd-nspawn",
        "--quiet",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={machine_name(lab, host)}",
        f"--hostname={host.name}",
        f"--directory={rootfs}",
        f"--overlay={rootfs}:{upper}:/",
        f"--network-namespace-path={network.ns_path(host.namespace)}",
        f"--bind-ro={seed}:/run/pyctl-lab-seed",
        # containerd and kubelet inside want what a machine's root has (cgroups, mounts, raw sockets)
        "--capability=all",
        "--console=read-only",
    ]
    spawn(argv, log=console_log(lab, host), pidfile=directory / "nspawn.pid")


def pid(lab: Lab, host: LabHost) -> int | None:
    return pidfile_alive(lab.host_dir(host) / "nspawn.pid")


def console_log(lab: Lab, host: LabHost) -> Path:
    return lab.host_dir(host) / "console.log"


def cleanup(lab_name: str) -> None:
    """What an nspawn killed mid-flight leaves outside the lab dir: its propagation directory."""
    prefix = f"pyctl-{lab_name}-"
    if PROPAGATE_DIR.is_dir():
        for path in PROPAGATE_DIR.iterdir():
            if path.name.startswith(prefix) and re.fullmatch(r"node\d+", path.name[len(prefix) :]):
                shutil.rmtree(path, ignore_errors=True)


def container_pids(lab: Lab, host: LabHost) -> list[int]:
    """The processes inside the container (its pid namespace), for memory accounting."""
    nspawn = pid(lab, host)
    if not nspawn:
        return []
    children = Path(f"/proc/{nspawn}/task/{nspawn}/children").read_text(encoding="utf-8").split()
    if not children:
        return []
    inner = os.stat(f"/proc/{children[0]}/ns/pid").st_ino  # noqa: PTH116 - a /proc namespace link
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns" / "pid").stat().st_ino == inner:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found

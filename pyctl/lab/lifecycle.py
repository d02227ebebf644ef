"""Bring labs up, report on them, and take them down again, leaving nothing behind.

`up` is idempotent: the same name and shape on a healthy lab changes nothing. A lab that exists only in
part (a crash, a reboot, a failed boot) is torn down and made again. `down` works from the state file
*and* from what it finds on the machine (namespaces carrying the lab's marker, processes inside them or
naming the lab directory, mounts under it), so it also cleans up after a crash. Both are serialised per
lab name with a file lock.

Everything that depends on what a host is goes through its own kind's driver (`driver(host.kind)`), so a
mixed lab (node1 a VM, the others container hosts) is started, checked and taken down host by host.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pyctl.config import Settings, load_settings
from pyctl.errors import Interrupted
from pyctl.lab import cgroups, network, processes, ssh
from pyctl.lab import inventory as lab_inventory
from pyctl.lab.errors import LabBootTimeout, LabNameClash, LabNotFound, NotRoot
from pyctl.lab.locks import locked
from pyctl.lab.model import (
    LAB_NETWORKS,
    Lab,
    LabHost,
    LabSpec,
    check_name,
    is_root,
    lab_dirs,
    namespace_name,
    plan_hosts,
    preferred_subnet_index,
    subnet_for,
    used_subnets,
)
from pyctl.lab.mounts import remove_tree, unmount_under

Progress = Callable[[str], None]
MAX_WAITERS = 64  # threads that wait on hosts' SSH at once (boot, health)


def _quiet(_: str) -> None:
    pass


def driver(kind: str) -> ModuleType:
    """The module that knows how to start hosts of `kind` (imported lazily: qemu code only for VMs)."""
    if kind == "netns":
        from pyctl.lab import netns as module
    elif kind == "container":
        from pyctl.lab import container as module
    else:
        from pyctl.lab import vm as module
    return module


def host_driver(host: LabHost) -> ModuleType:
    """The driver of one host's kind."""
    return driver(host.kind)


def _lock(settings: Settings, name: str) -> Any:
    return locked(settings.labs_dir / ".locks" / name)


def lab_dir(settings: Settings, name: str) -> Path:
    return settings.labs_dir / name


# --- up ---------------------------------------------------------------------------------------------


@dataclass
class UpResult:
    lab: Lab
    changed: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


def up(spec: LabSpec, settings: Settings | None = None, progress: Progress | None = None) -> UpResult:
    """Make the lab `spec` describes (or find it already made) and return it with its inventory written."""
    spec.validate()
    settings = settings or load_settings()
    progress = progress or _quiet
    start = time.monotonic()
    from pyctl.lab import prereqs

    tools = {name: package for kind in spec.host_kinds for name, package in driver(kind).TOOLS.items()}
    with locked(settings.state_dir / "cache" / ".locks" / "apt"):
        prereqs.ensure(tools, what=f"pyctl lab ({spec.kind})", progress=progress)
    directory = lab_dir(settings, spec.name)
    notes: list[str] = []
    with _lock(settings, spec.name):
        existing = Lab.load(directory)
        if existing is not None:
            if not existing.same_shape(spec):
                raise LabNameClash(
                    f"lab {spec.name!r} exists as {existing.nodes} {existing.kind} host(s) ({existing.os}), "
                    f"not {spec.nodes} {spec.kind} host(s) ({spec.os})",
                    hint=f"run 'pyctl lab down --name {spec.name}' first, or pick another --name",
                )
            if existing.phase == "ready" and not unhealthy_hosts(existing):
                if existing.gpu_nodes != spec.gpu_nodes:
                    existing.gpu_nodes = spec.gpu_nodes
                    existing.hosts = plan_hosts(spec, existing.subnet)
                    existing.save()
                    lab_inventory.write(existing)
                    notes.append("gpu marks changed: inventory rewritten")
                return UpResult(existing, False, time.monotonic() - start, notes)
            progress(f"lab {spec.name} exists but is not healthy: making it again")
            _teardown(settings, spec.name, existing)
            notes.append("recreated: the lab was not healthy")
        else:
            _check_foreign(settings, spec.name)
        try:
            lab = _create(settings, spec, progress)
        except KeyboardInterrupt as exc:
            raise Interrupted(
                f"interrupted while making lab {spec.name}: it is half made",
                hint=f"remove it with 'pyctl lab down --name {spec.name}', or run the same up again",
            ) from exc
    return UpResult(lab, True, time.monotonic() - start, notes)


def _check_foreign(settings: Settings, name: str) -> None:
    """Namespaces named like this lab with no state file: ours (crash leftovers) are removed, others clash."""
    directory = lab_dir(settings, name)
    if directory.exists():  # a lab directory without a readable state file: a run that died early
        _teardown(settings, name, None)
    for ns in network.lab_namespaces(name):
        if network.owned_by(ns, directory):
            _teardown(settings, name, None)
            return
        raise LabNameClash(
            f"network namespace {ns} exists but was not made by this pyctl for lab {name!r}",
            hint=f"pick another --name, or remove it yourself ('ip netns delete {ns}') if it is a leftover",
        )


def _allocate_subnet(settings: Settings, name: str) -> str:
    used = used_subnets(settings.labs_dir, except_name=name)
    count = 2 ** (24 - LAB_NETWORKS.prefixlen)
    first = preferred_subnet_index(name)
    for step in range(count - 2):
        index = 1 + (first - 1 + step) % (count - 2)
        subnet = subnet_for(index)
        if subnet not in used:
            return subnet
    raise LabNameClash(f"no free lab subnet in {LAB_NETWORKS}", hint="take down labs you no longer need")


def _create(settings: Settings, spec: LabSpec, progress: Progress) -> Lab:
    directory = lab_dir(settings, spec.name)
    remove_tree(directory)
    directory.mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)
    with locked(settings.labs_dir / ".locks" / ".subnets"):
        subnet = _allocate_subnet(settings, spec.name)
        lab = Lab(
            name=spec.name,
            kind=spec.kind,
            dir=directory,
            subnet=subnet,
            hosts=plan_hosts(spec, subnet),
            gpu_nodes=spec.gpu_nodes,
            vm_memory_mib=spec.vm_memory_mib,
            vm_cpus=spec.vm_cpus,
            os=spec.os,
        )
        lab.save()  # first, so that down finds whatever the next steps leave if they fail
    for kind in lab.host_kinds:
        driver(kind).prepare(lab, settings, progress)
    lab.save()
    network.create_lab_namespace(lab.namespace, lab.gateway, lab.network.prefixlen, lab.dir)
    ssh.make_keys(lab)
    ssh.write_ssh_config(lab)
    for kind in lab.host_kinds:
        driver(kind).start_lab(lab, lab.hosts_of(kind))
    if lab.uses_services:
        _start_services(lab, settings)
    progress(f"starting {lab.describe()}")
    # Kind by kind, VMs first (the slowest to boot); hosts of a kind whose driver allows it all at once.
    for kind in sorted(lab.host_kinds, key=lambda k: k != "vm"):
        module, hosts = driver(kind), lab.hosts_of(kind)
        if getattr(module, "PARALLEL_START", False):
            with ThreadPoolExecutor(max_workers=min(MAX_WAITERS, len(hosts))) as pool:
                list(pool.map(lambda host, module=module: module.start(lab, host), hosts))
        else:
            for host in hosts:
                module.start(lab, host)
    progress(f"waiting for {lab.host_names()} to answer SSH")
    _wait_all(lab)
    lab.phase = "ready"
    lab.save()
    lab_inventory.write(lab)
    return lab


def _start_services(lab: Lab, settings: Settings) -> None:
    """What vm and container hosts use on the lab's gateway: the apt proxy bridge and the repository server."""
    from pyctl.lab import aptcache, repo

    lab.apt_proxy = aptcache.bridge(lab, lab.extra["apt_cache_port"])
    lab.extra["repo"] = repo.ensure(lab, settings).to_dict()


def wait_ready(lab: Lab, host: LabHost, alive: Callable[[], bool] | None = None) -> None:
    """Wait until `host` answers SSH (and its systemd has booted), as its kind's driver says; raises LabBootTimeout."""
    module = host_driver(host)
    ssh.wait_ready(
        lab,
        host,
        timeout=module.BOOT_TIMEOUT,
        systemd=module.SYSTEMD,
        console_log=module.console_log(lab, host),
        alive=lambda: (alive is None or alive()) and module.pid(lab, host) is not None,
    )


def _wait_all(lab: Lab) -> None:
    """Wait for every host in parallel; the first failure is raised at once and stops the other waits."""
    failed = threading.Event()

    def wait(host: LabHost) -> None:
        wait_ready(lab, host, alive=lambda: not failed.is_set())

    # One waiter per host: each mostly waits on its ssh, and a host's boot does not wait on another's.
    pool = ThreadPoolExecutor(max_workers=min(MAX_WAITERS, lab.nodes))
    try:
        futures = [pool.submit(wait, host) for host in lab.hosts]
        for future in as_completed(futures):
            future.result()
    except BaseException:
        failed.set()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --- status -----------------------------------------------------------------------------------------


@dataclass
class HostStatus:
    name: str
    address: str
    kind: str
    groups: list[str]
    gpu: bool
    pid: int | None
    process_alive: bool
    ssh_ok: bool

    @property
    def healthy(self) -> bool:
        return self.process_alive and self.ssh_ok


@dataclass
class LabStatus:
    lab: Lab
    hosts: list[HostStatus]

    @property
    def healthy(self) -> bool:
        return self.lab.phase == "ready" and all(h.healthy for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.lab.summary(),
            "phase": self.lab.phase,
            "healthy": self.healthy,
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "kind": h.kind,
                    "groups": h.groups,
                    "gpu": h.gpu,
                    "pid": h.pid,
                    "process_alive": h.process_alive,
                    "ssh_ok": h.ssh_ok,
                    "healthy": h.healthy,
                }
                for h in self.hosts
            ],
        }


def host_statuses(lab: Lab) -> list[HostStatus]:
    def one(host: LabHost) -> HostStatus:
        pid = host_driver(host).pid(lab, host)
        ok = pid is not None and ssh.reachable(lab, host)
        return HostStatus(host.name, host.address, host.kind, list(host.groups), host.gpu, pid, pid is not None, ok)

    with ThreadPoolExecutor(max_workers=min(MAX_WAITERS, lab.nodes)) as pool:
        return list(pool.map(one, lab.hosts))


def unhealthy_hosts(lab: Lab) -> list[str]:
    return [h.name for h in host_statuses(lab) if not h.healthy]


def status(name: str, settings: Settings | None = None) -> LabStatus:
    settings = settings or load_settings()
    check_name(name)
    lab = Lab.load(lab_dir(settings, name))
    if lab is None:
        raise LabNotFound(f"no lab named {name!r}", hint=f"make one with 'pyctl lab up --name {name}'")
    return LabStatus(lab, host_statuses(lab))


# --- reboot -----------------------------------------------------------------------------------------

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
_IN_A_SECOND = "nohup sh -c 'sleep 1; systemctl {}' >/dev/null 2>&1 &"  # so that the ssh session ends first


def reboot(lab: Lab, hosts: Sequence[LabHost | str] | None = None) -> None:
    """Reboot hosts (default: all) the way their kind reboots, all at once; return when each answers again.

    A VM reboots in place: QEMU stays, the guest's boot id changes. A container host's systemd powers off,
    nspawn exits, and the lab starts it again on the same upper directory (what a reboot is for a container:
    its files stay, its processes and mounts do not). A netns host has no boot: its sshd starts again.
    """
    targets = [lab.host(h) if isinstance(h, str) else h for h in (lab.hosts if hosts is None else hosts)]
    if not targets:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_WAITERS, len(targets))) as pool:
        list(pool.map(lambda host: _reboot(lab, host), targets))


def _reboot(lab: Lab, host: LabHost) -> None:
    module = host_driver(host)
    deadline = time.monotonic() + module.BOOT_TIMEOUT

    def waited_too_long(what: str) -> None:
        if time.monotonic() > deadline:
            raise LabBootTimeout(
                f"lab {lab.name}: host {host.name} did not {what} within {module.BOOT_TIMEOUT:.0f} s of its reboot",
                hint=f"see {module.console_log(lab, host) or lab.host_dir(host)}",
            )

    if host.kind == "vm":
        before = ssh.probe(lab, host, BOOT_ID).stdout.strip()
        lab.ssh(host, _IN_A_SECOND.format("reboot"), timeout=60)
        while True:
            result = ssh.probe(lab, host, BOOT_ID, timeout=20)
            if result.returncode == 0 and result.stdout.strip() not in ("", before):
                break
            waited_too_long("boot again")
            time.sleep(1)
    else:
        before = module.pid(lab, host)
        if module.SYSTEMD:
            lab.ssh(host, _IN_A_SECOND.format("poweroff"), timeout=60)
        else:
            processes.terminate([before] if before else [])
        while module.pid(lab, host) == before and before is not None:
            waited_too_long("stop")
            time.sleep(0.2)
        module.start(lab, host)
    wait_ready(lab, host)


def get(name: str, settings: Settings | None = None) -> Lab:
    """The recorded lab (no health check); raises LabNotFound."""
    settings = settings or load_settings()
    lab = Lab.load(lab_dir(settings, check_name(name)))
    if lab is None:
        raise LabNotFound(f"no lab named {name!r}", hint=f"make one with 'pyctl lab up --name {name}'")
    return lab


def names(settings: Settings | None = None, *, partial: bool = False) -> list[str]:
    """Labs with a state file; with `partial`, also half-made lab directories and orphaned namespaces
    carrying a marker of this state directory (what `down --all` must clean)."""
    settings = settings or load_settings()
    found = {d.name for d in lab_dirs(settings.labs_dir) if partial or (d / "state.json").exists()}
    if not partial:
        return sorted(found)
    prefix = namespace_name("")
    for ns in network.all_pyctl_namespaces():
        lab = ns[len(prefix) :].split(".", 1)[0]
        if lab not in found and network.marker(ns) == network.marker_for(lab_dir(settings, lab)):
            found.add(lab)
    return sorted(found)


# --- down -------------------------------------------------------------------------------------------


@dataclass
class DownResult:
    name: str
    existed: bool
    processes: int = 0
    namespaces: int = 0
    mounts: int = 0


def down(name: str, settings: Settings | None = None) -> DownResult:
    """Remove everything lab `name` made: processes, namespaces, mounts, its directory. Idempotent."""
    settings = settings or load_settings()
    check_name(name)
    if not is_root():
        raise NotRoot("pyctl lab down needs root (network namespaces, processes, mounts)", hint="run it with sudo")
    with _lock(settings, name):
        lab = Lab.load(lab_dir(settings, name))
        result = _teardown(settings, name, lab)
    return result


def down_all(settings: Settings | None = None) -> list[DownResult]:
    settings = settings or load_settings()
    return [down(name, settings) for name in names(settings, partial=True)]


def _teardown(settings: Settings, name: str, lab: Lab | None) -> DownResult:
    directory = lab_dir(settings, name)
    result = DownResult(name, existed=lab is not None or directory.exists())
    # Namespaces: those the state names, plus any pyctl-NAME[.host] carrying this lab's marker.
    namespaces = [ns for ns in network.lab_namespaces(name) if network.owned_by(ns, directory)]
    if lab is not None:
        recorded = [lab.namespace, *(h.namespace for h in lab.hosts if h.namespace)]
        namespaces = list(dict.fromkeys([*[ns for ns in recorded if network.exists(ns)], *namespaces]))
    result.existed = result.existed or bool(namespaces)

    # Processes: pidfiles, then everything inside the namespaces or naming the lab directory.
    pids = [p for p in (processes.read_pid(f) for f in directory.rglob("*.pid")) if p] if directory.exists() else []
    pids = [p for p in pids if f"{directory}/" in " ".join(processes.cmdline(p)) or _in_any(p, namespaces)]
    inodes = [i for i in (network.inode(ns) for ns in namespaces) if i]
    # First everything inside the lab's namespaces (hosts, their sessions, QEMU, dnsmasq, proxies): the
    # disks are throw-away, so SIGKILL. Then the supervisors outside (systemd-nspawn, the root-side socat),
    # which exit on their own once their container is gone. Look again until nothing is left: a dying
    # parent may have forked once more.
    for _ in range(5):
        inside = processes.kill_now([*pids, *processes.pids_in_namespaces(inodes), *cgroups.pids(name)])
        outside = processes.terminate(processes.pids_mentioning(str(directory)), grace=5)
        result.processes += len(inside) + len(outside)
        pids = []
        if not inside and not outside:
            break

    # Mounts under the lab directory (none are expected: container roots are mounted in private namespaces).
    result.mounts = unmount_under(directory)
    for ns in namespaces:
        if network.delete(ns):
            result.namespaces += 1
    from pyctl.lab import container

    container.cleanup(name)
    cgroups.remove(name)
    if lab is None or lab.uses_services:
        from pyctl.lab import aptcache

        aptcache.release(settings, name)
    remove_tree(directory)
    return result


def _in_any(pid: int, namespaces: list[str]) -> bool:
    inodes = {network.inode(ns) for ns in namespaces}
    return processes.ns_inode(f"/proc/{pid}/ns/net") in inodes

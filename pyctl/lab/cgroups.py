"""One cgroup of its own per container host, in the hierarchies systemd manages.

Without a systemd on this machine to ask for a scope, systemd-nspawn (--keep-unit, --register=no) puts every
container's `payload/` under the cgroup of whoever started it: all containers of all labs then share one
`payload/system.slice/ssh.service`, and each container's systemd creates, empties and removes the others' unit
cgroups. Past a handful of hosts a unit starting in one container loses that race (`status=219/CGROUP`, seen as
a host whose seed service failed and whose sshd never started), and a unit stopping in one can kill its
namesakes in the others. So each host's nspawn starts in `pyctl-lab/<lab>/<host>` of the named `systemd`
(cgroup v1) and the unified (cgroup v2) hierarchies, the two that systemd inside uses for its units.

Resource controllers (memory, cpu, pids) are left where the machine put this process: the lab only separates
the bookkeeping. The unified hierarchy's `cpu.stat` counts each host's CPU time, its processes exited or not.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pyctl.lab.model import Lab, LabHost

TOP = "pyctl-lab"
MOUNTS = Path("/proc/self/mounts")


def hierarchies(mounts: Path = MOUNTS) -> list[Path]:
    """Mount points of the cgroup hierarchies systemd manages here: cgroup2, and v1's name=systemd."""
    found = []
    for line in mounts.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        where, fstype, options = fields[1], fields[2], fields[3].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options):
            found.append(Path(where))
    return found


def lab_paths(lab_name: str, roots: list[Path] | None = None) -> list[Path]:
    return [root / TOP / lab_name for root in (hierarchies() if roots is None else roots)]


def host_paths(lab: Lab, host: LabHost, roots: list[Path] | None = None) -> list[Path]:
    return [path / host.name for path in lab_paths(lab.name, roots)]


def make(lab: Lab, host: LabHost, roots: list[Path] | None = None) -> list[Path]:
    """Create the host's cgroups; returns their `cgroup.procs` files, to move the host's first process into."""
    procs = []
    for path in host_paths(lab, host, roots):
        path.mkdir(parents=True, exist_ok=True)
        procs.append(path / "cgroup.procs")
    return procs


def pids(lab_name: str, roots: list[Path] | None = None) -> list[int]:
    """Every process still in the lab's cgroups (what teardown must stop, wherever it wandered)."""
    found: set[int] = set()
    for top in lab_paths(lab_name, roots):
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(p) for p in procs.read_text(encoding="utf-8").split())
    return sorted(found)


def cpu_seconds(lab: Lab, host: LabHost, roots: list[Path] | None = None) -> float | None:
    """CPU time the host has used since it booted (unified hierarchy's cpu.stat), or None where unavailable."""
    for path in host_paths(lab, host, roots):
        stat = path / "cpu.stat"
        with contextlib.suppress(OSError):
            for line in stat.read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    return None


def remove(lab_name: str, roots: list[Path] | None = None) -> int:
    """Remove the lab's (empty) cgroups, deepest first; returns how many were removed."""
    removed = 0
    for top in lab_paths(lab_name, roots):
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
                removed += 1
        with contextlib.suppress(OSError):
            top.rmdir()
            removed += 1
        with contextlib.suppress(OSError):
            top.parent.rmdir()  # pyctl-lab itself, once no lab is left in it
    return removed

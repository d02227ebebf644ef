"""`pyctl lab up` times and memory per lab host, for each kind. Prints figures and targets; asserts nothing.

    sudo .venv/bin/python benchmarks/lab_up.py [--kinds netns,container,vm,mixed] [--runs 3] [--build] [--converge]

Targets: 3-VM up with a cached image <= 90 s; memory per VM host (PSS of its QEMU) <= 1.5 GiB; per
container host (PSS of the container's processes) <= 100 MiB; netns up about a second.
--build also times building the image from scratch into a private state directory, once with an empty
.deb cache and once with it warm (minutes each; it does not touch the shared image cache).
--converge also measures memory again after installing containerd and nfs-kernel-server on every host.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pyctl.config import load_settings
from pyctl.lab import LabSpec, container, down, up, vm

GIB = 1024**3
MIB = 1024**2
TARGETS = {"vm": 90.0, "container": 10.0, "netns": 2.0, "mixed": 90.0}  # mixed: one VM boot
MEMORY_TARGETS = {"vm": 1.5 * GIB, "container": 100 * MIB}


def pss(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between their users), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def converge(lab) -> None:
    """Roughly what the roles do to a host: install containerd and the NFS server (through the lab proxy)."""
    from concurrent.futures import ThreadPoolExecutor

    command = "apt-get install -y -q --no-install-recommends containerd nfs-kernel-server >/dev/null"
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda h: lab.ssh(h, command, timeout=1800), lab.hosts))


def bench_kind(kind: str, nodes: int, runs: int, with_converge: bool = False) -> None:
    times = []
    report: list[str] = []
    for run in range(runs):
        name = f"bench-{kind}-{os.getpid()}-{run}"
        try:
            started = time.monotonic()
            lab = up(LabSpec(name=name, nodes=nodes, kind=kind)).lab
            times.append(time.monotonic() - started)
            if run == runs - 1:
                report = memory(lab)
                if with_converge and lab.uses_services:
                    started = time.monotonic()
                    converge(lab)
                    took = time.monotonic() - started
                    report.append(f"{'':9} containerd + nfs-kernel-server installed on every host in {took:.0f} s")
                    report += [line.replace("idle after boot", "after the installs") for line in memory(lab)]
        finally:
            down(name)
    median = statistics.median(times)
    runs_text = ", ".join(f"{t:.1f}" for t in times)
    print(
        f"{kind:9} up, {nodes} hosts: median {median:.1f} s over {len(times)} runs ({runs_text})"
        f"  target <= {TARGETS[kind]:.0f} s: {verdict(median <= TARGETS[kind])}"
    )
    for line in report:
        print(line)


def memory(lab) -> list[str]:
    lines = []
    for host in lab.hosts:
        if host.kind == "vm":
            pid = vm.pid(lab, host)
            used = pss(pid)
            lines.append(
                f"{'':9} {host.name}: QEMU PSS {used / GIB:.2f} GiB, RSS {rss(pid) / GIB:.2f} GiB"
                f" (-m {lab.vm_memory_mib}, idle after boot)"
                f"  target <= 1.5 GiB: {verdict(used <= MEMORY_TARGETS['vm'])}"
            )
        elif host.kind == "container":
            pids = container.container_pids(lab, host)
            used = sum(pss(p) for p in pids)
            lines.append(
                f"{'':9} {host.name}: {len(pids)} processes, PSS {used / MIB:.0f} MiB (idle after boot)"
                f"  target <= 100 MiB: {verdict(used <= MEMORY_TARGETS['container'])}"
            )
    return lines


def bench_build() -> None:
    """Image build from nothing, then with the .deb cache warm, into a throw-away state directory."""
    from pyctl.lab import image

    scratch = Path(tempfile.mkdtemp(prefix="pyctl-bench-"))
    os.environ["PYCTL_STATE_DIR"] = str(scratch)
    try:
        settings = load_settings()
        for label in ("empty .deb cache", "warm .deb cache"):
            shutil.rmtree(image.images_dir(settings), ignore_errors=True)
            started = time.monotonic()
            image.ensure(settings, lambda _: None)
            print(f"image build, {label}: {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        image.ensure(settings, lambda _: None)
        print(f"image reuse (cached): {time.monotonic() - started:.2f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        del os.environ["PYCTL_STATE_DIR"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="netns,container,vm", help="comma-separated, or none")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="runs for netns and container (vm, mixed: 1)")
    parser.add_argument("--build", action="store_true", help="also time image builds (slow)")
    parser.add_argument("--converge", action="store_true", help="also measure memory after installing packages")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/lab_up.py needs root", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip() and k.strip() != "none"]
    if {"vm", "container", "mixed"} & set(kinds):
        from pyctl.lab import image

        started = time.monotonic()
        image.ensure(load_settings(), lambda message: print(f"  {message}"))
        print(f"image ready in {time.monotonic() - started:.1f} s (cached unless built just now)")
    for kind in kinds:
        bench_kind(kind, args.nodes, 1 if kind in ("vm", "mixed") else args.runs, args.converge)
    if args.build:
        bench_build()
    return 0


if __name__ == "__main__":
    sys.exit(main())

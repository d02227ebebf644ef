"""The node phases on the local lab: first run vs no-op re-run, and fan-out from 1 to 4 hosts.

    .venv/bin/python benchmarks/bootstrap_lab.py [--skip-vm] [--skip-fanout] [--keep]

1. On a fresh 2-host VM lab: `pyctl bootstrap --phases prepare_nodes,container_runtime,storage,ssh_trust`,
   then the same again (nothing to change). Prints both times and no-op / first (target <= 0.15).
2. Fan-out: the same phases on fresh container labs of 1, 2 and 4 hosts (the storage phase without an NFS server:
   containers cannot serve NFS). Prints the first-run times, 2 / 1 and 4 hosts / 1 host (target <= 1.5), and
   for each ratio the floor the machine's cores set: the busy CPU-seconds of the run / cores / the 1-host time.

Needs root (labs). Prints figures and asserts nothing. The labs are taken down at the end (--keep keeps them).
Timings depend on what else runs on the machine: on 2 shared cores under TCG, run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PHASES = "prepare_nodes,container_runtime,storage,ssh_trust"
TARGET_NOOP = 0.15
TARGET_FANOUT = 1.5


def pyctl(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyctl", *args], capture_output=True, text=True, env=env, check=check, cwd=ROOT
    )


def lab_up(name: str, kind: str, nodes: int) -> dict:
    start = time.perf_counter()
    summary = json.loads(pyctl("lab", "up", "--kind", kind, "--nodes", str(nodes), "--name", name, "--json").stdout)
    print(f"  lab {name}: {nodes} {kind} host(s) up in {time.perf_counter() - start:.0f} s", flush=True)
    return summary


def busy_seconds() -> float:
    """CPU seconds this machine spent busy since boot, all cores (lab hosts and controller alike)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


BUSY: dict[str, float] = {}


def timed_bootstrap(inventory: str, state: Path) -> float:
    env = dict(os.environ, PYCTL_STATE_DIR=str(state))
    busy = busy_seconds()
    start = time.perf_counter()
    result = pyctl("bootstrap", "-i", inventory, "--phases", PHASES, env=env, check=False)
    elapsed = time.perf_counter() - start
    BUSY[inventory] = busy_seconds() - busy
    if result.returncode != 0:
        raise SystemExit(f"pyctl bootstrap failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr}")
    return elapsed


def container_inventory(summary: dict, directory: Path) -> str:
    data = yaml.safe_load(Path(summary["inventory"]).read_text())
    data["all"]["children"].pop("nfs_server", None)
    path = directory / f"{summary['name']}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-vm", action="store_true", help="skip the first-run / re-run figure (VM lab)")
    parser.add_argument("--skip-fanout", action="store_true", help="skip the 1 vs 4 hosts figure (container labs)")
    parser.add_argument("--keep", action="store_true", help="leave the labs up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/bootstrap_lab.py needs root (labs)")
    tag = os.getpid()
    labs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pyctl-bench-") as tmp:
        work = Path(tmp)
        try:
            if not args.skip_vm:
                print(f"first run vs no-op re-run: phases {PHASES} on 2 VM hosts", flush=True)
                name = f"bvm{tag}"
                labs.append(name)
                summary = lab_up(name, "vm", 2)
                first = timed_bootstrap(summary["inventory"], work / "vm-state")
                print(f"  first run            {first:8.1f} s", flush=True)
                again = timed_bootstrap(summary["inventory"], work / "vm-state")
                print(f"  no-op re-run         {again:8.1f} s", flush=True)
                print(f"  ratio no-op / first  {again / first:8.3f}   (target <= {TARGET_NOOP})", flush=True)
            if not args.skip_fanout:
                print(f"fan-out: phases {PHASES} on 1, 2 and 4 container hosts (no NFS server)", flush=True)
                times: dict[int, float] = {}
                cpu: dict[int, float] = {}
                cores = os.cpu_count() or 1
                for nodes in (1, 2, 4):
                    name = f"bct{nodes}-{tag}"
                    labs.append(name)
                    inventory = container_inventory(lab_up(name, "container", nodes), work)
                    times[nodes] = timed_bootstrap(inventory, work / f"ct{nodes}-state")
                    cpu[nodes] = BUSY[inventory]
                    load = cpu[nodes] / (times[nodes] * cores)
                    print(
                        f"  {nodes} host(s), first run {times[nodes]:8.1f} s   machine busy {cpu[nodes]:6.1f} CPU-s"
                        f" ({load:.0%} of {cores} cores)",
                        flush=True,
                    )
                print(f"  ratio 2 hosts / 1     {times[2] / times[1]:8.3f}")
                print(f"  ratio 4 hosts / 1     {times[4] / times[1]:8.3f}   (target <= {TARGET_FANOUT})")
                # Lab hosts share this machine's cores with the controller: N hosts cannot finish before
                # the CPU time they need has been served by all cores.
                for nodes in (2, 4):
                    floor = cpu[nodes] / cores / times[1]
                    print(f"  CPU-bound floor of the {nodes} / 1 ratio on this machine: {floor:.3f}")
        finally:
            if not args.keep:
                for name in labs:
                    pyctl("lab", "down", "--name", name, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

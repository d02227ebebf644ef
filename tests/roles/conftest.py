"""Labs and helpers for the node roles' tests (tests/roles): one VM lab and one container lab for the whole
session, shared by the Molecule scenarios (VM lab: node_prep, nfs_server, nfs_client; container lab: containerd,
ssh_trust) and the node phases on container hosts (test_container_hosts.py), taken down once at the end. The node
phases through `pyctl bootstrap` on a VM, twice, and the reboot test run on the whole bootstrap's VM
(tests/k8s/test_full_bootstrap.py).

VM hosts have their own kernel (modules, swap, sysctls, NFS); container hosts (systemd-nspawn) run systemd,
apt, containerd and sshd. Timings here are those of 2 shared cores under TCG: waits are on conditions, with
generous bounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, unique_lab_name

ROOT = Path(__file__).resolve().parents[2]
PHASES = "prepare_nodes,container_runtime,storage,ssh_trust"


class SessionLabs:
    """Labs made on first use and taken down at the end of the session."""

    def __init__(self) -> None:
        self.made: dict[str, object] = {}

    def get(self, kind: str, nodes: int = 2):
        from pyctl.lab import LabSpec, up

        require_root()
        key = f"{kind}-{nodes}"
        if key not in self.made:
            name = unique_lab_name("r" + kind[0])
            self.made[key] = name  # remembered before up, so that a half-made lab is taken down too
            self.made[key] = up(LabSpec(name=name, nodes=nodes, kind=kind)).lab
        lab = self.made[key]
        if isinstance(lab, str):
            pytest.fail(f"the shared {kind} lab {lab} could not be made")
        return lab

    def close(self) -> None:
        from pyctl.lab import down

        for lab in self.made.values():
            down(lab if isinstance(lab, str) else lab.name)


@pytest.fixture(scope="session")
def role_labs() -> Iterator[SessionLabs]:
    labs = SessionLabs()
    try:
        yield labs
    finally:
        labs.close()


@pytest.fixture(scope="session")
def vm_lab(role_labs):
    """Two QEMU VMs (node1: control_plane + nfs_server, node2: workers)."""
    return role_labs.get("vm")


@pytest.fixture(scope="session")
def container_lab(role_labs):
    """Two systemd-nspawn containers (node1: control_plane + nfs_server, node2: workers)."""
    return role_labs.get("container")


def inventory_variant(lab, directory: Path, change) -> Path:
    """A copy of the lab's inventory, changed by `change(data)`."""
    data = yaml.safe_load(Path(lab.inventory_path).read_text())
    change(data)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "inventory.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def without_nfs_server(data: dict) -> None:
    """Container hosts cannot serve or mount NFS: their inventories drop the nfs_server group."""
    data["all"]["children"].pop("nfs_server", None)


class Run:
    """One `pyctl bootstrap` run: its exit status, output and the final per-host stats from its events."""

    def __init__(self, result: subprocess.CompletedProcess, run_dir: Path | None, seconds: float) -> None:
        self.returncode = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.run_dir = run_dir
        self.seconds = seconds
        self.stats = _stats(run_dir) if run_dir else {}

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}\n(run directory {self.run_dir})"

    def per_host(self, key: str) -> dict[str, int]:
        return self.stats.get(key, {})


def _stats(run_dir: Path) -> dict[str, dict[str, int]]:
    """The playbook_on_stats event of an ansible-runner run: ok, changed, failures, dark ... per host."""
    for path in sorted((run_dir / "artifacts" / "ansible" / "job_events").glob("*.json"), reverse=True):
        event = json.loads(path.read_text())
        if event.get("event") == "playbook_on_stats":
            return {k: v for k, v in event.get("event_data", {}).items() if isinstance(v, dict)}
    return {}


def bootstrap(inventory: Path, state: Path, *args: str, timeout: float = 3600) -> Run:
    """`pyctl bootstrap -i INVENTORY ARGS` with its own state directory (runs, cluster files)."""
    env = dict(os.environ, PYCTL_STATE_DIR=str(state))
    before = set((state / "runs").glob("*")) if (state / "runs").is_dir() else set()
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - start
    after = set((state / "runs").glob("*")) if (state / "runs").is_dir() else set()
    new = sorted(after - before)
    return Run(result, new[-1] if new else None, seconds)

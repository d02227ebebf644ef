"""`pyctl node add`: prepare one inventory host and join it, touching the control plane only for its token."""

from __future__ import annotations

from pathlib import Path

from pyctl import console, inventory
from pyctl.commands import playrun
from pyctl.config import load_settings
from pyctl.errors import ExitCode, UsageError


def add(inventory_path: Path, host: str, verbosity: int = 0) -> int:
    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    found = next((h for h in cluster.hosts if h.name == host), None)
    if found is None:
        raise UsageError(
            f"host {host!r} is not in the inventory {inventory_path}",
            hint="add it to the workers group first, then run pyctl node add again",
        )
    if inventory.CONTROL_PLANE in found.groups:
        raise UsageError(f"{host} is the control plane host: pyctl bootstrap sets it up, not node add")
    if inventory.WORKERS not in found.groups:
        raise UsageError(f"{host} is not in the workers group", hint="add it to workers in the inventory first")
    if not settings.kubeconfig(cluster.name).is_file():
        raise UsageError(
            f"cluster {cluster.name!r} has not been bootstrapped from this machine (no kubeconfig fetched)",
            hint=f"run 'pyctl bootstrap -i {inventory_path}' first",
        )
    out = console.out()
    out.print(f"pyctl node add: {host} joins cluster {cluster.name}", markup=False)
    outcome = playrun.run(
        settings,
        "node-add",
        settings.playbooks_dir / "add_node.yml",
        cluster,
        limit=host,
        extravars=playrun.cluster_extravars(settings, cluster),
        verbosity=verbosity,
    )
    out.print(
        f"{host} is in the cluster; check it with pyctl doctor -i {inventory_path} (run directory {outcome.run_dir})",
        markup=False,
    )
    return ExitCode.OK

"""`pyctl reset`: take every node host out of the cluster (kubeadm reset plus pyctl's leftovers)."""

from __future__ import annotations

import sys
from pathlib import Path

from pyctl import console, inventory
from pyctl.commands import playrun
from pyctl.config import load_settings
from pyctl.errors import ExitCode, UsageError


def run(inventory_path: Path, yes: bool = False, verbosity: int = 0) -> int:
    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    names = ", ".join(h.name for h in cluster.nodes)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("pyctl reset asks before it destroys a cluster", hint="add --yes to run it unattended")
        import typer

        question = (
            f"Reset cluster {cluster.name!r}: kubeadm reset on {names}. Every Kubernetes object and workload is "
            "lost (the files on the NFS export stay). Continue?"
        )
        if not typer.confirm(question, default=False):
            console.err().print("pyctl reset: nothing was changed", markup=False)
            return ExitCode.USAGE
    header = f"pyctl reset: cluster {cluster.name}, hosts {names}"
    outcome = playrun.run(
        settings, "reset", settings.playbooks_dir / "reset.yml", cluster, verbosity=verbosity, header=header
    )
    out = console.out()
    kubeconfig = settings.kubeconfig(cluster.name)
    removed = kubeconfig.is_file()
    kubeconfig.unlink(missing_ok=True)
    note = f"; removed {kubeconfig}" if removed else ""
    out.print(f"reset finished{note}; run directory {outcome.run_dir}", markup=False)
    return ExitCode.OK

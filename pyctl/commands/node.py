"""`pyctl node add`: prepare one inventory host and join it, touching the control plane only for its token."""

from __future__ import annotations

from pathlib import Path

import yaml

from pyctl import console, hostkeys, inventory, phases, runner
from pyctl.commands import playrun
from pyctl.config import load_settings
from pyctl.errors import ExitCode, UsageError

ADD_NODE = "add_node.yml"


def node_phases(playbooks_dir: Path) -> list[str]:
    """The phases add_node.yml runs, in order: site.yml's node phases (a test keeps the two in step)."""
    entries = yaml.safe_load((playbooks_dir / ADD_NODE).read_text(encoding="utf-8")) or []
    return [Path(e.get("ansible.builtin.import_playbook", "")).stem for e in entries]


def add(inventory_path: Path, host: str, phase_list: str | None = None, verbosity: int = 0) -> int:
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
    known = node_phases(settings.playbooks_dir)
    selected = phases.select(known, phase_list)
    extravars = playrun.cluster_extravars(settings, cluster)
    if "ssh_trust" in selected:
        hostkeys.check_record(Path(extravars["pyctl_cluster_dir"]), inventory_path)
    run_dir = runner.new_run_dir(settings, "node-add")
    playbook = (
        settings.playbooks_dir / ADD_NODE
        if selected == known
        else phases.playbook_for(settings.playbooks_dir, selected, known, run_dir)
    )
    outcome = playrun.run(
        settings,
        "node-add",
        playbook,
        cluster,
        limit=host,
        extravars=extravars,
        verbosity=verbosity,
        run_dir=run_dir,
        header=f"pyctl node add: {host} joins cluster {cluster.name} (phases {', '.join(selected)})",
    )
    console.out().print(
        f"{host} is in the cluster; check it with pyctl doctor -i {inventory_path} (run directory {outcome.run_dir})",
        markup=False,
    )
    return ExitCode.OK

"""`pyctl bootstrap`: validate the inventory, then run the selected phases with live progress."""

from __future__ import annotations

from pathlib import Path

from pyctl import console, hostkeys, inventory, phases, runner
from pyctl.commands import playrun
from pyctl.config import load_settings
from pyctl.errors import ExitCode, UsageError


def check_limit(cluster: inventory.Cluster, limit: str | None) -> None:
    """Plain names in --limit must be hosts or groups of the inventory (patterns are left to Ansible)."""
    if not limit:
        return
    names = {h.name for h in cluster.hosts} | {g for h in cluster.hosts for g in h.groups} | {"all"}
    for raw in limit.replace(":", ",").split(","):
        item = raw.strip().lstrip("!&")
        if item and not any(c in item for c in "*?[~") and item not in names:
            raise UsageError(
                f"--limit names {item!r}, which is neither a host nor a group of the inventory",
                hint=f"hosts are {', '.join(sorted(h.name for h in cluster.hosts))}",
            )


# Phases that only read, or that only add the training user: safe on netns lab hosts, which share
# this machine's files and processes. Every other phase would change this machine itself.
_NETNS_SAFE_PHASES = ("preflight", "ssh_trust")


def _check_netns_lab(cluster: inventory.Cluster, selected: list[str]) -> None:
    netns = [h.name for h in cluster.hosts if str(h.vars.get("lab_kind", "")) == "netns"]
    unsafe = [p for p in selected if p not in _NETNS_SAFE_PHASES]
    if netns and unsafe:
        raise UsageError(
            f"hosts {', '.join(netns)} are netns lab hosts, which share this machine's files: "
            f"phases {', '.join(unsafe)} would change this machine itself",
            hint="run only --phases " + ",".join(_NETNS_SAFE_PHASES) + " there, or use a vm or container lab "
            "(pyctl lab up --kind vm)",
        )


def run(
    inventory_path: Path,
    phase_list: str | None = None,
    limit: str | None = None,
    check: bool = False,
    verbosity: int = 0,
) -> int:
    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    known = phases.discover(settings.playbooks_dir)
    selected = phases.select(known, phase_list)
    check_limit(cluster, limit)
    _check_netns_lab(cluster, selected)

    extravars = playrun.cluster_extravars(settings, cluster)
    if "ssh_trust" in selected:
        hostkeys.check_record(Path(extravars["pyctl_cluster_dir"]), inventory_path)

    run_dir = runner.new_run_dir(settings, "bootstrap")
    playbook = phases.playbook_for(settings.playbooks_dir, selected, known, run_dir)
    mode = "check mode: nothing is changed" if check else "applying changes"
    outcome = playrun.run(
        settings,
        "bootstrap",
        playbook,
        cluster,
        limit=limit,
        check=check,
        verbosity=verbosity,
        run_dir=run_dir,
        # Controller-side facts the playbooks need: where this cluster's kubeconfig and keys live.
        extravars=extravars,
        header=f"pyctl bootstrap: {len(cluster.hosts)} host(s), phases {', '.join(selected)} ({mode})",
    )
    finished = f"bootstrap finished: phases {', '.join(selected)}; run directory {outcome.run_dir}"
    console.out().print(finished, markup=False)
    return ExitCode.OK

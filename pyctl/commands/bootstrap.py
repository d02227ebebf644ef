"""`pyctl bootstrap`: validate the inventory, then run the selected phases with live progress."""

from __future__ import annotations

import sys
from pathlib import Path

from pyctl import console, inventory, phases, runner
from pyctl.config import load_settings
from pyctl.errors import ExitCode, HostsUnreachable, Interrupted, RunFailed, UsageError
from pyctl.progress import LiveView, PlainView, RunState, failure_lines, recap_table


def _check_limit(cluster: inventory.Cluster, limit: str | None) -> None:
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
    _check_limit(cluster, limit)
    _check_netns_lab(cluster, selected)

    cluster_dir = settings.clusters_dir / cluster.name
    cluster_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir = runner.new_run_dir(settings, "bootstrap")
    playbook = phases.playbook_for(settings.playbooks_dir, selected, known, run_dir)
    request = runner.RunRequest(
        verb="bootstrap",
        playbook=playbook,
        inventory=cluster.path,
        host_count=len(cluster.hosts),
        limit=limit,
        check=check,
        verbosity=verbosity,
        # Controller-side facts the playbooks need: where this cluster's kubeconfig and keys live.
        extravars={"pyctl_cluster_name": cluster.name, "pyctl_cluster_dir": str(cluster_dir)},
    )
    out = console.out()
    state = RunState()
    mode = "check mode: nothing is changed" if check else "applying changes"
    out.print(f"pyctl bootstrap: {len(cluster.hosts)} host(s), phases {', '.join(selected)} ({mode})", markup=False)
    view = LiveView(out, state) if out.is_terminal else PlainView(sys.stdout)

    def on_event(event: dict) -> None:
        view.update(state, state.apply(event))

    with view:
        outcome = runner.run_playbook(settings, request, on_event, run_dir=run_dir)

    if state.hosts:
        out.print(recap_table(state))
    for line in failure_lines(state, outcome.log_path):
        console.err().print(line, markup=False)

    if outcome.status == "canceled":
        raise Interrupted(f"bootstrap cancelled; the run so far is logged in {outcome.log_path}")
    if state.unreachable_hosts:
        raise HostsUnreachable(f"unreachable: {', '.join(state.unreachable_hosts)}", hint=f"log: {outcome.log_path}")
    if state.failed_hosts:
        raise RunFailed(f"failed on: {', '.join(state.failed_hosts)}", hint=f"log: {outcome.log_path}")
    if outcome.rc != 0:
        raise RunFailed(
            f"ansible-playbook exited with {outcome.rc} before any host failed (status {outcome.status})",
            hint=f"see {outcome.log_path}",
        )
    out.print(f"bootstrap finished: phases {', '.join(selected)}; run directory {outcome.run_dir}", markup=False)
    return ExitCode.OK

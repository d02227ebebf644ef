"""Run one of pyctl's playbooks with live progress and the house failure report (bootstrap, reset, node add,
train setup)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyctl import console, inventory, runner
from pyctl.config import Settings
from pyctl.errors import HostsUnreachable, Interrupted, RunFailed
from pyctl.progress import LiveView, PlainView, RunState, failure_lines, recap_table


def cluster_extravars(settings: Settings, cluster: inventory.Cluster) -> dict[str, Any]:
    """What bootstrap passes too: the cluster's name and its private controller directory."""
    cluster_dir = settings.clusters_dir / cluster.name
    cluster_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {"pyctl_cluster_name": cluster.name, "pyctl_cluster_dir": str(cluster_dir)}


def run(
    settings: Settings,
    verb: str,
    playbook: Path,
    cluster: inventory.Cluster,
    *,
    limit: str | None = None,
    check: bool = False,
    extravars: dict[str, Any] | None = None,
    verbosity: int = 0,
    run_dir: Path | None = None,
    host_count: int | None = None,
    header: str | None = None,
) -> runner.RunOutcome:
    """Run `playbook`; raise the matching RunFailed/HostsUnreachable/Interrupted when it did not succeed.

    `header` is printed first. It and the progress view wait for ansible-playbook's first event, so the
    console library loads while ansible-playbook starts up instead of before it is launched.
    """
    request = runner.RunRequest(
        verb=verb,
        playbook=playbook,
        inventory=cluster.path,
        host_count=len(cluster.hosts) if host_count is None else host_count,
        limit=limit,
        check=check,
        verbosity=verbosity,
        extravars=dict(extravars or {}),
    )
    state = RunState()
    views: list[LiveView | PlainView] = []

    with ExitStack() as stack:

        def start_view() -> LiveView | PlainView:
            out = console.out()
            if header:
                out.print(header, markup=False)
            views.append(stack.enter_context(LiveView(out, state) if out.is_terminal else PlainView(sys.stdout)))
            return views[0]

        def on_event(event: dict) -> None:
            view = views[0] if views else start_view()
            view.update(state, state.apply(event))

        outcome = runner.run_playbook(settings, request, on_event, run_dir=run_dir)
        if not views:
            start_view()
    out = console.out()
    if state.hosts:
        out.print(recap_table(state))
    for line in failure_lines(state, outcome.log_path):
        console.err().print(line, markup=False)
    if outcome.status == "canceled":
        raise Interrupted(f"{verb.replace('-', ' ')} cancelled; the run so far is logged in {outcome.log_path}")
    if state.unreachable_hosts:
        raise HostsUnreachable(f"unreachable: {', '.join(state.unreachable_hosts)}", hint=f"log: {outcome.log_path}")
    if state.failed_hosts:
        raise RunFailed(f"failed on: {', '.join(state.failed_hosts)}", hint=f"log: {outcome.log_path}")
    if outcome.rc != 0:
        raise RunFailed(
            f"ansible-playbook exited with {outcome.rc} before any host failed (status {outcome.status})",
            hint=f"see {outcome.log_path}",
        )
    return outcome

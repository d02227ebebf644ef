"""What the node hosts say about themselves, read over SSH with a small read-only playbook
(playbooks/doctor.yml through pyctl.runner): the host name, which is the node name, and on GPU hosts
the GPUs `nvidia-smi -L` lists. Turned into the judgement's Expectations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyctl import inventory, runner
from pyctl.config import Settings
from pyctl.k8s import gpus, names
from pyctl.k8s.health import Expectations, Problem

_NODENAME_TASK = "Read the host name, which is the node name"
_GPU_TASK = "List the GPUs with nvidia-smi"


@dataclass
class HostReport:
    node_names: dict[str, str] = field(default_factory=dict)  # host -> node name
    gpu_listings: dict[str, str] = field(default_factory=dict)  # host -> nvidia-smi -L output
    gpu_errors: dict[str, str] = field(default_factory=dict)  # host -> why nvidia-smi failed
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> SSH message
    run_dir: str = ""


def fold(events: list[dict[str, Any]]) -> HostReport:
    """Read the probe's events (kept separate from running it, so tests can feed recorded events)."""
    report = HostReport()
    for event in events:
        data = event.get("event_data") or {}
        host, task, res = data.get("host"), data.get("task"), data.get("res") or {}
        if not host:
            continue
        if event.get("event") == "runner_on_unreachable":
            report.unreachable[host] = " ".join(str(res.get("msg", "unreachable")).split())[:200]
        elif event.get("event") in ("runner_on_ok", "runner_on_failed") and task == _NODENAME_TASK:
            if res.get("rc") == 0:
                report.node_names[host] = str(res.get("stdout", "")).strip().lower()
        elif event.get("event") == "runner_on_ok" and task == _GPU_TASK:
            if res.get("rc") == 0:
                report.gpu_listings[host] = str(res.get("stdout", ""))
            else:
                why = res.get("stderr") or res.get("stdout") or res.get("msg") or f"exit code {res.get('rc')}"
                report.gpu_errors[host] = " ".join(str(why).split())[:200]
    return report


def probe(settings: Settings, cluster: inventory.Cluster) -> HostReport:
    """Run playbooks/doctor.yml on the control plane and worker hosts."""
    events: list[dict[str, Any]] = []
    request = runner.RunRequest(
        verb="doctor",
        playbook=settings.playbooks_dir / "doctor.yml",
        inventory=cluster.path,
        host_count=len(cluster.nodes),
    )
    outcome = runner.run_playbook(settings, request, events.append)
    report = fold(events)
    report.run_dir = str(outcome.run_dir)
    return report


def expectations(cluster: inventory.Cluster, report: HostReport) -> tuple[Expectations, list[Problem]]:
    """What the inventory asks for, with node names and GPU counts from the hosts; plus the host problems."""
    problems: list[Problem] = []
    nodes: dict[str, str] = {}
    gpu_counts: dict[str, int] = {}
    for host in cluster.nodes:
        if host.name in report.unreachable:
            problems.append(
                Problem(
                    f"host {host.name}",
                    f"host {host.name} cannot be reached over SSH ({report.unreachable[host.name]}): its GPUs were "
                    "not counted",
                )
            )
            nodes[host.name.lower()] = host.name  # its node name is unknown: the inventory name is the best guess
            continue
        node = report.node_names.get(host.name, host.name.lower())
        nodes[node] = host.name
        if not host.gpu:
            continue
        if host.name in report.gpu_errors:
            problems.append(
                Problem(
                    f"host {host.name}",
                    f"nvidia-smi -L fails on {host.name}, which is marked gpu=true ({report.gpu_errors[host.name]}): "
                    "the NVIDIA driver must work before the cluster can use its GPUs",
                )
            )
        else:
            gpu_counts[node] = gpus.count(report.gpu_listings.get(host.name, ""))
    claim = None
    if cluster.group(inventory.NFS_SERVER):
        cp_vars = cluster.control_plane.vars
        claim = (
            str(cp_vars.get("shared_storage_namespace", names.SHARED_CLAIM_NAMESPACE)),
            str(cp_vars.get("shared_storage_pvc_name", names.SHARED_CLAIM_NAME)),
        )
    return Expectations(nodes=nodes, gpus=gpu_counts, claim=claim), problems

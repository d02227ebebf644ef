"""`pyctl doctor`: judge the running cluster against the inventory, with the verify phase's judgement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyctl import console, inventory
from pyctl.config import load_settings
from pyctl.errors import ExitCode
from pyctl.k8s import health, hosts, kube, summary


def diagnose(inventory_path: Path) -> dict[str, Any]:
    """Everything doctor finds, as data: problems (errors first), a summary, where it looked."""
    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    kubeconfig = kube.kubeconfig_for(settings, cluster.name, inventory_path)
    api = kube.client(kubeconfig)
    report = hosts.probe(settings, cluster)
    expect, problems = hosts.expectations(cluster, report)
    overview = None
    try:
        snapshot = kube.snapshot(api)
    except kube.ClusterUnreachable as exc:
        problems.append(health.Problem("api server", f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")))
    else:
        problems += health.judge(snapshot, expect)
        overview = summary.summarize(snapshot, expect.claim)
    problems.sort(key=lambda p: p.severity != health.ERROR)
    return {
        "cluster": cluster.name,
        "kubeconfig": str(kubeconfig),
        "server": kube.server(api),
        "healthy": not health.errors(problems),
        "problems": [p.to_dict() for p in problems],
        "summary": overview,
        "expected": {"nodes": dict(expect.nodes), "gpus": dict(expect.gpus)},
        "host_run": report.run_dir,
    }


def run(inventory_path: Path, as_json: bool = False) -> int:
    result = diagnose(inventory_path)
    code = ExitCode.OK if result["healthy"] else ExitCode.HOST_FAILED
    if as_json:
        console.out().print_json(json.dumps(result))
        return code
    out = console.out()
    out.print(f"pyctl doctor: cluster {result['cluster']} at {result['server']}", markup=False)
    if result["summary"]:
        out.print(f"found: {summary.one_line(result['summary'])}", markup=False)
    expected_gpus = ", ".join(f"{node} {count}" for node, count in sorted(result["expected"]["gpus"].items()))
    if expected_gpus:
        out.print(f"nvidia-smi on the GPU hosts: {expected_gpus}", markup=False)
    problems = result["problems"]
    if not problems:
        out.print("healthy: the cluster matches the inventory", markup=False)
        return code
    errors = sum(1 for p in problems if p["severity"] == health.ERROR)
    out.print(f"{errors} error(s), {len(problems) - errors} warning(s):", markup=False)
    for problem in problems:
        out.print(f"  {problem['severity']}: {problem['message']}", markup=False)
    if errors:
        out.print("healthy: no", markup=False)
    return code


def run_workload(request: Any, as_json: bool = False) -> int:
    """`doctor --workload`: the all-reduce probe and the DDP run; exit 1 when any node is not ok."""
    from pyctl.workload import check, verdict

    def say(message: str) -> None:
        console.err().print(f"pyctl doctor: {message}", markup=False)

    report = check.run(request, say)
    if report is None:  # --render: the manifests were written, nothing ran
        return ExitCode.OK
    code = ExitCode.OK if verdict.passed(report) else ExitCode.HOST_FAILED
    if as_json:
        console.out().print_json(json.dumps(report))
        return code
    out = console.out()
    width = max((len(name) for name in report["nodes"]), default=4)
    for name, node in report["nodes"].items():
        figure = f"{node['allreduce_gbps']:.3g} Gbit/s" if node["allreduce_gbps"] is not None else "-"
        reason = f"  {node['reason']}" if node["reason"] else ""
        out.print(f"{name:<{width}}  {node['verdict']:<6}  {figure:>14}{reason}", markup=False)
    for link in report["links"]:
        figure = f"{link['gbps']:.3g} Gbit/s" if link["gbps"] is not None else f"failed: {link['error']}"
        mark = "  slow" if link["slow"] else ""
        out.print(f"link {link['a']} <-> {link['b']}: {figure}{mark}", markup=False)
    ddp = report["ddp"]
    loss = f"loss {ddp['loss']:.4g}" if ddp["loss"] is not None else "no loss"
    out.print(f"ddp: {loss}, {'passed' if ddp['passed'] else 'not passed: ' + str(ddp.get('reason'))}", markup=False)
    out.print(f"healthy: {'yes' if code == ExitCode.OK else 'no'}", markup=False)
    return code

"""`pyctl lab up|down|status`: print what the lab core returns. The core never prints."""

from __future__ import annotations

import json

from pyctl import console
from pyctl.errors import ExitCode
from pyctl.lab import LabSpec, down, down_all, names, status, up


def _progress(message: str) -> None:
    console.err().print(f"pyctl lab: {message}", markup=False)


def run_up(spec: LabSpec, as_json: bool) -> int:
    result = up(spec, progress=_progress)  # progress goes to stderr, so --json output stays clean
    lab = result.lab
    if as_json:
        console.out().print_json(json.dumps({**lab.summary(), "changed": result.changed}))
        return ExitCode.OK
    if result.changed:
        hosts = ", ".join(f"{h.name}={h.address}" for h in lab.hosts)
        _progress(f"lab {lab.name} is up in {result.seconds:.1f} s: {hosts}")
    else:
        _progress(f"lab {lab.name} is already up ({lab.describe()}): nothing to do")
    for note in result.notes:
        _progress(note)
    _progress(f"ssh: ssh -F {lab.ssh_config_path} {lab.hosts[0].name}")
    console.out().print(str(lab.inventory_path), markup=False)
    return ExitCode.OK


def run_down(name: str, everything: bool) -> int:
    results = down_all() if everything else [down(name)]
    for result in results:
        if result.existed:
            _progress(
                f"lab {result.name} is down (stopped {result.processes} processes, "
                f"removed {result.namespaces} namespaces)"
            )
        else:
            _progress(f"lab {result.name}: nothing to remove")
    if everything and not results:
        _progress("no labs")
    return ExitCode.OK


def run_status(name: str | None, as_json: bool) -> int:
    wanted = [name] if name else names()
    reports = [status(n) for n in wanted]
    if as_json:
        payload = reports[0].to_dict() if name else [r.to_dict() for r in reports]
        console.out().print_json(json.dumps(payload))
        return ExitCode.OK if all(r.healthy for r in reports) else ExitCode.HOST_FAILED
    if not reports:
        _progress("no labs (make one with 'pyctl lab up')")
        return ExitCode.OK
    from rich.table import Table

    for report in reports:
        lab = report.lab
        health = "healthy" if report.healthy else f"NOT healthy ({lab.phase})"
        table = Table(title=f"lab {lab.name}: {lab.kind}, {lab.subnet}, {health}", title_justify="left")
        for column in ("host", "address", "kind", "groups", "gpu", "process", "ssh"):
            table.add_column(column)
        for host in report.hosts:
            table.add_row(
                host.name,
                host.address,
                host.kind,
                ", ".join(host.groups),
                "yes" if host.gpu else "no",
                f"alive (pid {host.pid})" if host.process_alive else "DEAD",
                "ok" if host.ssh_ok else "FAILED",
            )
        console.out().print(table)
        console.out().print(f"inventory: {lab.inventory_path}", markup=False)
    return ExitCode.OK if all(r.healthy for r in reports) else ExitCode.HOST_FAILED

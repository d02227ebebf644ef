"""`pyctl inventory check`: validate an inventory before any host is touched."""

from __future__ import annotations

import json
from pathlib import Path

from pyctl import console
from pyctl.errors import ExitCode
from pyctl.inventory import CheckResult, Cluster, Problem, check


def problem_line(path: Path, problem: Problem) -> str:
    """`FILE:LINE: host H: field: message`, the shape compilers use, so editors can jump to it."""
    prefix = f"{path}:{problem.line}" if problem.line else f"{path}"
    where = [f"host {problem.host}"] if problem.host else []
    where += [f"group {problem.group}"] if problem.group else []
    return ": ".join([prefix, *where, problem.field, problem.message])


def print_problems(result: CheckResult) -> None:
    for problem in result.problems:
        console.err().print(problem_line(result.path, problem), markup=False)


def hosts_table(cluster: Cluster):
    from rich.table import Table

    table = Table(title=f"{cluster.path}", title_justify="left", show_lines=False)
    for column in ("host", "address", "groups", "gpu"):
        table.add_column(column)
    for host in cluster.hosts:
        table.add_row(host.name, host.address, ", ".join(host.groups), "yes" if host.gpu else "no")
    return table


def run_check(path: Path, as_json: bool) -> int:
    result = check(path)
    if as_json:
        console.out().print_json(json.dumps(result.to_dict()))
    elif result.ok:
        assert result.cluster is not None
        console.out().print(hosts_table(result.cluster))
        settings = result.cluster.settings
        console.out().print(
            "  ".join(f"{key}={value or '(from host addresses)'}" for key, value in settings.items()), markup=False
        )
    else:
        print_problems(result)
    return ExitCode.OK if result.ok else ExitCode.USAGE

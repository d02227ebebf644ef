"""The job lifecycle lives behind one interface per backend (pyctl/train/backends): both backends offer
every step of it with the same parameters, and the command module only parses, calls them and prints."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from pyctl.train import backends
from pyctl.train.backends.k8s import K8sBackend
from pyctl.train.backends.ssh import SshBackend

COMMAND = Path(__file__).resolve().parents[2] / "pyctl" / "commands" / "train.py"
STEPS = ("start", "follow", "unfollowed_lines", "refresh", "cancel", "logs")


@pytest.mark.parametrize("backend", [SshBackend, K8sBackend])
def test_each_backend_offers_every_step_of_the_interface(backend):
    for step in STEPS:
        wanted = list(inspect.signature(getattr(backends.Backend, step)).parameters)
        got = list(inspect.signature(getattr(backend, step)).parameters)
        assert got[: len(wanted)] == wanted, f"{backend.__name__}.{step}{got} vs Backend.{step}{wanted}"
    assert isinstance(backend.interrupt_note, str)


def test_the_command_module_reaches_jobs_only_through_the_backends():
    """No supervisor, SSH, Kubernetes client or log-following code in pyctl/commands/train.py."""
    tree = ast.parse(COMMAND.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    internals = ("sshjob", "kubeclient", "supervisor", "hostwrap", "subprocess", "signal", "pyctl.train.logs")
    found = sorted(name for name in imported if any(part in name for part in internals))
    assert not found, found


def test_the_backend_is_picked_from_the_record(state_dir):
    from pyctl.config import load_settings
    from pyctl.train.jobs import JobRecord, JobStore

    store = JobStore(load_settings())
    ssh = JobRecord(id="a", workload="ddp", backend="ssh", created=0.0)
    k8s = JobRecord(id="b", workload="ddp", backend="k8s", created=0.0)
    assert isinstance(backends.for_record(store, ssh), SshBackend)
    assert isinstance(backends.for_record(store, k8s), K8sBackend)


def test_workloads_do_not_import_the_backends():
    """One direction: a backend runs a workload's launches or manifests; a workload never needs a backend."""
    workloads = COMMAND.parents[1] / "train" / "workloads"
    found = []
    for path in sorted(workloads.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{path.name}: {n}" for n in names if n.startswith("pyctl.train.backends")]
    assert not found, found

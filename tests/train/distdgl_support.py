"""Shared pieces of the `pyctl train distdgl` tests: one 2-host netns lab and one shared folder for the
whole session, the CLI run as a real process, and a scan for what a job may leave behind.

Loaded as a plugin (`pytest_plugins`) by the test modules, so the session fixtures exist once however
many modules use them. The DistDGL payload's fixtures (tests/payloads/distdgl_fixtures.py: the pinned
interpreter, the single-process reference run on the same graph and split) are loaded the same way.

The payload runs with the DistDGL environment's interpreter (PYCTL_DISTDGL_PYTHON, default
<repo>/.venv-distdgl/bin/python); netns lab hosts share this machine's files, so the hosts use it too,
and any folder of this machine is "shared" between them: the session's share stands in for the NFS
mount (SSH) and for the claim (the kubelet stand-in's pods).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "payloads"))  # distdgl_fixtures, as tests/payloads import it

from distdgl_fixtures import require_distdgl_python  # noqa: E402

from tests.conftest import require_root  # noqa: E402
from tests.train.conftest import Run, pyctl  # noqa: E402

DGL_PORT = 30050
FAIL_BOUND_S = 60  # the bound for a misconfigured job to fail, naming the cause
JOB_TIMEOUT_S = 420
MARKERS = (
    b"distdgl_startup.py",
    b"launch.py",
    b"partition.py",
    b"train.py",
    b"torch.distributed.run",
    b"hostwrap.py",
)
# The graph, split and training flags of tests/payloads (distdgl_fixtures.GRAPH_ARGS/TRAIN_ARGS), as
# pyctl's flags: the synthetic graph's defaults are that 4000-node, 4-class SBM with seed 0.
GRAPH = ["--graph", "synthetic"]
TRAIN = ["--epochs", "20", "--batch-size", "256", "--fanouts", "10,10", "--eval-fanouts=-1,-1"]
LONG_TRAINING = ["--epochs", "100000", "--", "--eval-every", "0"]


@dataclass
class DistDglLab:
    lab: object
    state_dir: Path
    share: Path
    python: Path

    @property
    def inventory(self) -> str:
        return str(self.lab.inventory_path)

    @property
    def namespaces(self) -> list[str]:
        return [h.namespace for h in self.lab.hosts]

    @property
    def hosts(self) -> list[tuple[str, str]]:
        """(network namespace, address) per host, machine 0 first."""
        return [(h.namespace, h.address) for h in self.lab.hosts]

    def distdgl(self, *args: str, inventory: str | None = None, timeout: float = JOB_TIMEOUT_S) -> Run:
        """`pyctl train distdgl --backend ssh` on the lab's hosts, as root, with the session's share."""
        return pyctl(
            self.state_dir,
            "train", "distdgl", "-i", inventory or self.inventory, "--backend", "ssh", "--ssh-user", "root",
            "--python", str(self.python), "--shared-path", str(self.share), *args,
            timeout=timeout,
        )  # fmt: skip

    def leftovers(self) -> list[str]:
        """Job processes still alive in the lab's namespaces, and hosts where port 30050 still listens."""
        found = job_processes(self.namespaces)
        for ns in self.namespaces:
            out = subprocess.run(
                ["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{DGL_PORT}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if out.strip():
                found.append(f"{ns}: port {DGL_PORT} still listening: {out.strip()}")
        return found

    def assert_nothing_left(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert self.leftovers() == []


def job_processes(namespaces: list[str]) -> list[str]:
    inodes = {os.stat(f"/run/netns/{n}").st_ino for n in namespaces}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(link[link.index("[") + 1 : -1]) in inodes and any(m in cmdline for m in MARKERS):
            text = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {text[:200]}")
    return found


@pytest.fixture(scope="session")
def distdgl_lab(tmp_path_factory) -> Iterator[DistDglLab]:
    """A 2-host netns lab (own address, sshd, /dev/shm per host), a pyctl state dir and a shared folder."""
    require_root()
    python = require_distdgl_python()
    from pyctl.config import load_settings
    from pyctl.lab import LabSpec, down, up
    from tests.conftest import unique_lab_name

    state = tmp_path_factory.mktemp("distdgl-state")
    share = tmp_path_factory.mktemp("distdgl-share")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYCTL_STATE_DIR", str(state))
        patch.delenv("PYCTL_CONFIG", raising=False)
        name = unique_lab_name("dg")
        try:
            lab = up(LabSpec(name=name, nodes=2, kind="netns"), settings=load_settings()).lab
            yield DistDglLab(lab, state, share, python)
        finally:
            _cancel_running(state)
            down(name, settings=load_settings())


def _cancel_running(state: Path) -> None:
    for path in (state / "jobs").glob("*/job.json") if (state / "jobs").is_dir() else []:
        if json.loads(path.read_text())["state"] not in ("succeeded", "failed", "cancelled"):
            pyctl(state, "train", "cancel", path.parent.name, timeout=180)


@pytest.fixture
def no_job_left(distdgl_lab) -> Iterator[None]:
    """A failed test must not leave its job running into the next one (same hosts, same ports)."""
    yield
    _cancel_running(distdgl_lab.state_dir)


def summary_of(run: Run) -> dict:
    """Machine 0's PYCTL_SUMMARY line as launch.py repeats it last (unprefixed), from a followed job."""
    lines = [ln.split("] ", 1)[1] for ln in run.stdout.splitlines() if "] PYCTL_SUMMARY " in ln]
    lines = [ln for ln in lines if ln.startswith("PYCTL_SUMMARY ")]
    assert len(lines) == 1, f"expected one PYCTL_SUMMARY line from launch.py\n{run}"
    return json.loads(lines[0].split(" ", 1)[1])


def job_id_of(run: Run) -> str:
    for line in run.stderr.splitlines():
        if line.startswith("pyctl train: job ") and (" started on " in line or " submitted" in line):
            return line.split()[3]
    raise AssertionError(str(run))

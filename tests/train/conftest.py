"""Fixtures for `pyctl train` tests: the CLI run as a real process, a shared 2-host netns lab, and a
scan for payload processes left in the lab's namespaces.

The payload runs with the DDP environment's interpreter (PYCTL_DDP_PYTHON, default
<repo>/.venv-ddp/bin/python); netns lab hosts share this machine's files, so the hosts use it too.
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
DDP_PYTHON = Path(os.environ.get("PYCTL_DDP_PYTHON", REPO / ".venv-ddp" / "bin" / "python"))
# Digits settings that reach ~0.95+ in a few epochs; one thread per process keeps 2 loaded cores sane.
FAST = ["--dataset", "digits", "--batch-size", "32", "--lr", "0.05", "--threads", "1"]
PAYLOAD_MARKERS = (b"train.py", b"torch.distributed.run", b"hostwrap.py", b"allreduce_user.py", b"hang_or_fail.py")
JOB_TIMEOUT_S = 420


def need_ddp_python() -> None:
    if not DDP_PYTHON.is_file():
        pytest.skip(
            f"the DDP payload environment {DDP_PYTHON} is missing: python3 -m venv .venv-ddp && "
            ".venv-ddp/bin/pip install -r payloads/ddp/requirements.txt"
        )


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"rc={self.returncode}\n--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-3000:]}"

    @property
    def summary(self) -> dict:
        lines = [ln for ln in self.stdout.splitlines() if "PYCTL_SUMMARY " in ln]
        assert len(lines) == 1, f"expected one PYCTL_SUMMARY line\n{self}"
        return json.loads(lines[0].split("PYCTL_SUMMARY ", 1)[1])


def cli_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYCTL_", "PET_", "TORCH"))}
    env.update({"PYCTL_STATE_DIR": str(state_dir), "PYCTL_CONFIG": str(state_dir / "none.toml")})
    return env


def pyctl(state_dir: Path, *args: str, timeout: float = JOB_TIMEOUT_S, check_rc: int | None = None) -> Run:
    """`pyctl ARGS` as its own process (the supervisor it starts is detached, as for a user)."""
    result = subprocess.run(
        [sys.executable, "-m", "pyctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(state_dir),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    run = Run(result.returncode, result.stdout, result.stderr)
    if check_rc is not None:
        assert run.returncode == check_rc, str(run)
    return run


def record(state_dir: Path, job_id: str) -> dict:
    return json.loads((state_dir / "jobs" / job_id / "job.json").read_text())


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def payload_processes(namespaces: list[str]) -> list[str]:
    """Payload processes (torchrun, workers, hostwrap, the test's script) in any of these namespaces."""
    inodes = {netns_inode(n) for n in namespaces}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        inode = int(link[link.index("[") + 1 : -1])
        if inode in inodes and any(m in cmdline for m in PAYLOAD_MARKERS):
            text = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {text[:200]}")
    return found


@dataclass
class TrainLab:
    lab: object
    state_dir: Path

    @property
    def inventory(self) -> str:
        return str(self.lab.inventory_path)

    @property
    def namespaces(self) -> list[str]:
        return [h.namespace for h in self.lab.hosts]

    def ddp(self, *args: str, timeout: float = JOB_TIMEOUT_S) -> Run:
        return pyctl(
            self.state_dir,
            "train", "ddp", "-i", self.inventory, "--backend", "ssh", "--ssh-user", "root",
            "--python", str(DDP_PYTHON), *args,
            timeout=timeout,
        )  # fmt: skip


@pytest.fixture(scope="module")
def train_lab(tmp_path_factory) -> Iterator[TrainLab]:
    """A 2-host netns lab and a private pyctl state dir, shared by a module's tests."""
    from tests.conftest import require_root

    require_root()
    need_ddp_python()
    from pyctl.config import load_settings
    from pyctl.lab import LabSpec, down, up
    from tests.conftest import unique_lab_name

    state = tmp_path_factory.mktemp("train-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYCTL_STATE_DIR", str(state))
        patch.delenv("PYCTL_CONFIG", raising=False)
        name = unique_lab_name("tr")
        try:
            lab = up(LabSpec(name=name, nodes=2, kind="netns"), settings=load_settings()).lab
            yield TrainLab(lab, state)
        finally:
            down(name, settings=load_settings())

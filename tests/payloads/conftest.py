"""Fixtures for the DDP payload tests (payloads/ddp/train.py), run for real in its own environment.

The payload needs torch, which the controller's .venv does not have: the tests run it with the
interpreter named by PYCTL_DDP_PYTHON (default: <repo>/.venv-ddp/bin/python) and skip, saying how to
create it, only when that interpreter is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

DDP_REPO = Path(__file__).resolve().parents[2]
DDP_TRAIN = DDP_REPO / "payloads" / "ddp" / "train.py"
DDP_SUMMARY_PREFIX = "PYCTL_SUMMARY "
# A hung collective must fail the test, not the CI run.
DDP_TIMEOUT_S = 300
# Variables that would make a plain run think it is under torchrun, or inject a fault.
DDP_LEAKY_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "PYCTL_DDP_FAIL_AT",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
)


@dataclass
class DdpResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def summaries(self) -> list[dict]:
        """Every PYCTL_SUMMARY line printed on stdout, parsed."""
        return ddp_parse_summaries(self.stdout)

    @property
    def summary(self) -> dict:
        summaries = self.summaries
        assert len(summaries) == 1, f"expected one summary line, got {len(summaries)}\n{self}"
        return summaries[0]

    def __str__(self) -> str:
        return f"rc={self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def ddp_parse_summaries(stdout: str) -> list[dict]:
    return [
        json.loads(line.split(DDP_SUMMARY_PREFIX, 1)[1]) for line in stdout.splitlines() if DDP_SUMMARY_PREFIX in line
    ]


def ddp_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in DDP_LEAKY_ENV}
    env.pop("TORCHELASTIC_RESTART_COUNT", None)
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    env.update(extra)
    return env


def ddp_read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """The JSON log's epoch lines and summary lines."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    epochs = [r for r in records if r["event"] == "epoch"]
    summaries = [r for r in records if r["event"] == "summary"]
    assert len(epochs) + len(summaries) == len(records), records
    return epochs, summaries


@pytest.fixture(scope="session")
def ddp_python() -> Path:
    python = Path(os.environ.get("PYCTL_DDP_PYTHON", DDP_REPO / ".venv-ddp" / "bin" / "python"))
    if not python.exists():
        pytest.skip(
            f"DDP payload interpreter {python} is absent: create it with `python3 -m venv .venv-ddp && "
            ".venv-ddp/bin/pip install -r payloads/ddp/requirements.txt` (or set PYCTL_DDP_PYTHON)"
        )
    return python


@pytest.fixture(scope="session")
def ddp_run(ddp_python: Path):
    """Run train.py as a single process: ddp_run(*flags, env={...}) -> DdpResult."""

    def run(*flags: str, env: dict[str, str] | None = None) -> DdpResult:
        return ddp_subprocess([str(ddp_python), str(DDP_TRAIN), *flags], env)

    return run


@pytest.fixture(scope="session")
def ddp_torchrun_argv(ddp_python: Path):
    """ddp_torchrun_argv(nproc, *flags, torchrun_flags=()): argv of torchrun --standalone running train.py."""

    def argv(nproc: int, *flags: str, torchrun_flags: tuple[str, ...] = ()) -> list[str]:
        return [
            str(ddp_python),
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            *torchrun_flags,
            str(DDP_TRAIN),
            *flags,
        ]

    return argv


@pytest.fixture(scope="session")
def ddp_torchrun(ddp_torchrun_argv):
    """Run train.py under torchrun --standalone: ddp_torchrun(nproc, *flags, torchrun_flags=(), env=)."""

    def run(
        nproc: int, *flags: str, torchrun_flags: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> DdpResult:
        return ddp_subprocess(ddp_torchrun_argv(nproc, *flags, torchrun_flags=torchrun_flags), env)

    return run


@pytest.fixture(scope="session")
def ddp_environ():
    """ddp_environ(**extra): this process's environment without torchrun or fault-injection variables."""
    return ddp_env


@pytest.fixture(scope="session")
def ddp_log():
    """ddp_log(path) -> (epoch records, summary records) from the payload's JSON-lines log."""
    return ddp_read_log


@pytest.fixture(scope="session")
def ddp_summary_of():
    """ddp_summary_of(stdout) -> the parsed PYCTL_SUMMARY lines."""
    return ddp_parse_summaries


def ddp_subprocess(argv: list[str], env: dict[str, str] | None) -> DdpResult:
    proc = subprocess.run(
        argv,
        env=ddp_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=DDP_TIMEOUT_S,
        cwd=DDP_REPO,
        check=False,
    )
    result = DdpResult(proc.returncode, proc.stdout, proc.stderr)
    sys.stderr.write(result.stderr[-4000:])  # shown by pytest only when the test fails
    return result

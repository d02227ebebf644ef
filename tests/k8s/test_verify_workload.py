"""The verify phase's `verify_workload_enabled` step: it runs `pyctl doctor --workload --json` on the
controller with the run's inventory and fails naming each node that is not ok, with its reason.
pyctl itself is replaced by tests/doubles/fake_pyctl_workload.py (the real check runs in
tests/train/test_doctor_workload.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = ROOT / "tests" / "doubles" / "fake_pyctl_workload.py"
PLAYBOOK = ROOT / "tests" / "fixtures" / "playbooks" / "verify_workload.yml"
INVENTORY = "all:\n  children:\n    control_plane:\n      hosts:\n        cp1: {ansible_connection: local}\n"
OK = {"verdict": "ok", "reason": None, "allreduce_gbps": 4.6}


def _run(tmp_path: Path, report: dict, *extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    (tmp_path / "report.json").write_text(json.dumps(report))
    calls = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / ".ansible-tmp"),
        ANSIBLE_STDOUT_CALLBACK="default",
        FAKE_WORKLOAD_REPORT=str(tmp_path / "report.json"),
        FAKE_WORKLOAD_CALLS=str(calls),
    )
    command = json.dumps([sys.executable, str(DOUBLE)])
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory), str(PLAYBOOK),
            "-e", json.dumps({"verify_workload_command": json.loads(command), "verify_workload_backend": "ssh"}),
            *extra,
        ],
        capture_output=True, stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    lines = calls.read_text().splitlines() if calls.is_file() else []
    return result, [json.loads(line) for line in lines]


def test_a_healthy_report_passes_and_the_run_gets_the_inventory_and_backend(tmp_path):
    report = {"nodes": {"node1": OK, "node2": OK}, "ddp": {"loss": 0.2, "passed": True, "reason": None}}
    result, calls = _run(tmp_path, report, "-e", '{"verify_workload_args": ["--min-gbps", "1"]}')
    assert result.returncode == 0, result.stdout[-3000:]
    assert calls == [
        ["doctor", "--workload", "-i", str(tmp_path / "hosts.yml"), "--backend", "ssh", "--json", "--min-gbps", "1"]
    ]


def test_a_slow_node_fails_the_phase_naming_it_and_its_reason(tmp_path):
    slow = {"verdict": "slow", "reason": "its best all-reduce link reached 0.05 Gbit/s", "allreduce_gbps": 0.05}
    report = {"nodes": {"node1": OK, "node3": slow}, "ddp": {"loss": 0.2, "passed": True, "reason": None}}
    result, _ = _run(tmp_path, report)
    assert result.returncode != 0
    assert "The workload test failed. node3 is slow: its best all-reduce link reached 0.05 Gbit/s." in result.stdout
    assert "node1 is" not in result.stdout


@pytest.mark.parametrize("backend", ["slurm"])
def test_when_pyctl_refuses_the_phase_fails_with_its_error_line(tmp_path, backend):
    report = {"nodes": {}, "ddp": {"loss": None, "passed": False, "reason": None}}
    result, _ = _run(tmp_path, report, "-e", json.dumps({"verify_workload_backend": backend}))
    assert result.returncode != 0
    assert "pyctl doctor --workload exited with 2: pyctl: error: --backend 'slurm' is not one of" in result.stdout

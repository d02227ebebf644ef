"""The lab pass's two groups (tests/conftest.py, lab_group): scripts/test runs them side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import VM_GROUP_PATHS, lab_group

REPO = Path(__file__).resolve().parents[2]


def test_every_module_named_for_the_vm_group_exists_and_the_rest_go_to_hosts():
    for path in VM_GROUP_PATHS:
        assert (REPO / path).is_file(), f"{path} was renamed: update VM_GROUP_PATHS in tests/conftest.py"
        assert lab_group(f"{path}::test_x") == "vm"
    assert lab_group("tests/train/test_ssh_backend.py::test_x[a::b]") == "hosts"


def collected(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "-m", "lab or slow", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_the_two_groups_split_the_lab_tests_whole_modules_at_a_time():
    every, vm, hosts = collected(), collected("--lab-group", "vm"), collected("--lab-group", "hosts")
    assert vm and hosts and not vm & hosts and vm | hosts == every
    assert {test.split("::")[0] for test in vm} == set(VM_GROUP_PATHS)
    script = (REPO / "scripts" / "test").read_text()
    assert "for group in vm hosts; do" in script and '--lab-group "$group"' in script

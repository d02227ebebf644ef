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


def test_each_lab_test_carries_its_group_mark_and_scripts_test_runs_them_by_group():
    # What pytest-xdist reads under --dist loadgroup: every selected lab test has exactly one xdist_group mark.
    probe = (
        "import pytest, sys\n"
        "class Grab:\n"
        "    def pytest_collection_finish(self, session):\n"
        "        for item in session.items:\n"
        "            marks = [m.args[0] for m in item.iter_markers('xdist_group')]\n"
        "            print('GROUP', item.nodeid.split('::')[0], ','.join(marks))\n"
        "sys.exit(pytest.main(['-q', '--collect-only', '-m', 'lab or slow', '-p', 'no:cacheprovider'],"
        " plugins=[Grab()]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    groups = {}
    for line in result.stdout.splitlines():
        if line.startswith("GROUP "):
            _, path, marks = line.split(" ", 2)
            groups.setdefault(marks, set()).add(path)
    assert set(groups) == {"vm", "hosts"}, groups
    assert groups["vm"] == set(VM_GROUP_PATHS)
    assert '-n 2 --dist loadgroup -m "lab or slow"' in (REPO / "scripts" / "test").read_text()

"""`pyctl train setup`: the train_env role through pyctl's runner on netns lab hosts.

The real requirements install torch (minutes, a large download); here the role gets a requirements
file that pip already satisfies and checks an import every Python has, so what is exercised is the
role's own work: preflight, the virtualenv from a system interpreter, the copied requirements, pip,
the verify step, and a second run that changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.train.conftest import pyctl

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _inventory(train_lab, tmp_path: Path) -> Path:
    data = yaml.safe_load(Path(train_lab.inventory).read_text())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# already in every virtualenv\npip\n")
    data["all"]["vars"].update(
        {
            # netns hosts share this machine's files: one folder per host.
            "train_env_dir": str(tmp_path / "venvs" / "{{ inventory_hostname }}"),
            "train_env_requirements_file": str(requirements),
            "train_env_verify_module": "json",
        }
    )
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _recap_changed(stdout: str) -> list[int]:
    return [int(n) for n in re.findall(r"changed=(\d+)", stdout)]


def test_setup_makes_the_environment_and_converges(train_lab, tmp_path):
    inventory = _inventory(train_lab, tmp_path)
    first = pyctl(train_lab.state_dir, "train", "setup", "-i", str(inventory), timeout=600)
    assert first.returncode == 0, str(first)
    for host in ("node1", "node2"):
        python = tmp_path / "venvs" / host / "bin" / "python"
        assert python.exists(), f"no virtualenv for {host}"
        assert (tmp_path / "venvs" / host / "requirements.txt").read_text().endswith("pip\n")
    second = pyctl(train_lab.state_dir, "train", "setup", "-i", str(inventory), timeout=600)
    assert second.returncode == 0, str(second)
    assert "environment is ready" in second.stderr
    assert "changed" not in second.stdout or all(n == 0 for n in _recap_changed(second.stdout)), second.stdout

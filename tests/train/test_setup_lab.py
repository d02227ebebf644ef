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


def test_setup_refuses_an_interpreter_older_than_the_pins_need_before_changing_anything(train_lab, tmp_path):
    """Ubuntu 22.04's python3 is 3.10; the payload's pins need 3.11. A stand-in interpreter that reports
    3.10 (netns hosts share this machine's files) is refused on each host, naming the host, the version
    and what to do, before the environment's folder is made."""
    inventory = _inventory(train_lab, tmp_path)
    old = tmp_path / "python3.10"
    old.write_text(
        "#!/bin/sh\n# Stands in for Ubuntu 22.04's /usr/bin/python3: only the version probe runs.\necho 3.10\n"
    )
    old.chmod(0o755)
    data = yaml.safe_load(inventory.read_text())
    data["all"]["vars"]["train_env_python"] = str(old)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    run = pyctl(train_lab.state_dir, "train", "setup", "-i", str(inventory), timeout=600)
    assert run.returncode == 1, str(run)
    for host in ("node1", "node2"):
        assert f"{old} on {host} is Python 3.10" in run.stderr + run.stdout, str(run)
    assert "need Python 3.11 or newer" in run.stderr + run.stdout and "set train_env_python" in run.stderr
    assert not (tmp_path / "venvs").exists(), "nothing was made"


def test_hosts_sharing_the_environments_folder_build_it_once(train_lab, tmp_path):
    """netns hosts share this machine's files: one folder for both (like the default /opt/pyctl/venvs/ddp
    there) is built by one host, not by two pips at once into one virtualenv; both check it imports."""
    inventory = _inventory(train_lab, tmp_path)
    data = yaml.safe_load(inventory.read_text())
    data["all"]["vars"]["train_env_dir"] = str(tmp_path / "venvs" / "shared")
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    run = pyctl(train_lab.state_dir, "train", "setup", "-i", str(inventory), timeout=600)
    assert run.returncode == 0, str(run)
    assert (tmp_path / "venvs" / "shared" / "bin" / "python").exists()
    pip = [
        ln.split()[1]
        for ln in run.stdout.splitlines()
        if ln.endswith("Ensure the virtualenv has the pinned requirements")
    ]
    assert sorted(pip) == ["changed", "skipped"], run.stdout
    checks = [ln.split()[1] for ln in run.stdout.splitlines() if ln.endswith("Check that the import worked")]
    assert checks == ["ok", "ok"], run.stdout

"""Each role's Molecule `default` scenario (create, [prepare,] converge, idempotence, verify) on the session's
labs: VM hosts for the roles that need a kernel, container hosts for the others. Molecule's create calls
`pyctl lab up` with the session lab's name (a no-op: the lab is up), and destroy is left to the session, so
all scenarios of a kind share one lab."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests.roles.conftest import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VM_ROLES = ["node_prep", "nfs_server", "nfs_client"]
CONTAINER_ROLES = ["containerd", "ssh_trust"]


@pytest.fixture
def molecule_env(tmp_path):
    def env(lab) -> dict[str, str]:
        return dict(
            os.environ,
            **{f"PYCTL_MOLECULE_LAB_{lab.kind.upper()}": lab.name},
            PYCTL_MOLECULE_KEEP_LAB="1",
            # Molecule's state and inventory for this test only: a state left by an earlier run would skip
            # create and point the inventory at a lab that is gone.
            MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"),
            ANSIBLE_FORCE_COLOR="0",
            NO_COLOR="1",
        )

    return env


def molecule_test(role: str, lab, env: dict[str, str]) -> None:
    start = time.monotonic()
    result = subprocess.run(
        ["molecule", "test", "--scenario-name", "default", "--destroy", "never"],
        cwd=ROOT / "roles" / role,
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=3600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    for action in ("converge", "idempotence", "verify"):
        assert re.search(rf"\[default > {action}\] Executed: Successful", output), output[-5000:]
    recaps = [line for line in output.splitlines() if re.match(r"^node\d+\s+: ok=", line)]
    # Converge, idempotence and verify ran on the lab's hosts (not on an empty inventory): every host shows up,
    # and some host in all three.
    counts = {host.name: sum(line.startswith(f"{host.name} ") for line in recaps) for host in lab.hosts}
    assert all(counts.values()) and max(counts.values()) >= 3, f"{counts}\n{output[-5000:]}"
    print(f"\nmolecule test {role}: {time.monotonic() - start:.0f} s", *recaps, sep="\n  ")


@pytest.mark.parametrize("role", VM_ROLES)
def test_molecule_default_scenario_on_vms(role, vm_lab, molecule_env):
    molecule_test(role, vm_lab, molecule_env(vm_lab))


@pytest.mark.parametrize("role", CONTAINER_ROLES)
def test_molecule_default_scenario_on_containers(role, container_lab, molecule_env):
    molecule_test(role, container_lab, molecule_env(container_lab))

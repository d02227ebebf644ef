"""Every role's Molecule scenarios are valid Molecule configuration and point at playbooks that exist. The
`vagrant` scenarios cannot run on the CI machine (no hypervisor): this keeps them correct."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(ROOT.glob("roles/*/molecule/*/molecule.yml"))


def test_every_role_has_a_default_and_a_vagrant_scenario():
    roles = sorted(p for p in (ROOT / "roles").iterdir() if (p / "molecule").is_dir())
    assert roles
    for role in roles:
        assert (role / "molecule" / "default" / "molecule.yml").is_file(), role.name
        assert (role / "molecule" / "vagrant" / "molecule.yml").is_file(), role.name


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}")
def test_scenario_is_valid_and_its_playbooks_exist(path):
    from molecule.model.schema_v3 import validate

    config = yaml.safe_load(path.read_text())
    assert validate(config) == [], path
    playbooks = {**config.get("ansible", {}).get("playbooks", {}), **config.get("provisioner", {}).get("playbooks", {})}
    assert "converge" in playbooks and "verify" in playbooks, path
    for name, playbook in playbooks.items():
        assert (path.parent / playbook).resolve().is_file(), f"{path}: {name} playbook {playbook} is missing"
    sequence = config["scenario"]["test_sequence"]
    assert sequence[:2] == ["destroy", "create"] and sequence[-1] == "destroy", sequence
    assert {"converge", "idempotence", "verify"} <= set(sequence), sequence

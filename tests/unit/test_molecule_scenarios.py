"""Every role's Molecule scenarios are valid Molecule configuration and point at playbooks that exist. Of the
`vagrant` scenarios only node_prep's runs in the suite (tests/roles/test_molecule_vagrant.py): this keeps the
others correct, and the same shape as the one that runs."""

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


VAGRANT_SCENARIOS = sorted(ROOT.glob("roles/*/molecule/vagrant/molecule.yml"))


@pytest.mark.parametrize("path", VAGRANT_SCENARIOS, ids=lambda p: p.parts[-4])
def test_vagrant_scenario_takes_its_boxes_and_libvirt_driver_from_the_environment(path):
    """The README's recipe (and the test that runs node_prep's) point every vagrant scenario at a local box and
    at TCG through these variables; without them a scenario needs Vagrant Cloud's boxes and KVM."""
    from molecule.interpolation import Interpolator, TemplateWithDefaults

    env = {
        "PYCTL_VAGRANT_BOX_DEBIAN": "pyctl/debian12",
        "PYCTL_VAGRANT_BOX_UBUNTU": "local/ubuntu",
        "PYCTL_VAGRANT_LIBVIRT_DRIVER": "qemu",
    }
    for variables, boxes, driver in (({}, ["generic/debian12", "generic/ubuntu2204"], "kvm"),
                                     (env, ["pyctl/debian12", "local/ubuntu"], "qemu")):  # fmt: skip
        text = Interpolator(TemplateWithDefaults, {"MOLECULE_PROJECT_DIRECTORY": "/x", **variables})
        config = yaml.safe_load(text.interpolate(path.read_text(), "MOLECULE_"))
        assert config["driver"] == {"name": "vagrant", "provider": {"name": "libvirt"}}, path
        assert [p["box"] for p in config["platforms"]] == boxes, path
        for platform in config["platforms"]:
            assert platform["provider_options"]["driver"] == driver, path
            assert platform["config_options"]["vm.boot_timeout"] >= 600, path  # a TCG boot takes minutes


def test_the_vagrant_driver_is_installed_with_its_own_vagrant_module():
    """molecule-plugins[vagrant] as pinned carries the Ansible module its create playbook calls (26.10 moved it
    to the community.vagrant collection, which only Galaxy has), and python-vagrant, which that module imports."""
    from molecule.api import drivers

    assert "vagrant" in drivers()
    import molecule_plugins.vagrant
    import vagrant  # python-vagrant

    package = Path(molecule_plugins.vagrant.__file__).parent
    assert (package / "modules" / "vagrant.py").is_file()
    assert "community.vagrant" not in (package / "playbooks" / "create.yml").read_text()
    assert vagrant.Vagrant

"""The containerd role's configuration for each containerd generation, rendered by Ansible from the role's own
templates and variables and read back as TOML: config version 2 for 1.6/1.7 with the CRI plugin
io.containerd.grpc.v1.cri, version 3 for 2.x with io.containerd.cri.v1.runtime / .images (FIELD_NOTES #3).
containerd 2.x cannot be installed on the CI machine; this is how its half of the template is exercised.
The merge of the NVIDIA drop-in is checked the way containerd 1.x merges imports (a plugin section replaces
the root file's whole section, containerd#5837): what the drop-in carries must stand on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "containerd"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{role}/../versions/defaults/main.yml, {role}/defaults/main.yml, {role}/vars/main.yml]
  vars:
    __containerd_state: {{stdout_lines: ["version containerd containerd.io {version} 0123abc"]}}
  tasks:
    - ansible.builtin.template: {{src: {role}/templates/config.toml.j2, dest: {out}/config.toml, mode: "0644"}}
    - ansible.builtin.template: {{src: {role}/templates/50-pyctl-nvidia.toml.j2, dest: {out}/nvidia.toml, mode: "0644"}}
    - ansible.builtin.copy:
        dest: {out}/vars.json
        mode: "0644"
        content: "{{{{ {{'config_version': _containerd_config_version | int,
                     'runtime_plugin': _containerd_cri_runtime_plugin | trim,
                     'images_plugin': _containerd_cri_images_plugin | trim}} | to_json }}}}"
"""


def render(tmp_path: Path, version: str, default_nvidia: bool = False) -> tuple[dict, dict, dict]:
    playbook = tmp_path / "render.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE, version=version, out=tmp_path))
    # Extra vars: role defaults come in as vars_files here, which would outrank play vars.
    extra = {"containerd_nvidia_enabled": True, "containerd_nvidia_default_runtime_enabled": default_nvidia}
    env = dict(os.environ, ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"), ANSIBLE_LOCALHOST_WARNING="0")
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [
            str(bin_dir / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            json.dumps(extra),
            str(playbook),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    root = tomllib.loads((tmp_path / "config.toml").read_text())
    drop_in = tomllib.loads((tmp_path / "nvidia.toml").read_text())
    return root, drop_in, json.loads((tmp_path / "vars.json").read_text())


def merged_like_containerd_1x(root: dict, drop_in: dict) -> dict:
    """containerd < 2.0: an imported file's plugin section replaces the root's whole section of that plugin."""
    return {**root, "plugins": {**root.get("plugins", {}), **drop_in.get("plugins", {})}}


@pytest.mark.parametrize("version", ["1.6.20", "1.7.28"])
def test_containerd_1x_gets_version_2_with_the_cri_plugin_table(tmp_path, version):
    root, drop_in, names = render(tmp_path, version)
    assert names == {
        "config_version": 2,
        "runtime_plugin": "io.containerd.grpc.v1.cri",
        "images_plugin": "io.containerd.grpc.v1.cri",
    }
    assert root["version"] == 2 and drop_in["version"] == 2
    assert root["imports"] == ["/etc/containerd/conf.d/*.toml"]
    cri = root["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10.2"
    assert "nvidia" not in cri["containerd"]["runtimes"]
    # After the 1.x section-replacing merge, runc keeps systemd cgroups and the pause image, and nvidia is there.
    merged = merged_like_containerd_1x(root, drop_in)["plugins"]["io.containerd.grpc.v1.cri"]
    assert merged["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert merged["sandbox_image"] == "registry.k8s.io/pause:3.10.2"
    assert merged["registry"]["config_path"] == "/etc/containerd/certs.d"
    nvidia = merged["containerd"]["runtimes"]["nvidia"]
    assert nvidia["options"] == {"BinaryName": "/usr/bin/nvidia-container-runtime", "SystemdCgroup": True}
    assert merged["containerd"]["default_runtime_name"] == "runc"


def test_containerd_2x_gets_version_3_with_the_moved_cri_tables(tmp_path):
    root, drop_in, names = render(tmp_path, "2.1.4", default_nvidia=True)
    assert names == {
        "config_version": 3,
        "runtime_plugin": "io.containerd.cri.v1.runtime",
        "images_plugin": "io.containerd.cri.v1.images",
    }
    assert root["version"] == 3 and drop_in["version"] == 3
    assert "io.containerd.grpc.v1.cri" not in root["plugins"], "a 1.x table would be ignored by containerd 2.x"
    runtime = root["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]
    assert runtime["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    images = root["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    assert images["snapshotter"] == "overlayfs"
    # The drop-in carries the whole runtime section, so either merge strategy gives the same result.
    merged = merged_like_containerd_1x(root, drop_in)["plugins"]
    assert merged["io.containerd.cri.v1.images"] == images
    runtime = merged["io.containerd.cri.v1.runtime"]["containerd"]
    assert runtime["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert runtime["runtimes"]["nvidia"]["options"]["SystemdCgroup"] is True
    assert runtime["default_runtime_name"] == "nvidia"  # containerd_nvidia_default_runtime_enabled

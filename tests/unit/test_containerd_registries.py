"""Registry mirrors as containerd hosts.toml files (containerd docs/hosts.md), written by the containerd role.

The role's own probe (tasks/preflight.yml's raw shell) and tasks/registries.yml run on this machine against a
temporary config_path, with the role's defaults and vars as a play sees them: the exact file for docker.io and
registry.k8s.io, nothing without a mirror, nothing to do on a second run, and only pyctl's own files removed
when a mirror is taken out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "containerd"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{role}/../versions/defaults/main.yml, {role}/defaults/main.yml, {role}/vars/main.yml]
  tasks:
    - name: Probe the host as the role does
      ansible.builtin.raw: "{{{{ _containerd_probe }}}}"
      args: {{executable: /bin/sh}}
      register: __containerd_state
      changed_when: false
    - name: Decide as the role does
      ansible.builtin.copy:
        dest: {out}/decision.json
        mode: "0644"
        content: >-
          {{{{ {{'files': _containerd_registry_hosts.keys() | list,
                'write': _containerd_registry_hosts.keys() | select('in', _containerd_files_differ) | list,
                'stale': _containerd_registry_hosts_stale,
                'differs': _containerd_differs | bool}} | to_json }}}}
      changed_when: false
    - name: Run the role's registry tasks
      ansible.builtin.include_tasks: {role}/tasks/registries.yml
"""

DOCKER_IO = """\
# pyctl: registry mirror for docker.io (role containerd, from mirrors_registries); rewritten by pyctl.
server = "https://registry-1.docker.io"

[host."https://mirror.example.internal:5000"]
  capabilities = ["pull", "resolve"]
"""

REGISTRY_K8S_IO = """\
# pyctl: registry mirror for registry.k8s.io (role containerd, from mirrors_registries); rewritten by pyctl.
server = "https://registry.k8s.io"

[host."https://harbor.example.internal/v2/k8s"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/pki/mirror-ca.pem"
  override_path = true
"""

MIRRORS = {
    "docker.io": "https://mirror.example.internal:5000/",
    "registry.k8s.io": {
        "url": "https://harbor.example.internal/v2/k8s",
        "ca": "/etc/pki/mirror-ca.pem",
        "override_path": True,
    },
}


def converge(tmp_path: Path, mirrors: dict | None, config_path: str = "") -> tuple[dict, str]:
    """Run the probe and registries.yml once; return the role's decision and ansible-playbook's output."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    if not (out / "templates").exists():
        (out / "templates").symlink_to(ROLE / "templates")  # where the role's template lookups look, beside the play
    playbook = out / "registries.yml"
    playbook.write_text(PLAYBOOK.format(role=ROLE, out=out))
    extra: dict = {"containerd_registry_config_path": config_path or str(tmp_path / "certs.d")}
    if mirrors is not None:
        extra["mirrors_registries"] = mirrors
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
    return json.loads((out / "decision.json").read_text()), result.stdout


def test_each_mirrored_registry_gets_exactly_its_hosts_toml_and_a_rerun_changes_nothing(tmp_path):
    require_root("the role writes hosts.toml owned by root")
    certs = tmp_path / "certs.d"
    decision, _ = converge(tmp_path, MIRRORS)
    assert decision["write"] == [str(certs / "docker.io/hosts.toml"), str(certs / "registry.k8s.io/hosts.toml")]
    assert (certs / "docker.io" / "hosts.toml").read_text() == DOCKER_IO
    assert (certs / "registry.k8s.io" / "hosts.toml").read_text() == REGISTRY_K8S_IO
    assert sorted(p.parent.name for p in certs.glob("*/hosts.toml")) == ["docker.io", "registry.k8s.io"]

    # The same directory written with a trailing slash is the same files: nothing stale, nothing to write.
    again, output = converge(tmp_path, MIRRORS, config_path=f"{certs}/")
    assert again["write"] == [] and again["stale"] == [], again
    assert "changed=0" in output, output


def test_no_mirror_writes_no_file(tmp_path):
    require_root("the role writes hosts.toml owned by root")
    decision, output = converge(tmp_path, None)
    assert decision == {**decision, "files": [], "write": [], "stale": []}
    assert not (tmp_path / "certs.d").exists()
    assert "changed=0" in output


def test_a_mirror_taken_out_removes_only_the_files_pyctl_wrote(tmp_path):
    require_root("the role writes hosts.toml owned by root")
    certs = tmp_path / "certs.d"
    converge(tmp_path, MIRRORS)
    foreign = certs / "quay.io" / "hosts.toml"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('server = "https://quay.io"\n')

    decision, _ = converge(tmp_path, {"docker.io": MIRRORS["docker.io"]})
    assert decision["stale"] == [str(certs / "registry.k8s.io/hosts.toml")]
    assert decision["differs"] is True, "the stale file alone must make the role converge"
    assert not (certs / "registry.k8s.io" / "hosts.toml").exists()
    assert (certs / "docker.io" / "hosts.toml").read_text() == DOCKER_IO
    assert foreign.read_text() == 'server = "https://quay.io"\n'

    decision, _ = converge(tmp_path, {})
    assert not (certs / "docker.io" / "hosts.toml").exists()
    assert foreign.exists()


def test_the_role_refuses_a_bad_mirror_with_what_inventory_check_says():
    import importlib.util

    from ansible.errors import AnsibleFilterError

    spec = importlib.util.spec_from_file_location(
        "containerd_registries", ROLE / "filter_plugins" / "containerd_registries.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hosts = module.FilterModule().filters()["containerd_registry_hosts"]
    assert hosts({}, "/etc/containerd/certs.d") == {}
    assert list(hosts({"ghcr.io": "https://m.example"}, "/etc/containerd/certs.d")) == [
        "/etc/containerd/certs.d/ghcr.io/hosts.toml"
    ]
    with pytest.raises(
        AnsibleFilterError, match=r"mirrors_registries\.docker\.io: 'mirror\.example' is not an http\(s\) URL"
    ):
        hosts({"docker.io": "mirror.example"}, "/etc/containerd/certs.d")

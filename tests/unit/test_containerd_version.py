"""The containerd role refuses, before anything changes, a host whose containerd would be older than the chosen
Kubernetes version supports (Kubernetes 1.35 was the last release for containerd 1.x; versions_kubernetes
containerd_min), names the host and the override, and warns when the override is set. The role's own variables
and version check (tasks/version.yml) run in ansible-playbook on this machine with the host's probe output given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "containerd"
VERSIONS = ROOT / "roles" / "versions"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [{versions}/defaults/main.yml, {role}/defaults/main.yml, {role}/vars/main.yml]
  vars:
    __containerd_state: {{stdout_lines: {lines}}}
  tasks:
    - ansible.builtin.include_tasks: {role}/tasks/version.yml
    - ansible.builtin.debug: {{msg: "target={{{{ _containerd_target_version }}}}"}}
"""


def check(tmp_path: Path, probe: list[str], **extra: object) -> subprocess.CompletedProcess:
    playbook = tmp_path / "version.yml"
    playbook.write_text(PLAYBOOK.format(versions=VERSIONS, role=ROLE, lines=json.dumps(probe)))
    # One line per message (the default result format folds long messages).
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            json.dumps({"containerd_nvidia_enabled": False, **extra}),
            str(playbook),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


DEBIAN_12 = [
    "package containerd ii 1.6.20~ds1-1+deb12u3",
    "version containerd github.com/containerd/containerd 1.6.20~ds1 1",
]


def test_the_default_source_is_a_containerd_the_default_kubernetes_supports():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    table = yaml.safe_load((VERSIONS / "defaults" / "main.yml").read_text())["versions_kubernetes"]
    assert defaults["containerd_source"] == "docker"
    pinned = tuple(int(x) for x in table["1.36"]["containerd_io"].split("-")[0].split("."))
    assert pinned >= tuple(int(x) for x in table["1.36"]["containerd_min"].split("."))


def test_the_distributions_containerd_1x_under_kubernetes_136_is_refused_naming_host_and_override(tmp_path):
    run = check(tmp_path, DEBIAN_12, containerd_source="distribution", kubernetes_version="1.36")
    assert run.returncode != 0, run.stdout
    assert (
        "localhost would run containerd 1.6.20 (the distribution package), older than the 2.0.0 Kubernetes 1.36"
        " needs: set containerd_source: docker (containerd.io 2.3.5-1 from download.docker.com), or set"
        " containerd_unsupported_version_enabled: true to run it anyway." in run.stdout
    ), run.stdout


def test_a_host_without_containerd_is_judged_by_what_apt_would_install(tmp_path):
    probe = ["candidate 1.7.24~ds1-6+deb13u1"]
    run = check(tmp_path, probe, containerd_source="distribution", kubernetes_version="1.36.5")
    assert run.returncode != 0 and "would run containerd 1.7.24" in run.stdout, run.stdout


def test_a_docker_pin_on_containerd_1x_is_refused(tmp_path):
    run = check(tmp_path, [], containerd_docker_version="1.7.28-1")
    assert run.returncode != 0, run.stdout
    assert "set containerd_docker_version to a 2.0.0 or newer release" in run.stdout, run.stdout


def test_the_override_turns_the_refusal_into_a_warning(tmp_path):
    run = check(tmp_path, DEBIAN_12, containerd_source="distribution", containerd_unsupported_version_enabled=True)
    assert run.returncode == 0, run.stdout
    assert "WARNING: localhost runs containerd 1.6.20, older than the 2.0.0 Kubernetes 1.36 supports" in run.stdout


@pytest.mark.parametrize(
    ("probe", "extra"),
    [
        ([], {}),  # the default: containerd.io 2.x from Docker
        (["version containerd containerd.io 2.3.5 0123abc"], {"containerd_source": "distribution"}),
    ],
)
def test_containerd_2x_passes_without_a_warning(tmp_path, probe, extra):
    run = check(tmp_path, probe, **extra)
    assert run.returncode == 0, run.stdout
    assert "WARNING" not in run.stdout and "target=2.3.5" in run.stdout, run.stdout

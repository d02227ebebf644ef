"""containerd's probe decides whether its install, configure and service tasks run at all (a no-op evaluates none).

With containerd_source docker, Docker's repository (key directory, key with the pinned fingerprint, deb822 source file)
and the hold on containerd.io are read by the probe: on a converged host nothing differs; a wrong key, source file or
a missing hold does. The source file the role expects is the one ansible.builtin.deb822_repository writes (its own
field formatting, fields sorted by parameter name). The role's vars are evaluated by ansible-playbook on this machine
against probe lines given here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "containerd"
FINGERPRINT = "734CCD381DBC5576437E58B586A77BA2366D8951"
MIRROR = {"url": "http://10.0.0.1:8080/download.docker.com/linux", "fingerprint": FINGERPRINT}

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: [min]
  vars_files: [{root}/roles/versions/defaults/main.yml, {role}/defaults/main.yml, {role}/vars/main.yml]
  tasks:
    - name: Decide as the role does
      ansible.builtin.copy:
        dest: {out}/decision.json
        mode: "0644"
        content: >-
          {{{{ {{'differs': _containerd_differs | bool, 'repo_ok': _containerd_docker_repo_ok | bool,
                'files': _containerd_files, 'sources': _containerd_docker_sources_text,
                'sources_sha1': _containerd_docker_sources_text | hash('sha1'),
                'facts': [_containerd_deb_arch, ansible_facts.distribution | lower, ansible_facts.distribution_release],
                'dump': _containerd_dump}} | to_json }}}}
"""


def decide(tmp_path: Path, lines: list[str]) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    if not (out / "templates").exists():
        (out / "templates").symlink_to(ROLE / "templates")  # where the role's template lookups look, beside the play
    playbook = out / "decide.yml"
    playbook.write_text(PLAYBOOK.format(root=ROOT, role=ROLE, out=out))
    extra = {
        "mirrors_repositories": {"docker": MIRROR},
        "containerd_docker_version": "2.1.9-1",
        "__containerd_state": {"stdout_lines": lines},
        "ansible_python_interpreter": sys.executable,
    }
    env = dict(os.environ, ANSIBLE_FILTER_PLUGINS=str(ROLE / "filter_plugins"), ANSIBLE_LOCALHOST_WARNING="0")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
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
    return json.loads((out / "decision.json").read_text())


def converged(tmp_path: Path) -> list[str]:
    version = "version containerd github.com/containerd/containerd/v2 2.1.9+unknown"
    first = decide(tmp_path, [version])  # (the config file follows the installed version)
    assert first["differs"] and not first["repo_ok"]
    return [
        "package ca-certificates ii  20250419",
        "package containerd.io hi  2.1.9-1",
        "package gnupg ii  2.2.40-1.1",
        "package python3-debian ii  0.1.49",
        version,
        "service active enabled",
        "drop-in-dir",
        "keyrings-dir 755 root root",
        "docker-key 644 root root",
        f"docker-key-fpr {FINGERPRINT}",
        *(f"file {path} {want}" for path, want in first["files"].items()),
        f"file /etc/apt/sources.list.d/docker.sources {first['sources_sha1']} 644 root root",
        "config-dump",
        "version = 3",
        "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
        "  sandbox = 'registry.k8s.io/pause:3.10.2'",
    ]


def test_a_converged_host_differs_in_nothing_and_its_dump_comes_from_the_probe(tmp_path):
    lines = converged(tmp_path)
    decision = decide(tmp_path, lines)
    assert decision["repo_ok"] and not decision["differs"], decision
    assert decision["dump"]["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].startswith(
        "registry.k8s.io/pause:"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda line: line.replace(FINGERPRINT, "0" * 40),  # another key
        lambda line: line.replace("docker.sources", "docker.sources.old"),  # no source file
        lambda line: line.replace("containerd.io hi", "containerd.io ii"),  # not held
        lambda line: line.replace("keyrings-dir 755", "keyrings-dir 700"),
    ],
    ids=["other-key", "no-source-file", "not-held", "key-dir-mode"],
)
def test_a_host_whose_docker_repository_or_hold_differs_runs_the_install_tasks(tmp_path, change):
    lines = [change(line) for line in converged(tmp_path)]
    assert decide(tmp_path, lines)["differs"]


def test_the_expected_source_file_is_what_deb822_repository_writes(tmp_path):
    from ansible.modules import deb822_repository as module

    decision = decide(tmp_path, [])
    arch, distribution, release = decision["facts"]
    params = {
        "architectures": [arch],
        "components": ["stable"],
        "name": "docker",
        "signed_by": "/etc/apt/keyrings/docker.asc",
        "suites": [release],
        "types": ["deb"],  # the module's default
        "uris": [f"{MIRROR['url']}/{distribution}"],
    }
    written = "".join(
        f"{module.format_field_name(key)}: {module.format_list(value) if isinstance(value, list) else value}\n"
        for key, value in sorted(params.items())
    )
    assert decision["sources"] == written

"""Secrets never reach disk or screen: a real run through ansible-runner, then grep everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = [
    "abcdef.0123456789abcdef",  # kubeadm bootstrap token shape
    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",  # part of the fake certificate key
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDfakefakefake",  # PEM body
    "hunter2fake",  # password in a URL
]


def files_with(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


@pytest.fixture
def project(tmp_path):
    """A copy of pyctl's project whose only phase plays the secrets fixture."""
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "ansible.cfg").symlink_to(ROOT / "ansible.cfg")
    (project / "roles").symlink_to(ROOT / "roles")
    (project / "playbooks" / "secrets.yml").write_text(
        (ROOT / "tests" / "fixtures" / "playbooks" / "secrets.yml").read_text()
    )
    (project / "playbooks" / "site.yml").write_text(
        "---\n- name: Secrets\n  ansible.builtin.import_playbook: secrets.yml\n"
    )
    return project


def test_no_secret_under_the_run_directory_or_in_output(tmp_path, project):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"[control_plane]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    state = tmp_path / "state"
    env = dict(os.environ, PYCTL_STATE_DIR=str(state), PYCTL_PROJECT_DIR=str(project))
    result = subprocess.run(
        [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "<redacted>" in output, "the careless tasks' output must be shown, scrubbed"
    assert [s for s in SECRETS if s in output] == []
    runs = list((state / "runs").iterdir())
    assert len(runs) == 1
    assert files_with(runs[0], SECRETS) == []
    events = list(runs[0].glob("artifacts/*/job_events/*.json"))
    assert len(events) > 10, "the run must have written its events"
    assert "<redacted>" in (runs[0] / "pyctl.log").read_text()


def test_old_runs_are_deleted_during_the_next_run(tmp_path, project):
    """With PYCTL_KEEP_RUNS=1 a second run retires the first (renamed at once) and deletes it while
    ansible-playbook runs: afterwards one run directory is left and nothing retired."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"[control_plane]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    state = tmp_path / "state"
    env = dict(os.environ, PYCTL_STATE_DIR=str(state), PYCTL_PROJECT_DIR=str(project), PYCTL_KEEP_RUNS="1")
    names = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory)], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stdout + result.stderr
        names.append(sorted(p.name for p in (state / "runs").iterdir()))
    assert len(names[0]) == 1 and names[1] != names[0]
    assert len(names[1]) == 1 and not names[1][0].startswith("."), names[1]


def test_the_display_callback_scrubs_partial_event_files_in_the_ansible_process(tmp_path):
    """ansible-runner's callback writes partial event files before pyctl sees the event; ours scrubs them."""
    import ansible_runner.display_callback

    upstream = Path(ansible_runner.display_callback.__file__).parent / "callback"
    ours = ROOT / "pyctl" / "ansible_plugins" / "callback"
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"[all]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbook = ROOT / "tests" / "fixtures" / "playbooks" / "secrets.yml"
    counts = {}
    for name, path in (("upstream", str(upstream)), ("pyctl", f"{ours}:{upstream}")):
        data_dir = tmp_path / name
        data_dir.mkdir()
        env = dict(
            os.environ,
            AWX_ISOLATED_DATA_DIR=str(data_dir),
            ANSIBLE_CALLBACK_PLUGINS=path,
            ANSIBLE_STDOUT_CALLBACK="awx_display",
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        )
        ansible = Path(sys.executable).parent / "ansible-playbook"
        subprocess.run(
            [str(ansible), "-i", str(inventory), str(playbook)],
            env=env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        partials = list((data_dir / "job_events").glob("*-partial.json"))
        assert len(partials) > 10
        counts[name] = len(files_with(data_dir, SECRETS))
    assert counts["upstream"] > 0, "the fixture must really leak through the unwrapped callback"
    assert counts["pyctl"] == 0

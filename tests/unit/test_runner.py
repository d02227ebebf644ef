"""The runner wrapper's arguments, run directories and environment, without running Ansible."""

from __future__ import annotations

import os

from pyctl import runner
from pyctl.config import load_settings


def test_forks_follow_the_host_count_past_50_up_to_200():
    assert [runner.forks_for(n) for n in (0, 1, 7, 50, 51, 100, 400)] == [1, 1, 7, 50, 51, 100, 200]


def test_run_dirs_are_private_named_by_time_and_verb_and_pruned(state_dir, monkeypatch):
    monkeypatch.setenv("PYCTL_KEEP_RUNS", "3")
    settings = load_settings()
    made = [runner.new_run_dir(settings, "bootstrap") for _ in range(5)]
    listed = sorted(p.name for p in settings.runs_dir.iterdir())
    # the two oldest are retired at once (renamed), and deleted later, while ansible-playbook runs
    assert listed == sorted([*(f".retired-{p.name}" for p in made[:2]), *(p.name for p in made[-3:])])
    runner.remove_retired(settings.runs_dir)
    left = sorted(p.name for p in settings.runs_dir.iterdir())
    assert left == sorted(p.name for p in made[-3:])
    assert all(name.endswith("Z-bootstrap") for name in left)
    assert oct(made[-1].stat().st_mode & 0o777) == "0o700"


def test_prune_leaves_foreign_directories_alone(tmp_path):
    (tmp_path / "notes").mkdir()
    for stamp in ("20260101T000000Z-a", "20260102T000000Z-b"):
        (tmp_path / stamp).mkdir()
    runner.retire_runs(tmp_path, keep=1)
    runner.remove_retired(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260102T000000Z-b", "notes"]


def test_environment_is_allowlisted_and_secret_free(state_dir):
    settings = load_settings()
    user = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "abc",
        "GITHUB_TOKEN": "ghp_x",
        "MY_RANDOM": "1",
        "ANSIBLE_VAULT_PASSWORD_FILE": "/x",
        "https_proxy": "http://bob:hunter2@proxy:3128",
        "LANG": "C.UTF-8",
    }
    runner_env = dict(user, AWX_ISOLATED_DATA_DIR="/tmp/a", ANSIBLE_STDOUT_CALLBACK="awx_display")
    env = runner.runner_environment(settings, runner_env, user_env=user)
    for gone in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "MY_RANDOM", "ANSIBLE_VAULT_PASSWORD_FILE", "https_proxy"):
        assert gone not in env
    assert env["AWX_ISOLATED_DATA_DIR"] == "/tmp/a" and env["ANSIBLE_STDOUT_CALLBACK"] == "awx_display"
    assert env["ANSIBLE_PIPELINING"] == "True" and "ControlPersist" in env["ANSIBLE_SSH_ARGS"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_CONFIG"] == str(settings.project_dir / "ansible.cfg")
    assert env["ANSIBLE_CALLBACK_PLUGINS"].split(os.pathsep)[0].endswith("ansible_plugins/callback")
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(os.sys.executable)

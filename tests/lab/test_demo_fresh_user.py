"""The README's main job (scripts/demo) from a machine where the training user does not exist yet, twice.

netns lab hosts share this machine's /etc/passwd and /home, so the ssh_trust role must create the user
(and write its files) once per shared file system: created on both hosts at once, the user got one uid
and its home another, and the first training run died in `mkdir ~/.cache` (Permission denied).

The demo's steps: a 2-host netns lab, `pyctl bootstrap --phases preflight,ssh_trust`, a short DDP run
over SSH as the training user. The user is a fresh name (the machine's own `pyctl` and other tests' use of
it stay untouched), removed with its home before and after.
"""

from __future__ import annotations

import json
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root
from tests.lab.test_bootstrap_lab import bootstrap, recap
from tests.train.conftest import FAST, need_ddp_python, pyctl, record
from tests.train.test_ssh_backend import _python_for_other_users

pytestmark = pytest.mark.lab

CREATE_TASK = "Create the training user without a password"


def _remove_user(name: str) -> None:
    try:
        home = pwd.getpwnam(name).pw_dir
    except KeyError:
        return
    subprocess.run(["userdel", "--force", "--remove", name], check=False, capture_output=True)
    if home.startswith("/home/") and Path(home).exists():
        subprocess.run(["rm", "-rf", "--one-file-system", home], check=True)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)


def read_events(run_dir: Path) -> list[dict]:
    """The events of a finished run, in order (ansible-runner's job_events folder)."""
    folder = run_dir / "artifacts" / "ansible" / "job_events"
    events = [json.loads(p.read_text()) for p in folder.glob("*.json") if not p.name.endswith("-partial.json")]
    return sorted(events, key=lambda e: e.get("counter", 0))


def _task_results(state: Path, task: str) -> dict[str, str]:
    """host -> ok/changed/skipped/failed for `task` in the newest bootstrap run."""
    run = sorted((state / "runs").iterdir())[-1]
    results = {}
    for event in read_events(run):
        data = event.get("event_data", {})
        if data.get("task") != task or not event["event"].startswith("runner_on_"):
            continue
        kind = event["event"].removeprefix("runner_on_")
        if kind == "ok" and data.get("res", {}).get("changed"):
            kind = "changed"
        results[data["host"]] = kind
    return results


def test_the_demo_from_a_machine_without_the_training_user_runs_twice(lab, tmp_path):
    require_root("lab tests need root (network namespaces, useradd)")
    need_ddp_python()
    python, site = _python_for_other_users()
    user = f"pyctl-t{secrets.token_hex(3)}"
    _remove_user(user)
    hosts = lab(nodes=2, kind="netns")
    data = yaml.safe_load(Path(hosts.inventory_path).read_text())
    data["all"]["vars"].update({"ssh_trust_user": user, "train_ssh_user": user})
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(data))
    state = tmp_path / "state"
    try:
        for attempt in (1, 2):
            result = bootstrap(inventory, "--phases", "preflight,ssh_trust", state=state)
            assert result.returncode == 0, f"run {attempt}\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
            created = _task_results(state, CREATE_TASK)
            if attempt == 1:
                # One user database, one useradd: the other host sharing it does not run it (its probe
                # leaves the write tasks out, or they skip).
                assert [kind for kind in created.values() if kind != "skipped"] == ["changed"], created
            else:
                assert all(changed == 0 for _ok, changed, *_ in recap(result.stdout).values()), result.stdout
            entry = pwd.getpwnam(user)
            home = Path(entry.pw_dir)
            assert home.stat().st_uid == entry.pw_uid, "the home belongs to the user"
            assert (home / ".ssh" / "authorized_keys").stat().st_uid == entry.pw_uid

            train = pyctl(
                state,
                "train", "ddp", "-i", str(inventory), "--backend", "ssh", "--nodes", "2", "--python", python,
                "--env", f"PYTHONPATH={site}", "--epochs", "2", *FAST, "--follow",
            )  # fmt: skip
            assert train.returncode == 0, f"run {attempt}\n{train}"
            assert train.summary["world_size"] == 2
            job_id = next(ln.split()[3] for ln in train.stderr.splitlines() if " started on " in ln)
            assert record(state, job_id)["ssh"]["user"] == user
    finally:
        _remove_user(user)

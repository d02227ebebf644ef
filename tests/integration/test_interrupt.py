"""Ctrl-C during a real run: pyctl cancels ansible-runner, exits 130 and leaves no ansible process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SLOW = """---
- name: Slow | Wait long enough to be interrupted
  hosts: all
  gather_facts: false
  tasks:
    - name: Say that the slow task starts
      ansible.builtin.debug:
        msg: slow task starting
    - name: Sleep on the host
      ansible.builtin.command: sleep 120
      changed_when: false
"""


def ansible_processes(marker: str) -> list[str]:
    result = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if marker in line and "ps -eww" not in line]


def test_sigint_cancels_the_run_and_exits_130(tmp_path):
    project = tmp_path / "project"
    (project / "playbooks").mkdir(parents=True)
    (project / "ansible.cfg").symlink_to(ROOT / "ansible.cfg")
    (project / "roles").symlink_to(ROOT / "roles")
    (project / "playbooks" / "slow.yml").write_text(SLOW)
    (project / "playbooks" / "site.yml").write_text("---\n- name: Slow\n  ansible.builtin.import_playbook: slow.yml\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"[control_plane]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    env = dict(os.environ, PYCTL_STATE_DIR=str(tmp_path / "state"), PYCTL_PROJECT_DIR=str(project))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyctl", "bootstrap", "-i", str(inventory)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ansible_processes(str(project / "playbooks" / "site.yml")):
            time.sleep(0.2)
        # wait until the sleep task is running on the "host"
        while time.monotonic() < deadline and not [p for p in ansible_processes("sleep 120")]:
            time.sleep(0.2)
        assert ansible_processes("sleep 120"), "the slow task never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "bootstrap cancelled" in err and "Traceback" not in err
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        ansible_processes(str(project / "playbooks" / "site.yml")) or ansible_processes("sleep 120")
    ):
        time.sleep(0.5)
    assert ansible_processes(str(project / "playbooks" / "site.yml")) == []
    assert ansible_processes("sleep 120") == [], "the task's process on the host must be stopped too"

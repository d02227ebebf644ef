"""The preflight's GPU task file for real through Ansible (connection local), with the nvidia-smi double first
on PATH: a host whose driver reports branch 570 / CUDA 12.8 is refused with what to do, one with 580 / 13.0
passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOUBLE = ROOT / "tests" / "doubles" / "fake_nvidia_smi"
PLAY = f"""\
- name: Preflight | GPU driver check against the nvidia-smi double
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    gpu: true
    preflight_gpu_cuda_version: "13.0"
  tasks:
    - name: Load the role's internals
      ansible.builtin.include_vars: {ROOT}/roles/preflight/vars/main.yml
    - name: Run the GPU checks
      ansible.builtin.import_tasks: {ROOT}/roles/preflight/tasks/gpu.yml
"""


def run_play(tmp_path: Path, driver: str, cuda_version: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "nvidia-smi"
    wrapper.write_text(
        f'#!/bin/sh\nFAKE_DRIVER_VERSION={driver} FAKE_CUDA_VERSION={cuda_version} exec sh {DOUBLE} "$@"\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "play.yml").write_text(PLAY)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_FILTER_PLUGINS=str(ROOT / "pyctl" / "ansible_plugins" / "filter"),
    )
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_a_gpu_host_with_driver_570_is_refused_and_580_passes(tmp_path):
    old = run_play(tmp_path / "570", "570.195.03", "12.8")
    assert old.returncode == 2, old.stdout + old.stderr
    text = " ".join(old.stdout.split())
    assert (
        "localhost has NVIDIA driver 570.195.03 (CUDA 12.8), but the payload image's torch 2.13.0 is a CUDA 13.0"
        in (text.replace("''", "'"))
    ), old.stdout
    new = run_play(tmp_path / "580", "580.95.05", "13.0")
    assert new.returncode == 0, new.stdout + new.stderr
    assert "failed=0" in new.stdout and "skipped=1" in new.stdout

"""DistDGL payload: launch.py on two namespace "machines" (success, misconfigurations, cancel, crash).

Every launcher here runs as its own machine (network + mount + IPC + UTS namespace with a private
/dev/shm, see distdgl_fixtures.NetnsMachines). The misconfiguration tests assert the 60 s bound the
launcher promises: they measure behaviour (a hang would take DGL ~51 minutes), not speed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("distdgl_fixtures")
from distdgl_fixtures import PAYLOAD, launcher_argv, parse_summary  # noqa: E402 (after register_assert_rewrite)

pytest_plugins = ["distdgl_fixtures"]  # the distdgl_* fixtures

pytestmark = pytest.mark.lab
DGL_PORT = 30050
FAIL_BOUND_S = 60


def start(lab, python, config, tmp_path, extra=None, ips=None, indices=(0, 1), train_args=None):
    """Start launch.py on the given machines; returns {index: (Popen, log path)}."""
    jobs = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in indices:
        log = tmp_path / f"m{i}.log"
        argv = launcher_argv(
            python,
            (ips or {}).get(i, lab.ips),
            i,
            config,
            "--run-dir",
            str(tmp_path / f"run{i}"),
            *((extra or {}).get(i, [])),
            train_args=train_args,
        )
        jobs[i] = (lab.start(i, argv, log), log)
    return jobs


def wait(jobs, timeout):
    """Wait for every launcher; returns ({index: exit code}, {index: seconds}, {index: log text})."""
    started = time.monotonic()
    codes, seconds = {}, {}
    for i, (proc, _) in jobs.items():
        try:
            codes[i] = proc.wait(timeout=max(1, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            codes[i] = None
        seconds[i] = time.monotonic() - started
    logs = {i: log.read_text() for i, (_, log) in jobs.items()}
    return codes, seconds, logs


def assert_nothing_left(lab, within: float = 10):
    for i in range(lab.count):
        deadline = time.monotonic() + within
        while lab.pids(i) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in lab.pids(i)}
        assert not left, f"processes left on machine {i}: {left}"
        assert not lab.listening(i, DGL_PORT), f"port {DGL_PORT} still held on machine {i}"


def test_two_machines_match_single_process(distdgl_python, netns_machines, two_part_config, local_summary, tmp_path):
    lab = netns_machines
    jobs = start(lab, distdgl_python, two_part_config, tmp_path)
    codes, seconds, logs = wait(jobs, timeout=300)
    assert codes == {0: 0, 1: 0}, {i: log[-4000:] for i, log in logs.items()}
    summary = parse_summary(logs[0])
    assert summary is not None and parse_summary(logs[1]) is None  # global rank 0 reports
    assert summary["mode"] == "dist" and summary["world_size"] == 2
    assert summary["num_train"] == local_summary["num_train"]
    assert summary["num_test"] == local_summary["num_test"]
    print(
        f"\nDistDGL test accuracy: single process {local_summary['test_acc']:.4f}, "
        f"2 machines {summary['test_acc']:.4f} (job {max(seconds.values()):.1f} s)"
    )
    assert abs(summary["test_acc"] - local_summary["test_acc"]) <= 0.02
    for i, log in logs.items():
        assert f"[server {i}] " in log and f"[trainer {i}] " in log
        assert f"m{i} machine {i}: barrier: all servers listen" in log
    assert_nothing_left(lab)


def test_wrong_client_count_fails_fast(distdgl_python, netns_machines, two_part_config, tmp_path):
    """Machine 1 is told 2 trainers, machine 0 one: DGL would wait for clients for ~51 minutes."""
    lab = netns_machines
    jobs = start(lab, distdgl_python, two_part_config, tmp_path, extra={1: ["--num-trainers", "2"]})
    codes, seconds, logs = wait(jobs, timeout=FAIL_BOUND_S + 30)
    assert codes == {0: 3, 1: 3}, logs
    assert max(seconds.values()) < FAIL_BOUND_S
    assert "wrong client count: machine 0 computes DGL_NUM_CLIENT=2" in logs[0]
    assert "machine 1 computes 4" in logs[1]  # machine 0's verdict names the cause on machine 1 too
    assert_nothing_left(lab)


def test_own_ip_missing_fails_fast(distdgl_python, netns_machines, two_part_config, tmp_path):
    """Machine 1's list names an address it does not have; upstream DGL would run it as machine 0."""
    lab = netns_machines
    wrong = [lab.ips[0], "10.231.0.99"]
    jobs = start(lab, distdgl_python, two_part_config, tmp_path, ips={1: wrong})
    codes, seconds, logs = wait(jobs, timeout=FAIL_BOUND_S + 30)
    assert codes == {0: 3, 1: 2}, logs
    assert max(seconds.values()) < FAIL_BOUND_S
    assert "own IP missing: machine 1 is 10.231.0.99" in logs[1]
    assert "machine 1 (m1) failed its local checks: own IP missing" in logs[0]
    assert_nothing_left(lab)


def test_num_parts_not_matching_machines_fails_fast(distdgl_python, netns_machines, two_part_config, tmp_path):
    lab = netns_machines
    three = [*lab.ips, "10.231.0.3"]
    jobs = start(lab, distdgl_python, two_part_config, tmp_path, ips={0: three, 1: three})
    codes, seconds, logs = wait(jobs, timeout=FAIL_BOUND_S + 30)
    assert codes == {0: 2, 1: 2}, logs
    assert max(seconds.values()) < FAIL_BOUND_S
    for log in logs.values():
        assert "num_parts mismatch: synthetic.json has 2 partition(s) but 3 machine(s) were given" in log
    assert_nothing_left(lab)


def test_unreachable_peer_fails_naming_it(distdgl_python, netns_machines, two_part_config, tmp_path):
    lab = netns_machines
    timeout = ["--peer-timeout", "5"]
    alone0 = start(lab, distdgl_python, two_part_config, tmp_path / "a", extra={0: timeout}, indices=(0,))
    codes, seconds, logs = wait(alone0, timeout=FAIL_BOUND_S)
    assert codes == {0: 3} and seconds[0] < FAIL_BOUND_S
    assert "unreachable peer: machine 1 (10.231.0.2) did not reach this launcher" in logs[0]
    alone1 = start(lab, distdgl_python, two_part_config, tmp_path / "b", extra={1: timeout}, indices=(1,))
    codes, seconds, logs = wait(alone1, timeout=FAIL_BOUND_S)
    assert codes == {1: 3} and seconds[1] < FAIL_BOUND_S
    assert "unreachable peer: cannot reach machine 0 (10.231.0.1:30049)" in logs[1]
    assert_nothing_left(lab)


def test_host_names_are_rejected(distdgl_python, two_part_config, tmp_path):
    argv = launcher_argv(distdgl_python, ["node-a", "10.231.0.2"], 0, two_part_config)
    result = subprocess.run(argv, cwd=PAYLOAD, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "machine 0: 'node-a' is not a literal IPv4 address" in result.stdout


def _wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s:\n{path.read_text()[-3000:]}")


LONG_TRAINING = ["--epochs", "100000", "--eval-every", "0"]


def test_sigterm_to_one_launcher_stops_the_whole_job(distdgl_python, netns_machines, two_part_config, tmp_path):
    """With a sampler process per trainer too: DGL forks those, and they must go as well."""
    lab = netns_machines
    samplers = ["--num-samplers", "1"]
    jobs = start(
        lab,
        distdgl_python,
        two_part_config,
        tmp_path,
        extra={0: samplers, 1: samplers},
        train_args=LONG_TRAINING,
    )
    proc1, _ = jobs[1]
    _wait_for(jobs[0][1], '"event": "epoch"', timeout=180)  # both machines are training
    # The Popen pid is the launcher itself (ip netns exec, unshare and sh all exec).
    assert b"launch.py" in Path(f"/proc/{proc1.pid}/cmdline").read_bytes()
    sent = time.monotonic()
    os.kill(proc1.pid, signal.SIGTERM)
    codes, _, logs = wait(jobs, timeout=FAIL_BOUND_S)
    elapsed = time.monotonic() - sent
    assert codes[1] == 128 + signal.SIGTERM, logs[1][-3000:]
    assert codes[0] in (1, 4), logs[0][-3000:]  # the peer's abort, or its trainer losing the peer first
    assert elapsed < FAIL_BOUND_S
    assert "received SIGTERM: stopping the job" in logs[1]
    assert "DGL_NUM_CLIENT=4" in logs[0]  # 1 trainer x (1 + 1 sampler) x 2 machines
    assert_nothing_left(lab)


def test_trainer_crash_stops_the_whole_job(distdgl_python, netns_machines, two_part_config, tmp_path):
    lab = netns_machines
    jobs = start(lab, distdgl_python, two_part_config, tmp_path, train_args=LONG_TRAINING)
    _wait_for(jobs[0][1], '"event": "epoch"', timeout=180)
    workers = []
    for pid in lab.pids(1):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"DGL_ROLE=client" in env and b"torch.distributed.run" not in cmdline and b"train.py" in cmdline:
            workers.append(pid)
    assert workers, "no trainer worker found on machine 1"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    codes, _, logs = wait(jobs, timeout=FAIL_BOUND_S + 30)
    assert codes[1] == 1, logs[1][-3000:]
    assert codes[0] in (1, 4), logs[0][-3000:]
    assert "trainers (torchrun) exited with code" in logs[1]
    assert_nothing_left(lab)


def test_killed_launcher_leaves_no_orphans(distdgl_python, netns_machines, two_part_config, tmp_path):
    """SIGKILL gives the launcher no chance to clean up: its children get SIGTERM from the kernel
    (parent-death signal) and the other machine sees the control connection drop."""
    lab = netns_machines
    jobs = start(lab, distdgl_python, two_part_config, tmp_path, train_args=LONG_TRAINING)
    _wait_for(jobs[0][1], '"event": "epoch"', timeout=180)
    os.kill(jobs[1][0].pid, signal.SIGKILL)
    codes, _, logs = wait(jobs, timeout=FAIL_BOUND_S)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] in (1, 4), logs[0][-3000:]
    # Nobody is left to escalate on machine 1: torchrun got SIGTERM from the kernel and takes up to its own
    # 30 s SIGTERM-to-SIGKILL window to stop its trainer before it exits.
    assert_nothing_left(lab, within=60)

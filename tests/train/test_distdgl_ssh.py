"""`pyctl train distdgl --backend ssh` for real, on 2 netns lab hosts (own address, sshd and /dev/shm).

Each job runs the CLI as its own process: the preflight, the detached supervisor, hostwrap on each host,
the start-up step (partition on machine 0 into the shared folder, then launch.py) are the real thing.
The session partitions the test graph once (the first job); later jobs hit partition.py's cache.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

pytest.register_assert_rewrite("tests.train.distdgl_support", "distdgl_fixtures")
from tests.train.conftest import pyctl, record, wait_for  # noqa: E402
from tests.train.distdgl_support import FAIL_BOUND_S, GRAPH, LONG_TRAINING, TRAIN, job_id_of, summary_of  # noqa: E402

pytest_plugins = ["tests.train.distdgl_support", "distdgl_fixtures"]
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("no_job_left")]


def test_two_hosts_match_single_process_dgl(distdgl_lab, local_summary):
    """Partition (once, on machine 0, into the shared folder), then 2 machines train through the CLI:
    the test accuracy is within 2 points of single-process GraphSAGE on the same graph, split and flags."""
    run = distdgl_lab.distdgl(*GRAPH, *TRAIN, "--check-env", "--follow")
    assert run.returncode == 0, str(run)
    summary = summary_of(run)
    print(
        f"\nDistDGL test accuracy: single process {local_summary['test_acc']:.4f}, "
        f"2 machines through pyctl {summary['test_acc']:.4f}"
    )
    assert summary["mode"] == "dist" and summary["world_size"] == 2
    assert summary["num_train"] == local_summary["num_train"] and summary["num_test"] == local_summary["num_test"]
    assert abs(summary["test_acc"] - local_summary["test_acc"]) <= 0.02, (summary, local_summary)
    out = run.stdout
    assert "dgl on each host: node1=2.1.0, node2=2.1.0" in run.stderr
    # Machine 0 partitioned into the share (or found the session's cached partition); machine 1 waited.
    assert "[node1] [startup] " in out and "machine 0: partition " in out
    assert "[node2] [startup] " in out and "machine 1: machine 0's partition is ready after" in out
    # ip_config from the inventory addresses, machine 0 first; every machine its own server.
    addresses = [a for _, a in distdgl_lab.hosts]
    assert f"wrote {distdgl_lab.share}/pyctl/jobs/" in out and f": {', '.join(addresses)} port 30050" in out
    assert "[node1] [server 0] " in out and "[node2] [server 1] " in out
    job = record(distdgl_lab.state_dir, job_id_of(run))
    assert job["workload"] == "distdgl" and job["state"] == "succeeded" and job["summary"]["test_acc"]
    partition = json.loads((distdgl_lab.share / "pyctl" / "jobs" / job["id"] / "partition.json").read_text())
    assert partition["num_parts"] == 2 and partition["part_config"].startswith(f"{distdgl_lab.share}/pyctl/partitions/")
    ip_config = distdgl_lab.share / "pyctl" / "jobs" / job["id"] / "machine-1" / "ip_config.txt"
    assert ip_config.read_text() == "".join(f"{a} 30050\n" for a in addresses)
    status = pyctl(distdgl_lab.state_dir, "train", "status", job["id"], check_rc=0)
    assert "(distdgl, ssh)" in status.stdout
    distdgl_lab.assert_nothing_left()


USER_TRAINER = Path(__file__).with_name("distdgl_user_trainer.py")


def test_users_own_trainer_runs_under_launch_pys_contract(distdgl_lab):
    """--script: a trainer written only from DGL's documented API (it imports nothing of pyctl) gets
    DGL_IP_CONFIG, DGL_CONF_PATH and the DGL_* counts on both machines, servers and trainers alike, on
    pyctl's partition; its arguments after '--' reach it; node_split covers every train node once."""
    run = distdgl_lab.distdgl(*GRAPH, "--script", str(USER_TRAINER), "--follow", "--", "--tag", "mine", "--fanout", "3")
    assert run.returncode == 0, str(run)
    summary = summary_of(run)
    assert summary["world_size"] == 2 and summary["tag"] == "mine"
    assert summary["role"] == "client" and summary["num_client"] == "2"
    assert summary["seeds"] == summary["train_nodes"] > 0, summary
    assert "[node1] [server 0] " in run.stdout and "[node2] [server 1] " in run.stdout
    assert "user_distdgl_user_trainer.py --tag mine --fanout 3" in run.stdout
    job = record(distdgl_lab.state_dir, job_id_of(run))
    assert job["state"] == "succeeded" and job["options"]["script"] == str(USER_TRAINER)
    distdgl_lab.assert_nothing_left()


def _inventory_with(distdgl_lab, tmp_path: Path, host: str, **hvars) -> str:
    data = yaml.safe_load(Path(distdgl_lab.inventory).read_text())
    data["all"]["hosts"][host].update(hvars)
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_own_ip_missing_fails_fast_naming_it(distdgl_lab, tmp_path):
    """node2's cluster address (train_address) is one it does not have: upstream DGL would run it as
    another machine and hang; the start-up step refuses, and the job stops everywhere."""
    inventory = _inventory_with(distdgl_lab, tmp_path, "node2", train_address="10.254.254.254")
    started = time.monotonic()
    run = distdgl_lab.distdgl(*GRAPH, "--epochs", "2", "--follow", inventory=inventory, timeout=FAIL_BOUND_S + 60)
    elapsed = time.monotonic() - started
    assert run.returncode == 2, str(run)
    assert elapsed < FAIL_BOUND_S, f"{elapsed:.1f} s\n{run}"
    assert "host node2 failed with exit code 2 (machine 1 (node2): own IP missing: machine 1 is 10.254.254.254" in (
        run.stderr
    ), str(run)
    distdgl_lab.assert_nothing_left()


def test_missing_graph_file_is_exit_2_before_anything_starts(distdgl_lab):
    jobs_before = set((distdgl_lab.state_dir / "jobs").glob("*"))
    run = distdgl_lab.distdgl("--graph-path", "/nonexistent/graph.bin", timeout=120)
    assert run.returncode == 2, str(run)
    lines = run.stderr.strip().splitlines()
    assert lines[0] == (
        "pyctl: error: --graph-path /nonexistent/graph.bin: no such file on node1 (machine 0, which partitions)"
    ), str(run)
    assert set((distdgl_lab.state_dir / "jobs").glob("*")) == jobs_before, "nothing was recorded or started"


def _start_detached(distdgl_lab, until: str, count: int = 1) -> str:
    """Start a long job without --follow; return once `until` is in its log `count` times."""
    run = distdgl_lab.distdgl(*GRAPH, *LONG_TRAINING)
    assert run.returncode == 0, str(run)
    job_id = run.stdout.strip().splitlines()[-1]
    log = distdgl_lab.state_dir / "jobs" / job_id / "output.log"
    wait_for(lambda: log.read_text().count(until) >= count, 240, f"{until!r} in the job's log")
    return job_id


def test_cancel_stops_every_process_group_on_every_host(distdgl_lab):
    """Cancelled once both machines' servers listen and both have started their trainers."""
    job_id = _start_detached(distdgl_lab, "started 1 trainer(s) via torchrun", count=2)
    running = distdgl_lab.leftovers()
    assert sum("port 30050 still listening" in line for line in running) == 2, "servers are up on both hosts"
    assert sum("distdgl_startup.py" in line for line in running) == 2
    cancel = pyctl(distdgl_lab.state_dir, "train", "cancel", job_id, check_rc=0)
    assert "cancelled" in cancel.stderr
    job = record(distdgl_lab.state_dir, job_id)
    assert job["state"] == "cancelled" and job["exit_code"] == 130
    distdgl_lab.assert_nothing_left(timeout=10)


def test_a_crashed_trainer_fails_the_job_and_stops_every_host(distdgl_lab):
    job_id = _start_detached(distdgl_lab, '"event": "epoch"')  # both machines are training
    node2 = next(h for h in distdgl_lab.lab.hosts if h.name == "node2")
    inode = os.stat(f"/run/netns/{node2.namespace}").st_ino
    workers = []
    for entry in os.listdir("/proc"):
        try:
            if int(os.readlink(f"/proc/{entry}/ns/net").split("[")[1][:-1]) != inode:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"DGL_ROLE=client" in environ and b"torch.distributed.run" not in cmdline and b"train.py" in cmdline:
            workers.append(int(entry))
    assert workers, "no trainer worker found on node2"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    done = wait_for(
        lambda: (rec := record(distdgl_lab.state_dir, job_id))["state"] != "running" and rec,
        FAIL_BOUND_S + 30,
        "the job to end",
    )
    assert done["state"] == "failed" and done["exit_code"] != 0, done
    assert done["message"].startswith("host node"), done["message"]
    # One owner stops the job: the supervisor. The failing launcher told no other machine (it runs
    # with PYCTL_SUPERVISED=1), so no launcher stopped itself for another's failure (exit code 4).
    output = (distdgl_lab.state_dir / "jobs" / job_id / "output.log").read_text()
    assert "the supervisor stops the other machines" in output, output[-3000:]
    assert "another machine failed" not in output, output[-3000:]
    assert 4 not in [node["exit_code"] for node in done["nodes"]], done["nodes"]
    distdgl_lab.assert_nothing_left(timeout=30)

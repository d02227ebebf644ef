"""`pyctl train ddp --backend ssh` for real: netns lab hosts with their own address and sshd.

Every job runs the CLI as its own process, so the detached supervisor, the per-host process groups,
Ctrl-C and `cancel` from another process are the real thing.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.train.conftest import DDP_PYTHON, FAST, cli_env, payload_processes, pyctl, record, wait_for

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _cancel_leftover_jobs(train_lab):
    """A failed test must not leave its job running into the next one (same hosts, same port)."""
    yield
    jobs = train_lab.state_dir / "jobs"
    for path in jobs.glob("*/job.json") if jobs.is_dir() else []:
        if json.loads(path.read_text())["state"] not in ("succeeded", "failed", "cancelled"):
            pyctl(train_lab.state_dir, "train", "cancel", path.parent.name, timeout=180)


def _job_id(run) -> str:
    return run.stdout.strip().splitlines()[-1]


def _no_payload_left(train_lab, timeout: float = 30) -> None:
    wait_for(lambda: not payload_processes(train_lab.namespaces), timeout, "payload processes to end")
    assert payload_processes(train_lab.namespaces) == []


def test_two_processes_on_one_host(train_lab):
    run = train_lab.ddp("--nodes", "1", "--nproc-per-node", "2", "--epochs", "6", *FAST, "--follow")
    assert run.returncode == 0, str(run)
    assert run.summary["world_size"] == 2
    assert run.summary["test_accuracy"] >= 0.90, str(run)
    assert all(ln.startswith("[node1] ") for ln in run.stdout.splitlines()), "every line is prefixed by its host"
    # status and logs work from another shell, from the job record alone.
    status = pyctl(train_lab.state_dir, "train", "status", "last", "--json", check_rc=0)
    data = json.loads(status.stdout)
    assert data["state"] == "succeeded" and data["exit_code"] == 0
    assert data["summary"]["test_accuracy"] == run.summary["test_accuracy"]
    logs = pyctl(train_lab.state_dir, "train", "logs", data["id"], check_rc=0)
    assert "PYCTL_SUMMARY" in logs.stdout
    _no_payload_left(train_lab)


@pytest.fixture
def training_user(train_lab):
    """The ssh_trust role's result, made by hand: user `pyctl` (created on this machine if missing: netns
    hosts share its users) with the cluster's key in ~/.ssh/authorized_keys, the key under
    <state>/clusters/<cluster>/ssh/. The key is removed again afterwards."""
    try:
        pwd.getpwnam("pyctl")
    except KeyError:
        # Password '*' like the role: no password login, and not a '!' lock that sshd refuses.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", "pyctl"], check=True)
    user = pwd.getpwnam("pyctl")
    key_dir = train_lab.state_dir / "clusters" / "node1" / "ssh"
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = key_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pyctl-train-test", "-f", str(key)], check=True
        )
    public = (key_dir / "id_ed25519.pub").read_text()
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    before = authorized.read_text() if authorized.exists() else None
    authorized.write_text((before or "") + public)
    for path in (ssh_dir, authorized):
        os.chown(path, user.pw_uid, user.pw_gid)
    authorized.chmod(0o600)
    try:
        yield "pyctl"
    finally:
        if before is None:
            authorized.unlink()
        else:
            authorized.write_text(before)


def _python_for_other_users() -> tuple[str, str]:
    """An interpreter the training user can run, with the DDP environment's packages.

    .venv-ddp may be built on an interpreter under /root (pyenv here), which another user cannot run;
    the system python3 of the same minor version can load the same packages through PYTHONPATH."""
    site = next((DDP_PYTHON.parent.parent / "lib").glob("python3.*/site-packages"))
    system = Path("/usr/bin/python3")
    minor = subprocess.run(
        [str(system), "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not system.is_file() or minor != site.parent.name:
        pytest.skip(f"no system interpreter matching {site.parent.name} for the training user")
    return str(system), str(site)


def test_two_hosts_as_the_training_user(train_lab, training_user):
    python, site = _python_for_other_users()
    run = pyctl(
        train_lab.state_dir,
        "train", "ddp", "-i", train_lab.inventory, "--backend", "ssh", "--python", python,
        "--env", f"PYTHONPATH={site}", "--check-env", "--epochs", "6", *FAST, "--follow",
    )  # fmt: skip
    assert run.returncode == 0, str(run)
    assert run.summary["world_size"] == 2
    assert run.summary["test_accuracy"] >= 0.90, str(run)
    assert {ln.split("]", 1)[0] + "]" for ln in run.stdout.splitlines()} == {"[node1]", "[node2]"}
    assert "torch on each host: node1=2." in run.stderr
    job = record(train_lab.state_dir, _job_id_from(run.stderr))
    assert job["ssh"]["user"] == "pyctl"
    # Only paths: no key material in the record.
    assert "PRIVATE KEY" not in json.dumps(job)
    _no_payload_left(train_lab)


def _job_id_from(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("pyctl train: job ") and " started on " in line:
            return line.split()[3]
    raise AssertionError(stderr)


WATCHER = textwrap.dedent(
    """
    import os, sys, time, torch
    path, stop = sys.argv[1], sys.argv[2]
    seen, bad, last = 0, [], None
    while not os.path.exists(stop):
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            time.sleep(0.05); continue
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key != last:
            try:
                epoch = torch.load(path, weights_only=True)["epoch"]
                seen += 1; last = key
            except Exception as exc:
                bad.append(repr(exc)); last = key
        time.sleep(0.02)
    print(seen, len(bad), bad[:3])
    """
)


def test_killed_worker_restarts_and_resumes_from_the_checkpoint(train_lab, tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    stop = tmp_path / "stop"
    watcher = subprocess.Popen(
        [str(DDP_PYTHON), "-c", WATCHER, str(checkpoint_dir / "checkpoint.pt"), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        run = train_lab.ddp(
            "--epochs", "5", *FAST, "--max-restarts", "1", "--env", "PYCTL_DDP_FAIL_AT=3:2:1",
            "--checkpoint-dir", str(checkpoint_dir), "--follow",
        )  # fmt: skip
    finally:
        stop.touch()
        seen, bad, sample = watcher.communicate(timeout=120)[0].split(" ", 2)
    assert run.returncode == 0, str(run)
    assert "PYCTL_DDP_FAIL_AT" in run.stdout and "restart_count=1" in run.stdout, "the fault fired, torchrun restarted"
    assert run.summary["resumed_from_epoch"] == 2, str(run)
    assert run.summary["epochs"] == 5 and run.summary["test_accuracy"] >= 0.90
    assert int(bad) == 0, f"a reader saw a partial checkpoint: {sample}"
    assert int(seen) >= 1
    check = subprocess.run(
        [str(DDP_PYTHON), "-c", f"import torch; print(torch.load({str(checkpoint_dir / 'checkpoint.pt')!r}, weights_only=True)['epoch'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert check.stdout.strip() == "5"
    assert not [p.name for p in checkpoint_dir.iterdir() if ".tmp" in p.name], "no temp file left behind"
    _no_payload_left(train_lab)


ALLREDUCE = textwrap.dedent(
    """
    # A user's own torchrun-ready script (not pyctl's payload): one all_reduce, then a summary line.
    import argparse, json, os, socket
    import torch, torch.distributed as dist
    parser = argparse.ArgumentParser()
    parser.add_argument("--value", type=float, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tensor = torch.tensor([args.value * (rank + 1)])
    dist.all_reduce(tensor)
    print(f"rank {rank}/{world} on {socket.gethostname()} job={os.environ['PYCTL_JOB_ID']}", flush=True)
    if rank == 0:
        print("PYCTL_SUMMARY " + json.dumps({"world_size": world, "sum": tensor.item()}), flush=True)
    dist.destroy_process_group()
    """
)


def test_fetch_copies_the_verified_checkpoint_from_node0(train_lab, tmp_path):
    """`pyctl train fetch` over SFTP from rank 0's host (the checkpoint sits in the job's folder there),
    then the one-line refusals: a damaged checkpoint, none yet, an unreachable host."""
    run = train_lab.ddp("--nodes", "1", "--epochs", "2", *FAST, "--follow")
    assert run.returncode == 0, str(run)
    job_id = _last_job(train_lab)
    fetched = pyctl(train_lab.state_dir, "train", "fetch", job_id, str(tmp_path / "out"), check_rc=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "checkpoint.pt",
        "checkpoint.pt.sha256",
        "train.jsonl",
    ]
    assert "verified" in fetched.stderr
    check = subprocess.run(
        ["sha256sum", "-c", "checkpoint.pt.sha256"], cwd=tmp_path / "out", capture_output=True, check=False
    )
    assert check.returncode == 0, check
    epochs = [json.loads(ln)["epoch"] for ln in (tmp_path / "out" / "train.jsonl").read_text().splitlines()[:-1]]
    assert epochs == [1, 2]

    job = record(train_lab.state_dir, job_id)
    host_dir = Path(job["ssh"]["job_dirs"][job["nodes"][0]["name"]])  # netns hosts share this filesystem
    with (host_dir / "checkpoint.pt").open("r+b") as stream:
        stream.seek(100)
        stream.write(b"\xff" * 8)
    damaged = pyctl(train_lab.state_dir, "train", "fetch", job_id, str(tmp_path / "damaged"), check_rc=1)
    assert "does not match its sha256" in damaged.stderr and "Traceback" not in damaged.stderr
    assert not (tmp_path / "damaged").exists()

    (host_dir / "checkpoint.pt").unlink()
    missing = pyctl(train_lab.state_dir, "train", "fetch", job_id, str(tmp_path / "none"), check_rc=2)
    assert f"job {job_id} has no checkpoint yet" in missing.stderr

    path = train_lab.state_dir / "jobs" / job_id / "job.json"
    data = json.loads(path.read_text())
    data["ssh"]["targets"][0]["port"] = 1  # nothing listens there
    path.write_text(json.dumps(data))
    gone = pyctl(train_lab.state_dir, "train", "fetch", job_id, str(tmp_path / "none"), check_rc=2)
    node0 = job["nodes"][0]["name"]
    assert gone.stderr.startswith(f"pyctl: error: host {node0}"), str(gone)  # unreachable, or SSH failed
    assert len(gone.stderr.strip().splitlines()) <= 2 and "Traceback" not in gone.stderr


def _last_job(train_lab) -> str:
    status = pyctl(train_lab.state_dir, "train", "status", "last", "--json", check_rc=0)
    return json.loads(status.stdout)["id"]


def test_users_own_script(train_lab, tmp_path):
    script = tmp_path / "allreduce_user.py"
    script.write_text(ALLREDUCE)
    run = train_lab.ddp("--nproc-per-node", "2", "--script", str(script), "--follow", "--", "--value", "1.5")
    assert run.returncode == 0, str(run)
    assert run.summary == {"world_size": 4, "sum": 1.5 * (1 + 2 + 3 + 4)}
    hosts = {ln.split(" on ", 1)[1].split()[0] for ln in run.stdout.splitlines() if " on node" in ln}
    assert hosts == {"node1", "node2"}
    _no_payload_left(train_lab)


HANG_OR_FAIL = textwrap.dedent(
    """
    # Node rank 1 fails at once; node 0 would wait forever: only pyctl can stop it.
    import os, sys, time
    if os.environ["PYCTL_NODE_RANK"] == "1":
        time.sleep(2)
        print("failing on purpose", flush=True)
        sys.exit(3)
    print("waiting forever", flush=True)
    while True:
        time.sleep(1)
    """
)


def test_one_failed_host_stops_the_others(train_lab, tmp_path):
    script = tmp_path / "hang_or_fail.py"
    script.write_text(HANG_OR_FAIL)
    run = train_lab.ddp("--script", str(script), "--follow")
    # The job's exit code is pyctl's: torchrun on node2 exits 1 when its worker exits 3.
    assert run.returncode == 1, str(run)
    assert "waiting forever" in run.stdout and "failing on purpose" in run.stdout
    assert "failed (exitcode: 3)" in run.stdout
    assert "host node2 failed with exit code 1; the other hosts were stopped" in run.stderr, str(run)
    job = record(train_lab.state_dir, _job_id_from(run.stderr))
    assert job["state"] == "failed"
    supervisor_log = (train_lab.state_dir / "jobs" / job["id"] / "supervisor.log").read_text()
    assert "stopping every host" in supervisor_log
    assert "[pyctl-host] stopping the job's processes" in run.stdout
    _no_payload_left(train_lab, timeout=5)


def _start_detached(train_lab, *args: str) -> str:
    run = train_lab.ddp("--epochs", "300", *FAST, *args)
    assert run.returncode == 0, str(run)
    job_id = _job_id(run)
    log = train_lab.state_dir / "jobs" / job_id / "output.log"
    wait_for(lambda: "epoch 1/300" in log.read_text(), 240, "the first epoch")
    return job_id


def test_cancel_from_another_process_stops_every_host(train_lab):
    job_id = _start_detached(train_lab)
    assert len(payload_processes(train_lab.namespaces)) >= 6  # hostwrap, torchrun, worker on each host
    job = record(train_lab.state_dir, job_id)
    assert all(node["pgid"] for node in job["nodes"]), "each host's process group is recorded"
    cancel = pyctl(train_lab.state_dir, "train", "cancel", job_id[:18], check_rc=0)
    assert "cancelled" in cancel.stderr
    job = record(train_lab.state_dir, job_id)
    assert job["state"] == "cancelled" and job["exit_code"] == 130
    _no_payload_left(train_lab, timeout=5)


def test_ctrl_c_while_following_cancels_the_job(train_lab):
    before = set((train_lab.state_dir / "jobs").glob("*"))
    # As from a terminal: pyctl starts with SIGINT not ignored, even when this test run was started in the
    # background of a non-interactive shell (which starts its jobs with SIGINT ignored; exec keeps that).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyctl", "train", "ddp", "-i", train_lab.inventory, "--backend", "ssh",
             "--ssh-user", "root", "--python", str(DDP_PYTHON), "--epochs", "300", *FAST, "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(train_lab.state_dir),
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        wait_for(lambda: "epoch 1/300" in _new_job_log(train_lab.state_dir, before), 240, "the first epoch")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Ctrl-C: cancelling job" in err
    _no_payload_left(train_lab, timeout=5)


def test_killed_supervisor_leaves_no_orphans(train_lab):
    job_id = _start_detached(train_lab)
    job = record(train_lab.state_dir, job_id)
    os.kill(job["supervisor_pid"], signal.SIGKILL)
    # Its SSH connections close; each host's wrapper sees EOF and stops its process group.
    _no_payload_left(train_lab, timeout=60)
    status = pyctl(train_lab.state_dir, "train", "status", job_id, "--json", check_rc=0)
    assert json.loads(status.stdout)["state"] == "failed"


def _new_job_log(state_dir: Path, before: set[Path]) -> str:
    """The log of the job started after `before` was taken (not an older job's)."""
    new = [p for p in (state_dir / "jobs").glob("*") if p not in before and (p / "output.log").exists()]
    return (new[0] / "output.log").read_text() if new else ""


def test_lost_connection_fails_the_job_and_stops_every_host(train_lab):
    """node2's SSH connection dies mid-job (its ProxyCommand is killed): the supervisor notices, stops
    node1, records the loss (exit code 255, like ssh), and node2's wrapper stops its own group on EOF."""
    job_id = _start_detached(train_lab)
    job = record(train_lab.state_dir, job_id)
    node2 = next(n for n in job["nodes"] if n["name"] == "node2")
    proxies = [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit()
        and _ppid(pid) == job["supervisor_pid"]
        and f"TCP:{node2['address']}:22".encode() in _cmdline(pid)
    ]
    assert len(proxies) == 1, "the supervisor reaches node2 through one ProxyCommand"
    os.kill(proxies[0], signal.SIGKILL)
    done = wait_for(
        lambda: record(train_lab.state_dir, job_id)["state"] != "running" and record(train_lab.state_dir, job_id),
        120,
        "the job to end",
    )
    assert done["state"] == "failed" and done["exit_code"] == 255, done
    assert done["message"].startswith("host node2 lost its SSH connection"), done["message"]
    _no_payload_left(train_lab, timeout=60)


def _ppid(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""

"""The SSH host wrapper on its own, here, from a folder holding only what the supervisor copies to a host
(hostwrap.py and proctree.py) and the launch.json it writes there. No lab: the wrapper stops its own
process tree, which needs no other host."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pyctl.train.backends import sshjob
from pyctl.train.launch import JOB_DIR, NodeLaunch

# A job whose tree has what torchrun and DGL make: a child in the job's group, a child in its own
# session (torchrun's workers), an orphan in its own session (its parent exited: a sampler whose
# worker died), and one that ignores SIGTERM. It writes their pids, then waits (or exits with CODE).
JOB = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    out, code = sys.argv[1], int(sys.argv[2])
    same_group = subprocess.Popen(["sleep", "600"])
    own_session = subprocess.Popen(["sleep", "600"], start_new_session=True)
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; print(subprocess.Popen(['sleep', '600'], start_new_session=True).pid)"],
        stdout=subprocess.PIPE,
    )
    orphan = int(parent.stdout.readline())
    parent.wait()
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, start_new_session=True,
    )
    stubborn.stdout.readline()
    pids = [os.getpid(), same_group.pid, own_session.pid, orphan, stubborn.pid]
    with open(out + ".tmp", "w") as handle:
        handle.write(" ".join(map(str, pids)))
    os.replace(out + ".tmp", out)
    if code:
        sys.exit(code)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_wrapper(tmp_path: Path, code: int = 0) -> tuple[subprocess.Popen, list[int], Path]:
    """The host's job folder as the supervisor leaves it, and hostwrap started there; the job's pids."""
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "hostwrap.py").write_bytes(sshjob.HOSTWRAP.read_bytes())
    (folder / "proctree.py").write_bytes(sshjob.PROCTREE.read_bytes())
    (folder / "job.py").write_text(JOB)
    pids_file = folder / "pids"
    launch = NodeLaunch(
        rank=0,
        host="node1",
        address="127.0.0.1",
        argv=(sys.executable, f"{JOB_DIR}/job.py", str(pids_file), str(code)),
    )
    (folder / "launch.json").write_text(json.dumps(sshjob.host_launch(launch, str(folder), grace_s=1.0)))
    wrapper = subprocess.Popen(
        [sys.executable, "hostwrap.py", "launch.json"],
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    text = wait_until(lambda: pids_file.is_file() and pids_file.read_text(), 60, "the job's pids")
    return wrapper, [int(p) for p in text.split()], folder


def cleanup(wrapper: subprocess.Popen, pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if wrapper.poll() is None:
        wrapper.kill()
        wrapper.wait()


def test_closed_input_stops_the_whole_tree_with_only_the_shipped_files(tmp_path):
    wrapper, pids, folder = start_wrapper(tmp_path)
    try:
        assert all(alive(pid) for pid in pids)
        pgid, wrapper_pid = map(int, (folder / "pgid").read_text().split())
        assert (pgid, wrapper_pid) == (pids[0], wrapper.pid)
        # communicate() closes the wrapper's input: what the supervisor does to stop a host (and what a
        # dropped SSH connection does)
        _, err = wrapper.communicate(timeout=60)
        assert wrapper.returncode == 143, err
        assert "stopping the job's processes: stop requested by the controller" in err
        assert "grace of 1 s over: killed 1 remaining process(es)" in err  # the one that ignores SIGTERM
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"left running: {left}\n{err}"
    finally:
        cleanup(wrapper, pids)


def test_a_job_that_ends_by_itself_leaves_nothing_behind(tmp_path):
    wrapper, pids, _ = start_wrapper(tmp_path, code=3)
    try:
        wrapper.wait(timeout=60)  # its input stays open: nothing asks it to stop
        err = wrapper.stderr.read()
        assert wrapper.returncode == 3, err
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"left running: {left}\n{err}"
    finally:
        cleanup(wrapper, pids)


def test_the_supervisor_tells_every_host_that_it_stops_the_job():
    """launch.json carries PYCTL_SUPERVISED=1 beside the job's own environment: a launcher inside (DistDGL's
    launch.py) then leaves the other hosts to the supervisor."""
    launch = NodeLaunch(
        rank=1,
        host="node2",
        address="10.0.0.2",
        argv=("python3", f"{JOB_DIR}/distdgl_startup.py"),
        env={"PYCTL_MACHINE_INDEX": "1", "DATA": f"{JOB_DIR}/data"},
    )
    body = sshjob.host_launch(launch, "/home/u/.cache/pyctl/jobs/j/node2", 10.0)
    assert body["env"] == {
        "PYCTL_MACHINE_INDEX": "1",
        "DATA": "/home/u/.cache/pyctl/jobs/j/node2/data",
        "PYCTL_SUPERVISED": "1",
    }
    assert body["argv"] == ["python3", "/home/u/.cache/pyctl/jobs/j/node2/distdgl_startup.py"]
    assert body["pgid_file"] == "/home/u/.cache/pyctl/jobs/j/node2/pgid"
    assert body["grace_s"] == 10.0
    assert "PYCTL_SUPERVISED" not in launch.env  # the render shows the job's own environment only

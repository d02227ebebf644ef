"""Job records say only what happened: a cancel that reached no host says so (and exits 3), and a
failed write of the process group ids is reported, not swallowed."""

from __future__ import annotations

import time

from pyctl import cli
from pyctl.config import load_settings
from pyctl.train.backends import sshjob
from pyctl.train.jobs import JobRecord, JobStore, NodeRecord
from pyctl.train.launch import NodeLaunch


def _ssh_record(job_id: str, tmp_path) -> JobRecord:
    key = tmp_path / "key"
    key.write_text("not a key: the connection is refused before it is read\n")
    # Port 1 on loopback: nothing listens there, so the host cannot be reached.
    target = {"name": "node1", "hostname": "127.0.0.1", "port": 1, "user": "pyctl", "key_files": [str(key)]}
    return JobRecord(
        id=job_id,
        workload="ddp",
        backend="ssh",
        created=time.time() - 60,
        state="running",
        nodes=[NodeRecord(rank=0, name="node1", address="127.0.0.1")],
        ssh={"user": "pyctl", "targets": [target], "grace_s": 1},
    )


def test_cancel_without_supervisor_that_reaches_no_host_says_so_and_exits_3(capsys, state_dir, tmp_path):
    store = JobStore(load_settings())
    store.create(_ssh_record("ddp-unreached", tmp_path))
    code = cli.main(["train", "cancel", "ddp-unreached"])
    err = capsys.readouterr().err
    record = store.load("ddp-unreached")
    assert code == 3, err
    assert record.state == "cancelled"
    assert "stopped directly" not in record.message and "signalled" not in record.message, record.message
    assert "nothing stopped on: host node1 is unreachable" in record.message, record.message
    assert record.ssh.not_stopped == ["node1"]
    assert "host node1 is unreachable" in err


class _FailingStore(JobStore):
    """A store whose writes fail (a full disk, a removed job folder) while the supervisor runs."""

    failing = False

    def update(self, job_id, change):
        if self.failing:
            raise OSError(28, "No space left on device")
        return super().update(job_id, change)


def test_a_failed_write_of_the_process_groups_is_reported_not_swallowed(state_dir, tmp_path):
    store = _FailingStore(load_settings())
    store.create(_ssh_record("ddp-pgids", tmp_path))
    said: list[str] = []
    supervisor = sshjob.Supervisor(store, "ddp-pgids", say=said.append)
    launch = NodeLaunch(rank=0, host="node1", address="127.0.0.1", argv=("true",))
    node = sshjob._Node(launch, store.load("ddp-pgids").ssh.targets[0])
    node.pgid, node.job_dir, node.exit_code = 4242, "/tmp/job", 0

    store.failing = True
    supervisor._record_pgids([node])
    assert any("process group ids not recorded" in line and "No space left" in line for line in said), said

    store.failing = False
    supervisor._finish([node])
    record = store.load("ddp-pgids")
    assert record.state == "succeeded"
    assert "process group ids not recorded in the job record" in record.message, record.message


def test_a_lost_supervisor_is_recorded_without_claiming_what_nobody_saw(state_dir, tmp_path):
    from pyctl.train.backends.ssh import mark_lost

    store = JobStore(load_settings())
    store.create(_ssh_record("ddp-lost", tmp_path))
    record = mark_lost(store, store.load("ddp-lost"))
    assert record.state == "failed" and record.exit_code == 1
    assert record.message.startswith("the supervisor died before recording how the job ended"), record.message
    assert "stopped when" not in record.message

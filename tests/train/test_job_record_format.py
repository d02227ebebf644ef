"""`job.json` as earlier pyctl versions wrote it is read into the typed record and written back with
every value it held: the "ssh" and "k8s" objects are `SshInfo` / `K8sInfo`, and keys a version does not
know survive a rewrite (a newer record read by an older pyctl, or the other way round)."""

from __future__ import annotations

import json

import pytest

from pyctl.config import load_settings
from pyctl.remote import Target
from pyctl.train.jobs import JobRecord, JobStore, K8sInfo, SshInfo

_BASE = {
    "state": "running",
    "exit_code": None,
    "message": "",
    "options": {"nodes": 2},
    "supervisor_pid": None,
    "started": None,
    "finished": None,
    "summary": None,
}

# What pyctl wrote before the records were typed (commands/train.py and workload/*.py, 2026-12-06).
OLD_SSH = {
    **_BASE,
    "id": "ddp-261206-101010-abcd",
    "workload": "ddp",
    "backend": "ssh",
    "created": 1765000000.5,
    "nodes": [
        {"rank": 0, "name": "node1", "address": "10.0.0.1", "exit_code": None, "pgid": 4242},
        {"rank": 1, "name": "node2", "address": "10.0.0.2", "exit_code": None, "pgid": None},
    ],
    "ssh": {
        "user": "pyctl",
        "targets": [
            {
                "name": "node1",
                "hostname": "10.0.0.1",
                "port": 22,
                "user": "pyctl",
                "key_files": ["/state/clusters/c/ssh/id_ed25519"],
                "proxy_command": None,
                "known_hosts": ["/lab/known_hosts"],
                "strict": True,
                "connect_timeout": 20.0,
            }
        ],
        "wrapper_python": "/opt/pyctl/venvs/ddp/bin/python",
        "grace_s": 15.0,
        "job_dirs": {"node1": "/home/pyctl/.cache/pyctl/jobs/ddp-261206-101010-abcd/node1"},
        "not_stopped": ["node2"],
    },
    "k8s": {},
}
OLD_K8S_DDP = {
    **_BASE,
    "id": "ddp-261206-101011-beef",
    "workload": "ddp",
    "backend": "k8s",
    "created": 1765000001.0,
    "nodes": [{"rank": 0, "name": "ddp-261206-101011-beef-0", "address": "", "exit_code": None, "pgid": None}],
    "ssh": {},
    "k8s": {
        "kubeconfig": "/state/clusters/c/admin.conf",
        "namespace": "default",
        "kind": "trainjob",
        "name": "ddp-261206-101011-beef",
        "queue": None,
        "start_timeout_s": 900.0,
        "image": "pyctl-ddp:cpu",
        "claim": "pyctl-shared",
        "claim_mount": "/mnt/pyctl-shared",
    },
}
OLD_K8S_WORKLOAD = {  # pyctl doctor --workload's Jobs: four keys only
    **_BASE,
    "id": "probe-261206-101012-cafe",
    "workload": "probe",
    "backend": "k8s",
    "created": 1765000002.0,
    "nodes": [],
    "ssh": {},
    "k8s": {"kubeconfig": "/k", "namespace": "default", "kind": "indexed-job", "name": "probe-261206-101012-cafe"},
}


def _contains(written: dict, old: dict, path: str = "") -> None:
    """Every key the old record had is in the written one with the same value (new keys may be added)."""
    for key, value in old.items():
        assert key in written, f"{path}{key} was dropped"
        if isinstance(value, dict):
            _contains(written[key], value, f"{path}{key}.")
        else:
            assert written[key] == value, f"{path}{key}: {written[key]!r} != {value!r}"


@pytest.mark.parametrize("old", [OLD_SSH, OLD_K8S_DDP, OLD_K8S_WORKLOAD], ids=["ssh", "k8s-ddp", "k8s-workload"])
def test_an_old_job_record_is_read_typed_and_written_back_with_every_value(state_dir, old):
    store = JobStore(load_settings())
    folder = store.dir(old["id"])
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(old), encoding="utf-8")

    record = store.load(old["id"])
    if old["backend"] == "ssh":
        assert isinstance(record.ssh, SshInfo) and record.k8s is None
        assert record.ssh.targets[0] == Target(
            name="node1",
            hostname="10.0.0.1",
            port=22,
            user="pyctl",
            key_files=("/state/clusters/c/ssh/id_ed25519",),
            known_hosts=("/lab/known_hosts",),
        )
        assert record.ssh.job_dirs["node1"].endswith("/node1") and record.ssh.not_stopped == ["node2"]
    else:
        assert isinstance(record.k8s, K8sInfo) and record.ssh is None
        assert (record.k8s.namespace, record.k8s.name, record.k8s.kind) == (
            "default",
            old["id"],
            old["k8s"]["kind"],
        )

    store.update(old["id"], lambda rec: setattr(rec, "state", "succeeded"))  # a rewrite, as the supervisor does
    written = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    _contains(written, {**old, "state": "succeeded"})
    assert list(written) == list(JobRecord.__dataclass_fields__), "the top-level keys keep their order"
    assert store.load(old["id"]) == JobRecord.from_dict(written), "reading the rewrite gives the same record"


def test_keys_this_version_does_not_know_survive_a_rewrite(state_dir):
    store = JobStore(load_settings())
    newer = json.loads(json.dumps(OLD_K8S_DDP))
    newer["k8s"]["fetched_to"] = "/tmp/results"
    newer["ssh"] = {}
    folder = store.dir(newer["id"])
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(newer), encoding="utf-8")
    store.update(newer["id"], lambda rec: None)
    assert json.loads((folder / "job.json").read_text())["k8s"]["fetched_to"] == "/tmp/results"


def test_a_record_built_with_dicts_is_typed_as_one_read_from_disk():
    """Callers (and tests) may still pass the "ssh"/"k8s" objects as the dicts job.json holds."""
    built = JobRecord(id="j", workload="ddp", backend="k8s", created=1.0, k8s=dict(OLD_K8S_DDP["k8s"]))
    assert built.k8s == K8sInfo.from_dict(OLD_K8S_DDP["k8s"])
    assert built.ssh is None and built.to_dict()["ssh"] == {}


def test_a_k8s_object_without_its_names_is_one_usage_error_not_a_traceback(state_dir):
    from pyctl.errors import UsageError

    store = JobStore(load_settings())
    broken = {**OLD_K8S_DDP, "k8s": {"namespace": "default"}}
    folder = store.dir(broken["id"])
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(UsageError, match=r'cannot be read: its "k8s" object lacks kubeconfig, name'):
        store.load(broken["id"])

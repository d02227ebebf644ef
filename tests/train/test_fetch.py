"""`pyctl train fetch`: verification, the one-line errors, and the Kubernetes path in-process.

The fetch pod's own program runs for real against a folder standing for the claim (what the kubelet
stand-in does with a persistentVolumeClaim); the SSH path runs on the netns lab in test_ssh_backend.py.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from pyctl import cli
from pyctl.errors import ExitCode, UsageError
from pyctl.train import fetch
from pyctl.train.jobs import JobRecord, JobStore, NodeRecord

CHECKPOINT = b"not really torch, but bytes all the same\n" * 100


def write_results(folder: Path, checkpoint: bytes = CHECKPOINT, sidecar: bytes | None = None) -> None:
    """What payloads/ddp/checkpoint.py leaves: checkpoint.pt, its sha256 sidecar, train.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(checkpoint)
    digest = hashlib.sha256(checkpoint).hexdigest()
    (folder / "checkpoint.pt.sha256").write_bytes(sidecar or f"{digest}  checkpoint.pt\n".encode())
    (folder / "train.jsonl").write_text('{"event": "summary", "test_accuracy": 0.95}\n')


def k8s_record(state: str = "succeeded", **options) -> JobRecord:
    return JobRecord(
        id="ddp-261207-004500-1234",
        workload="ddp",
        backend="k8s",
        created=0.0,
        state=state,
        nodes=[NodeRecord(rank=0, name="ddp-261207-004500-1234-0")],
        options={"script": None, "checkpoint_dir": None, **options},
        k8s={
            "kubeconfig": "/nonexistent/kubeconfig",
            "namespace": "team",
            "name": "ddp-261207-004500-1234",
            "image": "registry.local/pyctl-ddp:cpu",
            "claim": "pyctl-shared",
            "claim_mount": "/mnt/pyctl-shared",
        },
    )


class PodRunnerDouble:
    """Stands in for pyctl.train.backends.kubeclient.Client.run_pod: runs the pod's one container command on this
    machine with the claim's mount path mapped to a local folder, as the kubelet stand-in
    (tests/doubles/kubelet_standin.py) maps a persistentVolumeClaim; returns the container's log."""

    def __init__(self, claim_root: Path) -> None:
        self.claim_root = claim_root
        self.pods: list[dict] = []

    def run_pod(self, manifest: dict, timeout: float) -> str:
        self.pods.append(manifest)
        container = manifest["spec"]["containers"][0]
        mount = container["volumeMounts"][0]["mountPath"]
        assert container["volumeMounts"][0]["readOnly"] is True
        assert manifest["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "pyctl-shared"
        command = [arg.replace(mount, str(self.claim_root)) for arg in container["command"]]
        assert command[0] == "python3"
        done = subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, text=True, timeout=timeout, check=True
        )
        return done.stdout


@pytest.fixture
def claim(tmp_path, monkeypatch) -> tuple[Path, PodRunnerDouble]:
    root = tmp_path / "claim"
    double = PodRunnerDouble(root)
    from pyctl.train.backends import kubeclient

    monkeypatch.setattr(kubeclient, "Client", lambda kubeconfig: double)
    return root, double


def test_k8s_fetch_copies_and_verifies_through_a_pod_on_the_claim(claim, tmp_path):
    root, double = claim
    record = k8s_record()
    write_results(root / "pyctl" / "jobs" / record.id)
    done = fetch.fetch_job(record, tmp_path / "out")
    assert sorted(done.files) == ["checkpoint.pt", "checkpoint.pt.sha256", "train.jsonl"]
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == CHECKPOINT
    assert done.sha256 == hashlib.sha256(CHECKPOINT).hexdigest()
    assert done.where == f"team/pyctl-shared:/mnt/pyctl-shared/pyctl/jobs/{record.id}"
    (pod,) = double.pods
    assert pod["metadata"]["namespace"] == "team"
    assert pod["spec"]["containers"][0]["image"] == "registry.local/pyctl-ddp:cpu"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_k8s_fetch_reads_a_given_checkpoint_dir(claim, tmp_path):
    root, _ = claim
    record = k8s_record(checkpoint_dir="/mnt/pyctl-shared/runs/fmnist")
    write_results(root / "runs" / "fmnist")
    assert fetch.fetch_job(record, tmp_path / "out").where.endswith(":/mnt/pyctl-shared/runs/fmnist")


def test_a_damaged_checkpoint_is_refused_and_nothing_is_written(claim, tmp_path):
    root, double = claim
    record = k8s_record(state="succeeded")
    write_results(root / "pyctl" / "jobs" / record.id, sidecar=b"0" * 64 + b"  checkpoint.pt\n")
    with pytest.raises(fetch.FetchError, match="does not match its sha256") as info:
        fetch.fetch_job(record, tmp_path / "out")
    assert info.value.exit_code == ExitCode.HOST_FAILED
    assert not (tmp_path / "out").exists()
    assert len(double.pods) == 1  # a finished job is read once: its files will not change


def test_a_running_job_is_read_again_when_it_caught_the_writer_between_renames(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    good = {"checkpoint.pt": CHECKPOINT, "checkpoint.pt.sha256": hashlib.sha256(CHECKPOINT).hexdigest().encode()}
    stale = {**good, "checkpoint.pt.sha256": b"f" * 64}
    reads = iter([stale, {**good, "train.jsonl": b"{}\n"}])
    done = fetch.fetch(k8s_record(state="running"), tmp_path / "out", lambda: next(reads), "somewhere")
    assert sorted(done.files) == ["checkpoint.pt", "checkpoint.pt.sha256", "train.jsonl"]


def test_no_checkpoint_yet_is_one_line_naming_the_job(claim, tmp_path):
    record = k8s_record(state="running")
    with pytest.raises(UsageError, match=f"job {record.id} has no checkpoint yet in team/pyctl-shared:"):
        fetch.fetch_job(record, tmp_path / "out")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workload": "distdgl"}, "is a distdgl job"),
        ({"options": {"script": "/home/me/mine.py"}}, "ran your --script"),
    ],
)
def test_jobs_without_the_payloads_checkpoint_are_refused(changes, message):
    record = k8s_record()
    for name, value in changes.items():
        setattr(record, name, value)
    with pytest.raises(UsageError, match=message):
        fetch.results_dir(record)


def test_cli_fetch_of_an_unknown_job_is_one_line(capsys, state_dir, tmp_path):
    assert cli.main(["train", "fetch", "nosuchjob", str(tmp_path / "out")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("pyctl: error: no job 'nosuchjob'")
    assert "Traceback" not in err


def test_cli_fetch_through_the_pod(claim, capsys, state_dir, tmp_path):
    from pyctl.config import load_settings

    root, _ = claim
    record = k8s_record()
    JobStore(load_settings()).create(record)
    write_results(root / "pyctl" / "jobs" / record.id)
    assert cli.main(["train", "fetch", "last", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "out" / n) for n in ("checkpoint.pt", "checkpoint.pt.sha256", "train.jsonl")]
    assert "verified" in err

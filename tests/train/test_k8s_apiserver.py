"""`pyctl train ddp --backend k8s` end to end against the Kubernetes API double over HTTPS
(tests/doubles/fake_apiserver.py), driven only through the CLI: the real kubernetes client submits,
follows, streams logs and cancels; the double's Job controller runs the pods through the kubelet
stand-in, one per completion index in a netns lab host, so the payload really trains.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doubles.fake_apiserver import ApiServerDouble, NodeSpec
from tests.train.apiserver_support import ddp_image, install_kubeconfig
from tests.train.conftest import FAST, cli_env, payload_processes, pyctl, wait_for

pytestmark = pytest.mark.lab


@dataclass
class K8sLab:
    api: ApiServerDouble
    inventory: str
    state_dir: Path
    namespaces: list[str]

    def pyctl(self, *args: str, timeout: float = 420):
        return pyctl(self.state_dir, *args, timeout=timeout)

    def ddp(self, *args: str) -> list[str]:
        return ["train", "ddp", "-i", self.inventory, "--backend", "k8s", "--nodes", "2", *FAST, *args]


@pytest.fixture(scope="module")
def k8s_lab(train_lab, tmp_path_factory) -> Iterator[K8sLab]:
    nodes = [NodeSpec(h.name, netns=h.namespace, address=h.address) for h in train_lab.lab.hosts]
    share = tmp_path_factory.mktemp("claim")
    with ApiServerDouble(
        tmp_path_factory.mktemp("api"),
        nodes=nodes,
        images={"pyctl-ddp:cpu": ddp_image()},
        claims={"pyctl-shared": share},
        local_queues={"team-a": "cq"},
        quotas={"cq": {"pods": 1}},
    ) as api:
        install_kubeconfig(api, train_lab.state_dir, Path(train_lab.inventory))
        yield K8sLab(api, train_lab.inventory, train_lab.state_dir, train_lab.namespaces)


def _job_id(stderr: str) -> str:
    return next(line.split()[3] for line in stderr.splitlines() if " submitted: " in line)


def test_ddp_follow_runs_to_a_finished_job_with_merged_logs(k8s_lab, tmp_path):
    result = k8s_lab.pyctl(*k8s_lab.ddp("--epochs", "4", "--follow"))
    assert result.returncode == 0, result
    job_id = _job_id(result.stderr)
    lines = result.stdout.splitlines()
    assert any(ln.startswith("[node 0] ") for ln in lines) and any(ln.startswith("[node 1] ") for ln in lines)
    assert f"[node 1] pyctl: node 0 ({job_id}-0.{job_id}:29500) is listening after" in result.stdout
    summary = result.summary
    assert summary["world_size"] == 2 and summary["test_accuracy"] >= 0.90, result
    assert f"job {job_id} succeeded: the Job completed; test accuracy {summary['test_accuracy']}" in result.stderr
    job = k8s_lab.api.get("batch", "jobs", job_id)
    assert {c["type"] for c in job["status"]["conditions"]} == {"SuccessCriteriaMet", "Complete"}
    record = json.loads(k8s_lab.pyctl("train", "status", job_id, "--json").stdout)
    assert record["state"] == "succeeded" and record["summary"]["test_accuracy"] == summary["test_accuracy"]
    logs = k8s_lab.pyctl("train", "logs", job_id)  # the pod that ended by itself keeps its log
    assert "[node 0] PYCTL_SUMMARY " in logs.stdout, logs
    assert k8s_lab.api.warnings == [], "pyctl sent a field the 1.36 schema does not know"
    # `pyctl train fetch` runs a pod of its own on the claim (the double runs it like a Job's pod).
    fetched = k8s_lab.pyctl("train", "fetch", job_id, str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched
    assert (tmp_path / "out" / "checkpoint.pt").is_file(), fetched
    assert k8s_lab.api.list("", "pods", selector=f"pyctl.io/fetch-of={job_id}") == [], "the fetch pod is deleted"


def test_a_trainjob_on_pyctls_runtime_runs_to_its_accuracy(k8s_lab):
    """--kind trainjob --with-runtime: the double's Trainer renders the runtime's node Job (PET_* injected,
    master `<job>-node-0-0.<job>`), the pods train, the TrainJob completes and follow reads it."""
    result = k8s_lab.pyctl(*k8s_lab.ddp("--epochs", "2", "--kind", "trainjob", "--with-runtime", "--follow"))
    assert result.returncode == 0, result
    job_id = _job_id(result.stderr)
    assert f"[node 1] pyctl: node 0 ({job_id}-node-0-0.{job_id}:29500) is listening after" in result.stdout, result
    assert result.summary["world_size"] == 2
    assert f"job {job_id} succeeded: the TrainJob completed; test accuracy" in result.stderr
    trainjob = k8s_lab.api.get("trainer.kubeflow.org", "trainjobs", job_id)
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in trainjob["status"]["conditions"])


def test_a_failing_node_fails_the_job_and_pyctl_names_it(k8s_lab):
    """Rank 1 dies in epoch 1 (the payload's fault hook, exit 1); rank 0 then loses its peer. The Job fails
    by its podFailurePolicy, naming a pod that failed by itself; pods the controller stopped are deleted
    (which of the two pods ends first is a race, on a real cluster too), and pyctl names the node."""
    result = k8s_lab.pyctl(*k8s_lab.ddp("--epochs", "2", "--env", "PYCTL_DDP_FAIL_AT=1:2:1", "--follow"))
    assert result.returncode == 1, result
    job_id = _job_id(result.stderr)
    job = k8s_lab.api.get("batch", "jobs", job_id)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert (
        failed["reason"] == "PodFailurePolicy" and "failed with exit code 1 matching FailJob rule" in failed["message"]
    )
    pods = k8s_lab.api.list("", "pods", selector=f"job-name={job_id}")
    assert pods and all(p["status"]["phase"] == "Failed" for p in pods), pods
    assert any(p["metadata"]["name"] in failed["message"] for p in pods)
    codes = {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods}
    assert codes == {1}, pods
    assert f"job {job_id} failed: the Job failed: PodFailurePolicy: " in result.stderr
    assert re.search(r"\(node [01] exited with 1\)", result.stderr), result
    assert "failing on purpose at epoch 1 step 2" in result.stdout


def test_cancel_stops_a_running_job_pods_and_processes(k8s_lab):
    result = k8s_lab.pyctl(*k8s_lab.ddp("--epochs", "100000"))
    assert result.returncode == 0, result
    job_id = result.stdout.strip()
    api = k8s_lab.api

    def running() -> bool:
        pods = api.list("", "pods", selector=f"job-name={job_id}")
        return len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)

    wait_for(running, 120, "both pods to run")
    wait_for(lambda: len(payload_processes(k8s_lab.namespaces)) >= 2, 120, "the payload processes")
    cancel = k8s_lab.pyctl("train", "cancel", job_id)
    assert cancel.returncode == 0, cancel
    assert f"job {job_id} cancelled" in cancel.stderr
    wait_for(lambda: api.get("batch", "jobs", job_id) is None, 60, "the Job to be deleted (Foreground)")
    assert api.list("", "pods", selector=f"job-name={job_id}") == []
    wait_for(lambda: payload_processes(k8s_lab.namespaces) == [], 60, "the payload processes to end")


def test_a_queued_job_waits_for_quota_then_kueue_admits_it_whole(k8s_lab, tmp_path):
    """ClusterQueue cq holds 1 pod: the 2-pod job waits; with room for 2 it is admitted at once and runs."""
    # stdout goes to a file: only the reader thread reads stderr (communicate() reading it too would take
    # lines from the reader).
    out_path = tmp_path / "stdout"
    out = out_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "pyctl", *k8s_lab.ddp("--epochs", "1", "--queue", "team-a", "--follow")],
        env=cli_env(k8s_lab.state_dir),
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    held = threading.Event()

    def read() -> None:
        for line in process.stderr:
            stderr.append(line)
            if "waiting for admission in queue team-a: couldn't assign flavors" in line:
                held.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert held.wait(300), "".join(stderr)
        job_id = _job_id("".join(stderr))
        assert k8s_lab.api.get("batch", "jobs", job_id)["spec"]["suspend"] is True
        assert k8s_lab.api.list("", "pods", selector=f"job-name={job_id}") == [], "no pod before admission"
        k8s_lab.api.set_quota("cq", {"pods": 2})
        process.wait(timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
        out.close()
    reader.join(timeout=10)
    stdout = out_path.read_text()
    text = "".join(stderr)
    assert process.returncode == 0, f"{stdout[-3000:]}\n{text}"
    assert "pyctl train: admitted; 2 pod(s) active" in text  # the Job unsuspended by Kueue
    assert "PYCTL_SUMMARY" in stdout


def test_doctor_reads_the_cluster_through_the_double(k8s_lab):
    result = k8s_lab.pyctl("doctor", "-i", k8s_lab.inventory, "--json", timeout=300)
    report = json.loads(result.stdout)
    assert report["server"] == k8s_lab.api.server, result
    assert not [p for p in report["problems"] if p.get("where") == "api server" or "api server" in p["message"]]
    assert sorted(n["name"] for n in report["summary"]["nodes"]) == sorted(n.name for n in k8s_lab.api.nodes)

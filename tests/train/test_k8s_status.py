"""How the Kubernetes backend reads a Job's or PyTorchJob's status (no cluster here: plain dicts)."""

from __future__ import annotations

from types import SimpleNamespace

from pyctl.train.backends.kubeclient import job_outcome, node_index, pytorchjob_outcome


def _cond(kind: str, status: str = "True", **extra) -> dict:
    return {"type": kind, "status": status, **extra}


def test_job_states():
    assert job_outcome(None).state == "running"
    assert job_outcome({"active": 2}).message == "2 pod(s) active"
    assert job_outcome({"conditions": [_cond("SuccessCriteriaMet")]}).state == "succeeded"
    assert job_outcome({"conditions": [_cond("Complete")]}).exit_code == 0
    failed = job_outcome(
        {"conditions": [_cond("FailureTarget", reason="PodFailurePolicy", message="index 1 exited 1")]}
    )
    assert (failed.state, failed.exit_code) == ("failed", 1)
    assert "PodFailurePolicy: index 1 exited 1" in failed.message
    assert job_outcome({"conditions": [_cond("Failed", status="False")]}).state == "running"


def test_pytorchjob_states():
    assert pytorchjob_outcome({"conditions": [_cond("Running")]}).state == "running"
    assert pytorchjob_outcome({"conditions": [_cond("Succeeded")]}).state == "succeeded"
    assert pytorchjob_outcome({"conditions": [_cond("Failed", message="worker 0 failed")]}).state == "failed"


def test_node_index_of_pods():
    indexed = SimpleNamespace(
        metadata=SimpleNamespace(annotations={"batch.kubernetes.io/job-completion-index": "3"}, labels={})
    )
    worker = SimpleNamespace(
        metadata=SimpleNamespace(
            annotations={},
            labels={"training.kubeflow.org/replica-type": "worker", "training.kubeflow.org/replica-index": "1"},
        )
    )
    master = SimpleNamespace(
        metadata=SimpleNamespace(annotations=None, labels={"training.kubeflow.org/replica-type": "master"})
    )
    assert [node_index(p) for p in (indexed, worker, master)] == [3, 2, 0]

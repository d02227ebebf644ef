"""Gang scheduling and Trainer v2 through the Kubernetes backend, against the training API double
(tests/doubles/fake_training_api.py: Kueue v0.19.2 and Trainer v2.3.0 contracts, in process).

A queued job is followed through held -> admitted -> running -> succeeded: `--follow` says it waits for
admission in its queue (with Kueue's reason), then that it was admitted, then streams the log."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from kubernetes.client import ApiClient

from pyctl.train import kueue
from pyctl.train.backends import kubeclient
from pyctl.train.jobs import JobRecord
from tests.doubles.fake_training_api import FakeTrainingApi
from tests.train.test_trainjob_manifests import JOB_ID, render_case

QUOTA = "couldn't assign flavors to pod set main: insufficient quota for cpu in flavor default, 4 more needed"


def _client(api: FakeTrainingApi) -> kubeclient.Client:
    client = kubeclient.Client.__new__(kubeclient.Client)
    client.api, client.core, client.batch, client.custom = ApiClient(), api, api, api
    return client


def _record(kind: str, queue: str | None) -> JobRecord:
    k8s_info = {"kubeconfig": "/nonexistent", "namespace": "default", "kind": kind, "name": JOB_ID, "queue": queue}
    return JobRecord(id=JOB_ID, workload="ddp", backend="k8s", created=time.time(), k8s=k8s_info)


def _script(api: FakeTrainingApi, steps: dict[int, callable]) -> None:
    api.on_read = lambda n: steps[n]() if n in steps else None


@pytest.mark.parametrize(
    ("case", "kind"), [("indexed-job-queue", "indexed-job"), ("trainjob-gpu-runtime-queue", "trainjob")]
)
def test_a_queued_job_waits_for_admission_then_runs(tmp_path, case, kind):
    api = FakeTrainingApi()
    client = _client(api)
    client.submit(render_case(tmp_path, case), "default")
    # Every object is created with fieldValidation=Strict: a server refuses an unknown field instead
    # of dropping it with a warning (the 1.36 default, Warn).
    assert all(validation == "Strict" for _, validation in api.field_validation)
    assert kind != "indexed-job" or ("Job", "Strict") in api.field_validation
    _script(
        api,
        {
            2: lambda: api.hold(QUOTA),
            4: api.admit,
            5: lambda: api.run({0: ["hello from 0", 'PYCTL_SUMMARY {"test_accuracy": 0.9}'], 1: ["hello from 1"]}),
            7: api.finish,
        },
    )
    notes, lines = [], []
    outcome = client.follow(_record(kind, "team-a"), lines.append, poll=0, say=notes.append)
    assert notes == [
        "waiting for admission in queue team-a: Quota not reserved: waiting for the scheduler",
        f"waiting for admission in queue team-a: {QUOTA}",
        "admitted; 0 pod(s) active",
    ]
    assert (outcome.state, outcome.exit_code) == ("succeeded", 0)
    assert outcome.summary == {"test_accuracy": 0.9}
    assert sorted(lines) == [
        '[node 0] PYCTL_SUMMARY {"test_accuracy": 0.9}',
        "[node 0] hello from 0",
        "[node 1] hello from 1",
    ]


def test_status_of_a_held_job_is_queued_with_kueues_reason(tmp_path):
    api = FakeTrainingApi(local_queues=())
    client = _client(api)
    client.submit(render_case(tmp_path, "indexed-job-queue"), "default")
    outcome = client.status(_record("indexed-job", "team-a"))
    assert outcome.state == "queued"
    assert outcome.message == "waiting for admission in queue team-a: LocalQueue team-a doesn't exist"


def test_without_kueue_the_wait_says_so(tmp_path):
    api = FakeTrainingApi(kueue_installed=False)
    client = _client(api)
    client.submit(render_case(tmp_path, "indexed-job-queue"), "default")
    outcome = client.status(_record("indexed-job", "team-a"))
    assert outcome.state == "queued" and "is Kueue installed?" in outcome.message


def test_trainjob_submit_cancel_and_the_doubles_refusals(tmp_path):
    api = FakeTrainingApi()
    client = _client(api)
    documents = render_case(tmp_path, "trainjob-script")
    client.submit(documents, "default")
    configmap = api.objects[("ConfigMap", f"{JOB_ID}-script")]
    owner = configmap["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["apiVersion"], owner["name"]) == ("TrainJob", "trainer.kubeflow.org/v1alpha1", JOB_ID)
    record = _record("trainjob", None)
    assert client.status(record).state == "running"
    client.cancel(record)
    assert ("TrainJob", JOB_ID) not in api.objects
    client.cancel(record)  # gone already: not an error

    # What the double refuses, as Trainer's webhook and strict field validation would.
    trainjob = yaml.safe_load(documents["trainjob"])
    trainjob["spec"]["trainer"]["env"].append({"name": "PET_NODE_RANK", "value": "0"})
    with pytest.raises(kubeclient.KubeError, match="422"):
        client.submit({"trainjob": yaml.safe_dump(trainjob)}, "default")
    trainjob = yaml.safe_load(documents["trainjob"])
    trainjob["spec"]["runtimeRef"]["name"] = "pyctl-torch"
    with pytest.raises(kubeclient.KubeError, match="422"):
        client.submit({"trainjob": yaml.safe_dump(trainjob)}, "default")


def test_with_runtime_applies_pyctls_runtime_and_reapplies_it(tmp_path):
    api = FakeTrainingApi()
    client = _client(api)
    documents = render_case(tmp_path, "trainjob-gpu-runtime-queue")
    client.submit(documents, "default")
    assert "pyctl-torch-nvidia" in api.runtimes
    api.objects.pop(("TrainJob", JOB_ID))
    client.submit(documents, "default")  # the runtime exists (409): updated, not an error
    assert ("TrainJob", JOB_ID) in api.objects


def test_trainjob_states():
    from pyctl.train.workloads.ddp_trainjob import outcome_of

    assert outcome_of({"conditions": [{"type": "Suspended", "status": "True"}]})[0] == "queued"
    assert outcome_of({"conditions": [{"type": "Suspended", "status": "False"}]})[0] == "running"
    assert outcome_of({"conditions": [{"type": "Complete", "status": "True"}]}) == (
        "succeeded",
        "the TrainJob completed",
    )
    state, message = outcome_of(
        {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "node-0 failed"}]}
    )
    assert state == "failed" and message == "the TrainJob failed: FailedJobs: node-0 failed"


def test_kueue_admission_messages():
    wait = "waiting for admission in queue q"
    assert kueue.admission("q", None).message == f"{wait} (Kueue has not made the job's Workload yet)"
    evicted = {
        "status": {
            "conditions": [
                {"type": "Admitted", "status": "True"},
                {
                    "type": "Evicted",
                    "status": "True",
                    "reason": "Preempted",
                    "message": "preempted by a higher priority job",
                },
            ]
        }
    }
    assert kueue.admission("q", evicted) == kueue.Admission(
        False, f"{wait} again: evicted by Kueue (Preempted: preempted by a higher priority job)"
    )
    checks = {"status": {"conditions": [{"type": "QuotaReserved", "status": "True"}]}}
    assert kueue.admission("q", checks).message == f"{wait}: quota reserved, admission checks pending"
    assert kueue.job_labels({"a": "b"}, None) == {"a": "b"}


def test_the_cli_follows_a_queued_trainjob_to_its_end(state_dir, tmp_path, capsys, monkeypatch):
    """`pyctl train ddp --kind trainjob --queue Q --follow` through commands/train.py, on the double."""
    from pyctl import cli
    from pyctl.config import load_settings
    from tests.train.test_cli import INVENTORY

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    kubeconfig = load_settings().kubeconfig("cp1")
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("not read: the client is the double\n")
    api = FakeTrainingApi()
    _script(
        api,
        {
            2: lambda: api.hold(QUOTA),
            3: api.admit,
            4: lambda: api.run({0: ['PYCTL_SUMMARY {"test_accuracy": 0.97}'], 1: ["hello"]}),
            5: api.finish,
        },
    )

    class DoubleClient(kubeclient.Client):
        def __init__(self, path):
            self.api, self.core, self.batch, self.custom = ApiClient(), api, api, api

        def follow(self, record, out, poll=2.0, **kwargs):
            return super().follow(record, out, poll=0, **kwargs)

    monkeypatch.setattr(kubeclient, "Client", DoubleClient)
    args = ["--kind", "trainjob", "--queue", "team-a", "--nodes", "2", "--follow"]
    assert cli.main(["train", "ddp", "-i", str(inventory), *args]) == 0
    captured = capsys.readouterr()
    assert "through Kueue queue team-a" in captured.err
    assert f"waiting for admission in queue team-a: {QUOTA}" in captured.err
    assert "admitted; 0 pod(s) active" in captured.err
    assert "succeeded: the TrainJob completed; test accuracy 0.97" in captured.err
    assert "[node 1] hello" in captured.out
    assert cli.main(["train", "status", "last", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["state"], record["k8s"]["kind"], record["k8s"]["queue"]) == ("succeeded", "trainjob", "team-a")
    job_dir = load_settings().state_dir / "jobs" / record["id"]
    assert "[node 1] hello" in (job_dir / "output.log").read_text()
    assert sorted(p.name for p in (job_dir / "manifests").iterdir()) == ["trainjob.yaml"]


def test_the_start_deadline_counts_from_admission_not_from_submission(tmp_path):
    """A job an hour in the queue is not failed for pods that did not start: none may start until admitted."""
    from pyctl.train.jobs import NodeRecord

    api = FakeTrainingApi()
    client = _client(api)
    client.submit(render_case(tmp_path, "indexed-job-queue"), "default")
    record = _record("indexed-job", "team-a")
    record.created -= 3600
    record.k8s.start_timeout_s = 900
    record.nodes = [NodeRecord(rank=i, name=f"{JOB_ID}-{i}") for i in range(2)]
    _script(api, {3: api.admit, 4: lambda: api.run({0: ["a"], 1: ["b"]}), 6: api.finish})
    notes: list[str] = []
    outcome = client.follow(record, lambda line: None, poll=0, say=notes.append)
    assert (outcome.state, outcome.message) == ("succeeded", "the Job completed"), notes
    assert notes[-1] == "admitted; 0 pod(s) active"

"""`pyctl train ... --follow` on Kubernetes never waits silently on pods that cannot start.

Judged on Kubernetes API objects built with the kubernetes client's own models (as the API server
sends them): container waiting reasons (ImagePullBackOff, ErrImagePull), PodScheduled=False
conditions (Insufficient nvidia.com/gpu, a missing or unbound claim) and events. Then the command
itself, in-process, against an API double (`FakeApis`: only the calls the backend makes, answering as
the API server does): the reasons on stderr within the first poll, the start deadline deleting the
Job and exiting 1 with the reason, a missing claim refused before anything is submitted, and the
warning on an image name without a registry.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes.client import (
    ApiClient,
    CoreV1Event,
    CoreV1EventList,
    V1Container,
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobStatus,
    V1ObjectMeta,
    V1ObjectReference,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimStatus,
    V1Pod,
    V1PodCondition,
    V1PodList,
    V1PodSpec,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

from pyctl import cli
from pyctl.train.backends import kubeclient, podstart

JOB = "ddp-start"
INDEX = "batch.kubernetes.io/job-completion-index"
IMAGE = "registry.local:5000/pyctl-ddp:cuda"


def pending_pod(index: int, *, waiting: str | None = None, message: str = "", unscheduled: str = "") -> V1Pod:
    conditions = []
    if unscheduled:
        conditions.append(
            V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable", message=unscheduled)
        )
    statuses = None
    if waiting:
        statuses = [
            V1ContainerStatus(
                name="trainer",
                image=IMAGE,
                image_id="",
                ready=False,
                restart_count=0,
                state=V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting, message=message)),
            )
        ]
    return V1Pod(
        metadata=V1ObjectMeta(
            name=f"{JOB}-{index}-x{index}k", annotations={INDEX: str(index)}, labels={"job-name": JOB}
        ),
        spec=V1PodSpec(containers=[V1Container(name="trainer", image=IMAGE)]),
        status=V1PodStatus(phase="Pending", conditions=conditions, container_statuses=statuses),
    )


def running_pod(index: int) -> V1Pod:
    pod = pending_pod(index)
    pod.status.phase = "Running"
    return pod


def event(name: str, reason: str, message: str, kind: str = "Warning") -> CoreV1Event:
    return CoreV1Event(
        metadata=V1ObjectMeta(name=f"{name}.17f"),
        involved_object=V1ObjectReference(kind="Pod", name=name),
        reason=reason,
        message=message,
        type=kind,
        last_timestamp=datetime.now(UTC),
    )


GPU_SHORT = "0/3 nodes are available: 1 node(s) had untolerated taint, 2 Insufficient nvidia.com/gpu. preemption: 0/3"
NO_CLAIM = 'persistentvolumeclaim "pyctl-shared" not found'
UNBOUND = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes"
PULL = 'Back-off pulling image "registry.local:5000/pyctl-ddp:cuda"'


# --- the judgement -------------------------------------------------------------------------------------


def test_each_waiting_reason_is_reported_once_with_what_to_do():
    watch = podstart.StartWatch(expected=3, created=1000.0, timeout_s=900)
    pods = [
        (0, pending_pod(0, waiting="ImagePullBackOff", message=PULL)),
        (1, pending_pod(1, waiting="ErrImagePull", message="failed to resolve reference: not found")),
        (2, pending_pod(2, unscheduled=GPU_SHORT)),
    ]
    events = [event(f"{JOB}-2-x2k", "FailedScheduling", GPU_SHORT)]
    lines, verdict = watch.observe(pods, events, now=1002.0)
    assert verdict is None
    text = "\n".join(lines)
    assert f"node 0 ({JOB}-0-x0k) waiting: ImagePullBackOff: {PULL}" in text
    assert f"can every node pull {IMAGE}?" in text
    assert f"node 1 ({JOB}-1-x1k) waiting: ErrImagePull: failed to resolve reference" in text
    assert f"node 2 ({JOB}-2-x2k) waiting: Unschedulable: {GPU_SHORT}" in text
    assert "fewer free GPUs than --gpus-per-node" in text
    assert f"event FailedScheduling on {JOB}-2-x2k: {GPU_SHORT}" in text
    again, _ = watch.observe(pods, events, now=1004.0)
    assert again == [], "each reason once"


@pytest.mark.parametrize(
    ("message", "hint"),
    [(NO_CLAIM, "the claim is missing"), (UNBOUND, "the claim is not bound to a volume yet")],
)
def test_a_missing_or_unbound_claim_is_named(message, hint):
    watch = podstart.StartWatch(expected=1, created=0.0, timeout_s=900)
    lines, _ = watch.observe([(0, pending_pod(0, unscheduled=message))], [], now=1.0)
    assert len(lines) == 1 and message in lines[0] and hint in lines[0], lines


def test_past_the_deadline_the_verdict_names_each_pending_pods_reason():
    watch = podstart.StartWatch(expected=2, created=0.0, timeout_s=600)
    pods = [(0, running_pod(0)), (1, pending_pod(1, waiting="ImagePullBackOff", message=PULL))]
    _, verdict = watch.observe(pods, [], now=599.0)
    assert verdict is None
    _, verdict = watch.observe(pods, [], now=601.0)
    assert verdict == (
        f"pods did not start within 600 s (--start-timeout): node 1 ({JOB}-1-x1k): ImagePullBackOff: {PULL}"
    )


def test_no_pod_created_is_a_verdict_with_the_jobs_event():
    watch = podstart.StartWatch(expected=2, created=0.0, timeout_s=60)
    quota = 'pods "ddp-start-0-abc" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=8'
    lines, verdict = watch.observe([], [event(JOB, "FailedCreate", quota)], now=61.0)
    assert lines == [f"event FailedCreate on {JOB}: {quota}"]
    assert verdict == f"no pod was created within 60 s (--start-timeout): event FailedCreate on {JOB}: {quota}"


def test_once_every_pod_started_the_watch_is_done_and_zero_waits_for_ever():
    watch = podstart.StartWatch(expected=2, created=0.0, timeout_s=60)
    assert watch.observe([(0, running_pod(0)), (1, running_pod(1))], [], now=1.0) == ([], None)
    assert watch.started
    assert watch.observe([(0, pending_pod(0, waiting="ImagePullBackOff"))], [], now=1e6) == ([], None)
    forever = podstart.StartWatch(expected=1, created=0.0, timeout_s=0)
    assert forever.observe([(0, pending_pod(0, unscheduled=GPU_SHORT))], [], now=1e9)[1] is None


def test_an_image_pull_in_progress_is_shown():
    watch = podstart.StartWatch(expected=1, created=0.0, timeout_s=900)
    pod = pending_pod(0, waiting="ContainerCreating")
    pulling = event(pod.metadata.name, "Pulling", f'Pulling image "{IMAGE}"', kind="Normal")
    assert watch.observe([(0, pod)], [pulling], 1.0) == (
        [f'event Pulling on {pod.metadata.name}: Pulling image "{IMAGE}"'],
        None,
    )


def test_normal_progress_is_not_a_problem():
    watch = podstart.StartWatch(expected=1, created=0.0, timeout_s=60)
    pod = pending_pod(0, waiting="ContainerCreating")
    assert watch.observe([(0, pod)], [event(pod.metadata.name, "Scheduled", "assigned", kind="Normal")], 1.0) == (
        [],
        None,
    )


@pytest.mark.parametrize(
    ("image", "pulled_as"),
    [
        ("pyctl-ddp:cpu", "docker.io/library/pyctl-ddp:cpu"),
        ("me/pyctl-ddp:cpu", "docker.io/me/pyctl-ddp:cpu"),
        ("registry.local/pyctl-ddp:cuda", None),
        ("registry.local:5000/pyctl-ddp:cuda", None),
        ("localhost/pyctl-ddp:cpu", None),
    ],
)
def test_image_names_without_a_registry_are_found(image, pulled_as):
    assert podstart.unqualified_image(image) == pulled_as


# --- the command, against an API double ------------------------------------------------------------------


class FakeApis:
    """The kubernetes client's CoreV1Api and BatchV1Api as pyctl's backend calls them (kubernetes
    client 37, Kubernetes 1.36 API semantics): reads answer with the models the API server's JSON
    decodes to, a missing object is ApiException 404, deletes are recorded."""

    def __init__(self, pods: list[V1Pod], events: list[CoreV1Event], claim_phase: str | None = "Bound") -> None:
        self.pods, self.events, self.claim_phase = pods, events, claim_phase
        self.created: list[str] = []
        self.deleted: list[str] = []

    # CoreV1Api
    def read_namespaced_persistent_volume_claim(self, name, namespace):
        if self.claim_phase is None:
            raise ApiException(status=404, reason="Not Found")
        return V1PersistentVolumeClaim(
            metadata=V1ObjectMeta(name=name, namespace=namespace),
            status=V1PersistentVolumeClaimStatus(phase=self.claim_phase),
        )

    def create_namespaced_service(self, namespace, body, field_validation=None):
        self.created.append(f"Service/{body['metadata']['name']}")

    def list_namespaced_pod(self, namespace, label_selector):
        return V1PodList(items=[] if self.deleted else self.pods)

    def list_namespaced_event(self, namespace, field_selector):
        name = field_selector.removeprefix("involvedObject.name=")
        return CoreV1EventList(items=[e for e in self.events if e.involved_object.name == name])

    # BatchV1Api
    def create_namespaced_job(self, namespace, body, field_validation=None):
        self.created.append(f"Job/{body['metadata']['name']}")
        return V1Job(metadata=V1ObjectMeta(name=body["metadata"]["name"], uid="0d3c5a1e"))

    def read_namespaced_job(self, name, namespace):
        return V1Job(metadata=V1ObjectMeta(name=name), status=V1JobStatus(active=0))

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.deleted.append(f"Job/{name} ({propagation_policy})")


INVENTORY = """\
all:
  vars: {ansible_user: ubuntu}
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 192.168.10.11}
    workers:
      hosts:
        gpu1: {ansible_host: 192.168.10.21, gpu: true}
"""


@pytest.fixture
def cluster(tmp_path, state_dir, monkeypatch):
    """An inventory, its (unused) kubeconfig, and k8s.Client bound to whatever FakeApis the test sets."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    kubeconfig = state_dir / "clusters" / "cp1" / "admin.conf"
    kubeconfig.parent.mkdir(parents=True)
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    holder: dict[str, FakeApis] = {}

    def fake_init(self, path: Path) -> None:
        self.api = ApiClient()
        self.core = self.batch = holder["apis"]
        self.custom = None

    monkeypatch.setattr(kubeclient.Client, "__init__", fake_init)
    return inventory, holder


def _job(state_dir: Path) -> dict:
    (folder,) = (state_dir / "jobs").iterdir()
    return json.loads((folder / "job.json").read_text())


def test_follow_reports_why_pods_wait_then_ends_the_job_at_the_start_deadline(capsys, cluster, state_dir):
    inventory, holder = cluster
    pods = [pending_pod(0, waiting="ImagePullBackOff", message=PULL), pending_pod(1, unscheduled=GPU_SHORT)]
    holder["apis"] = apis = FakeApis(pods, [event(pods[1].metadata.name, "FailedScheduling", GPU_SHORT)])
    started = time.monotonic()
    code = cli.main(
        ["train", "ddp", "-i", str(inventory), "--nodes", "1", "--gpus-per-node", "1", "--image", IMAGE,
         "--follow", "--start-timeout", "1"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert time.monotonic() - started < 60, "ended by the deadline, not left waiting"
    assert "waiting: ImagePullBackOff: Back-off pulling image" in err
    assert "waiting: Unschedulable: 0/3 nodes are available" in err and "Insufficient nvidia.com/gpu" in err
    assert "event FailedScheduling on" in err
    record = _job(state_dir)
    assert record["state"] == "failed" and record["exit_code"] == 1
    assert record["message"].startswith("pods did not start within 1 s (--start-timeout): node 0 (")
    assert "ImagePullBackOff" in record["message"]
    assert apis.deleted == [f"Job/{record['id']} (Foreground)"], "the job was ended"
    assert f"job {record['id']} failed: pods did not start" in err


def test_a_missing_claim_is_refused_before_anything_is_submitted(capsys, cluster, state_dir):
    inventory, holder = cluster
    holder["apis"] = apis = FakeApis([], [], claim_phase=None)
    code = cli.main(["train", "ddp", "-i", str(inventory), "--nodes", "1", "--image", IMAGE, "--follow"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "pyctl: error: the claim 'pyctl-shared' does not exist in namespace default" in err
    assert "--phases storage,addons" in err
    assert apis.created == [] and not (state_dir / "jobs").exists()


def test_an_image_without_a_registry_and_an_unbound_claim_are_warned_about(capsys, cluster, state_dir):
    inventory, holder = cluster
    holder["apis"] = apis = FakeApis([], [], claim_phase="Pending")
    code = cli.main(["train", "ddp", "-i", str(inventory), "--nodes", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: the image 'pyctl-ddp:cpu' names no registry: nodes pull docker.io/library/pyctl-ddp:cpu" in err
    assert "warning: the claim 'pyctl-shared' in namespace default is Pending" in err
    assert apis.created and apis.created[-1].startswith("Service/")

"""pyctl and the real kubernetes client against the Kubernetes API double over HTTPS
(tests/doubles/fake_apiserver.py), where no pod process has to run: the double's REST contract, and the
failures of issue 7 staged in it and reported by `pyctl train ddp --backend k8s --follow --start-timeout`,
Kueue holding a job, `pyctl status`. No root, no lab: seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.doubles.fake_apiserver import ApiServerDouble, NodeSpec
from tests.train.apiserver_support import INVENTORY, api_double, ddp_image
from tests.train.conftest import pyctl, wait_for

FAST = ["--dataset", "digits", "--epochs", "1", "--threads", "1"]


@pytest.fixture
def api(tmp_path):
    with ApiServerDouble(tmp_path / "api", nodes=[NodeSpec("n1"), NodeSpec("n2", gpus=1)]) as double:
        yield double


def _clients(api: ApiServerDouble, path: Path | None = None):
    api_client = config.new_client_from_config(config_file=str(path or api.kubeconfig))
    return api_client, client.CoreV1Api(api_client), client.BatchV1Api(api_client)


def _job(name: str, image: str = "registry.example.org/none:1", **spec) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image, "command": ["true"]}]}
            },
            **spec,
        },
    }


def test_the_real_client_gets_the_api_servers_answers(api):
    api_client, core, _ = _clients(api)
    assert [n.metadata.name for n in core.list_node().items] == ["n1", "n2"]
    assert core.list_node(label_selector="kubernetes.io/hostname in (n2)").items[0].status.allocatable == {
        "cpu": "2",
        "memory": "8Gi",
        "pods": "110",
        "ephemeral-storage": "50Gi",
        "nvidia.com/gpu": "1",
    }
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"app": "x"}}}
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_config_map("default", body)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("b", "default")
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'configmaps "b" not found'
    with pytest.raises(ApiException) as no_namespace:
        core.create_namespaced_config_map("nope", {**body, "metadata": {"name": "a"}})
    assert json.loads(no_namespace.value.body)["message"] == 'namespaces "nope" not found'
    assert [c.metadata.name for c in core.list_namespaced_config_map("default", label_selector="app=x").items] == ["a"]
    assert core.list_namespaced_config_map("default", label_selector="app!=x").items == []

    # Field validation (KEP-2885), through the dynamic client (the typed one refuses unknown fields itself).
    configmaps = DynamicClient(api_client).resources.get(api_version="v1", kind="ConfigMap")
    unknown = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "colour": "red"}}
    with pytest.raises(ApiException) as strict:
        configmaps.create(body=unknown, namespace="default", query_params=[("fieldValidation", "Strict")])
    assert strict.value.status == 400
    assert 'strict decoding error: unknown field "metadata.colour"' in json.loads(strict.value.body)["message"]
    assert configmaps.create(body=unknown, namespace="default").metadata.name == "c"  # Warn: dropped
    assert (
        api.warnings == ['unknown field "metadata.colour"']
        and "colour" not in api.get("", "configmaps", "c")["metadata"]
    )
    jobs = DynamicClient(api_client).resources.get(api_version="batch/v1", kind="Job")
    invalid = _job("bad")
    del invalid["spec"]["template"]["spec"]["containers"]
    with pytest.raises(ApiException) as required:
        jobs.create(body=invalid, namespace="default")
    assert required.value.status == 422
    assert "spec.template.spec.containers: Required value" in json.loads(required.value.body)["message"]


def test_a_watch_streams_changes_after_a_resource_version(api):
    _, core, _ = _clients(api)
    version = core.list_namespaced_config_map("default").metadata.resource_version
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}, "data": {"k": "1"}}
    threading.Timer(0.3, lambda: core.create_namespaced_config_map("default", body)).start()
    threading.Timer(0.6, lambda: core.patch_namespaced_config_map("w", "default", {"data": {"k": "2"}})).start()
    threading.Timer(0.9, lambda: core.delete_namespaced_config_map("w", "default")).start()
    seen = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_config_map, "default", resource_version=version, timeout_seconds=20
    ):
        seen.append((event["type"], event["object"].metadata.name, (event["object"].data or {}).get("k")))
        if event["type"] == "DELETED":
            stream.stop()
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


def test_a_watch_from_a_version_older_than_the_history_is_expired(tmp_path):
    with ApiServerDouble(tmp_path / "api", history=5) as api:
        _, core, _ = _clients(api)
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0"}}
        first = core.create_namespaced_config_map("default", body).metadata.resource_version
        for i in range(1, 10):
            core.create_namespaced_config_map("default", {**body, "metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as expired:
            next(iter(watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=first)))
        assert expired.value.status == 410 and "too old resource version" in str(expired.value)


def test_patches_deletes_and_the_garbage_collector(api):
    api_client, core, batch = _clients(api)
    custom = client.CustomObjectsApi(api_client)
    job = batch.create_namespaced_job("default", _job("gc"))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "gc", "uid": job.metadata.uid}
    core.create_namespaced_config_map("default", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}})
    # Strategic merge patch (what the client sends for a dict body to a built-in kind): pyctl's owner.
    core.patch_namespaced_config_map("s", "default", {"metadata": {"ownerReferences": [owner]}})
    assert api.get("", "configmaps", "s")["metadata"]["ownerReferences"] == [owner]
    pods = core.list_namespaced_pod("default", label_selector="job-name=gc").items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    # A custom resource takes a merge patch; a strategic merge patch is refused (415) as on a real server.
    runtime = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": "rt"},
        "spec": {"template": {"spec": {"replicatedJobs": []}}},
    }
    custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", runtime)
    patched = custom.patch_cluster_custom_object(
        "trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", "rt", {"metadata": {"labels": {"a": "b"}}}
    )
    assert patched["metadata"]["labels"] == {"a": "b"}
    with pytest.raises(ApiException) as strategic:
        custom.patch_cluster_custom_object(
            "trainer.kubeflow.org",
            "v1alpha1",
            "clustertrainingruntimes",
            "rt",
            {"metadata": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert strategic.value.status == 415
    # Foreground: the Job stays, marked, until the collector removed its pods and the ConfigMap it owns.
    batch.delete_namespaced_job("gc", "default", propagation_policy="Foreground")
    wait_for(lambda: api.get("batch", "jobs", "gc") is None, 20, "the foreground deletion to finish")
    assert api.list("", "pods", selector="job-name=gc") == [] and api.get("", "configmaps", "s") is None
    # A Job's own default is to orphan its pods (batch/v1), as `kubectl delete --cascade=orphan` does.
    batch.create_namespaced_job("default", _job("orphan"))
    batch.delete_namespaced_job("orphan", "default")
    orphans = api.list("", "pods", selector="job-name=orphan")
    assert len(orphans) == 2 and all(not p["metadata"].get("ownerReferences") for p in orphans)


def test_credentials_are_checked(api, tmp_path):
    anonymous = yaml.safe_load(api.kubeconfig.read_text())
    anonymous["users"][0]["user"] = {}
    path = tmp_path / "anonymous.conf"
    path.write_text(yaml.safe_dump(anonymous))
    with pytest.raises(ApiException) as forbidden:
        _clients(api, path)[1].list_node()
    assert forbidden.value.status == 403 and 'User "system:anonymous"' in json.loads(forbidden.value.body)["message"]
    anonymous["users"][0]["user"] = {"token": "abcdef.0123456789abcdef"}
    path.write_text(yaml.safe_dump(anonymous))
    with pytest.raises(ApiException) as unauthorized:
        _clients(api, path)[1].list_node()
    assert unauthorized.value.status == 401


# --- pyctl through its CLI ----------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    state = tmp_path / "state"
    with api_double(
        tmp_path / "api",
        state,
        inventory,
        images={"pyctl-ddp:cpu": ddp_image()},
        claims={"pyctl-shared": tmp_path / "share"},
        local_queues={"team-a": "cq"},
        quotas={"cq": {"pods": 1}},
    ) as api:
        api.add_claim("slow-claim", bound=False)

        def run(*args: str, timeout: float = 120):
            return pyctl(state, *args, timeout=timeout)

        yield api, inventory, run


def _ddp(inventory: Path, *args: str) -> list[str]:
    return ["train", "ddp", "-i", str(inventory), "--backend", "k8s", "--nodes", "2", *FAST, *args]


def _job_id(stderr: str) -> str:
    return next(line.split()[3] for line in stderr.splitlines() if " submitted: " in line)


def test_an_image_that_cannot_be_pulled_is_reported_and_the_job_deleted(cli):
    api, inventory, run = cli
    image = "registry.example.org/pyctl/ddp:missing"
    result = run(*_ddp(inventory, "--image", image, "--follow", "--start-timeout", "3"))
    assert result.returncode == 1, result
    assert "waiting: ImagePullBackOff: Back-off pulling image" in result.stderr, result
    assert f"event Failed on {_job_id(result.stderr)}-0-" in result.stderr
    assert f'Failed to pull image "{image}": rpc error: code = NotFound' in result.stderr
    assert "can every node pull" in result.stderr and "pods did not start within 3 s" in result.stderr
    wait_for(lambda: api.list("batch", "jobs") == [], 20, "the job to be deleted")
    assert api.list("", "pods") == [] and api.warnings == []


def test_more_gpus_than_a_node_has_is_unschedulable(cli):
    api, inventory, run = cli
    result = run(
        *_ddp(inventory, "--gpus-per-node", "2", "--image", "pyctl-ddp:cpu", "--follow", "--start-timeout", "3")
    )
    assert result.returncode == 1, result
    assert "waiting: Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in result.stderr, result
    assert "event FailedScheduling on" in result.stderr
    assert "fewer free GPUs than --gpus-per-node" in result.stderr
    wait_for(lambda: api.list("batch", "jobs") == [], 20, "the job to be deleted")


def test_an_unbound_claim_is_warned_about_and_reported(cli):
    _, inventory, run = cli
    result = run(*_ddp(inventory, "--claim", "slow-claim", "--follow", "--start-timeout", "3"))
    assert result.returncode == 1, result
    assert "warning: the claim 'slow-claim' in namespace default is Pending" in result.stderr
    assert "pod has unbound immediate PersistentVolumeClaims" in result.stderr
    assert "the claim is not bound to a volume yet" in result.stderr


def test_a_missing_claim_is_refused_before_submitting(cli):
    api, inventory, run = cli
    result = run(*_ddp(inventory, "--claim", "nope"))
    assert result.returncode == 2, result
    assert "pyctl: error: the claim 'nope' does not exist in namespace default" in result.stderr
    assert api.list("batch", "jobs") == []


def test_a_pod_whose_claim_is_missing_gets_the_schedulers_event(api):
    """The scheduler's side of a missing claim (pyctl refuses before, above; a claim deleted later)."""
    _, core, batch = _clients(api)
    job = _job("noclaim")
    job["spec"]["template"]["spec"]["volumes"] = [{"name": "s", "persistentVolumeClaim": {"claimName": "gone"}}]
    batch.create_namespaced_job("default", job)
    pod = core.list_namespaced_pod("default", label_selector="job-name=noclaim").items[0]
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={pod.metadata.name}").items
    assert [(e.type, e.reason) for e in events] == [("Warning", "FailedScheduling")]
    assert events[0].message.startswith('0/2 nodes are available: persistentvolumeclaim "gone" not found.')
    assert pod.status.phase == "Pending" and pod.status.conditions[0].reason == "Unschedulable"
    with pytest.raises(ApiException) as waiting:
        core.read_namespaced_pod_log(pod.metadata.name, "default")
    assert waiting.value.status == 400 and "is waiting to start: ContainerCreating" in waiting.value.body


def test_kueue_holds_a_job_its_queue_has_no_quota_for(cli):
    api, inventory, run = cli
    result = run(*_ddp(inventory, "--queue", "team-a"))
    assert result.returncode == 0, result
    job_id = result.stdout.strip()
    job = api.get("batch", "jobs", job_id)
    assert job["spec"]["suspend"] is True and api.list("", "pods") == []
    status = run("train", "status", job_id, "--json")
    record = json.loads(status.stdout)
    assert record["state"] == "queued", status
    assert record["message"] == (
        "waiting for admission in queue team-a: couldn't assign flavors to pod set main: insufficient unused "
        "quota for pods in flavor default-flavor, 1 more needed"
    )
    other = run(*_ddp(inventory, "--queue", "nope"))
    state = json.loads(run("train", "status", other.stdout.strip(), "--json").stdout)
    assert state["message"] == "waiting for admission in queue nope: LocalQueue nope doesn't exist"
    cancel = run("train", "cancel", job_id)
    assert cancel.returncode == 0, cancel
    wait_for(lambda: api.get("batch", "jobs", job_id) is None, 20, "the job to be deleted")
    assert [w["spec"]["queueName"] for w in api.list("kueue.x-k8s.io", "workloads")] == ["nope"]


def test_kueue_holds_a_trainjob_then_admits_it_when_quota_frees(cli):
    api, inventory, run = cli
    image = ("--image", "registry.example.org/pyctl/ddp:missing")  # admitted pods stay Pending: nothing runs
    result = run(*_ddp(inventory, "--kind", "trainjob", "--with-runtime", "--queue", "team-a", *image))
    assert result.returncode == 0, result
    job_id = result.stdout.strip()
    record = json.loads(run("train", "status", job_id, "--json").stdout)
    assert record["state"] == "queued" and "insufficient unused quota for pods" in record["message"], record
    assert api.list("batch", "jobs") == []
    api.set_quota("cq", {"pods": 2})
    assert api.get("trainer.kubeflow.org", "trainjobs", job_id)["spec"]["suspend"] is False
    assert len(api.list("", "pods", selector=f"jobset.sigs.k8s.io/jobset-name={job_id}")) == 2
    record = json.loads(run("train", "status", job_id, "--json").stdout)
    assert record["state"] == "running", record


def test_pyctl_status_reads_the_cluster_through_the_double(cli):
    api, inventory, run = cli
    result = run("status", "-i", str(inventory), "--json")
    assert result.returncode == 0, result
    overview = json.loads(result.stdout)
    assert overview["server"] == api.server
    assert [(n["name"], n["status"], n["gpus"], n["version"]) for n in overview["nodes"]] == [
        ("cp1", "Ready", 0, "v1.36.0"),
        ("w1", "Ready", 1, "v1.36.0"),
        ("w2", "Ready", 1, "v1.36.0"),
    ]
    assert ("GET", "/api/v1/pods") in api.requests and ("GET", "/apis/apps/v1/daemonsets") in api.requests


def _kubectl() -> Path:
    """kubectl 1.36 as scripts/setup --dev installs it (Debian sid's build, in the venv's bin)."""
    path = Path(sys.executable).parent / "kubectl"
    version = (
        subprocess.run([path, "version", "--client"], capture_output=True, text=True, check=False)
        if path.is_file()
        else None
    )
    if version is None or "Client Version: v1.36." not in version.stdout:
        reason = f"kubectl 1.36 is not at {path}: run scripts/setup --dev"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_the_real_kubectl_reads_and_applies_through_the_double(api, tmp_path):
    kubectl = [str(_kubectl()), "--kubeconfig", str(api.kubeconfig)]
    nodes = subprocess.run([*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True, check=False)
    assert (nodes.returncode, nodes.stdout.split()) == (0, ["node/n1", "node/n2"]), nodes.stderr
    table = subprocess.run([*kubectl, "get", "nodes"], capture_output=True, text=True, check=False)
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        ["n1", "Ready", "<none>", table.stdout.split()[8], "v1.36.0"],
        ["n2", "Ready", "<none>", table.stdout.split()[13], "v1.36.0"],
    ], table.stderr
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  a: b\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  labelz: {}\n"
    )
    applied = subprocess.run([*kubectl, "apply", "-f", str(manifest)], capture_output=True, text=True, check=False)
    assert applied.returncode == 1 and applied.stdout.strip() == "configmap/hello created", applied
    assert applied.stderr.strip() == (
        f'Error from server (BadRequest): error when creating "{manifest}": ConfigMap in version "v1" cannot be '
        'handled as a ConfigMap: strict decoding error: unknown field "metadata.labelz"'
    )
    assert api.get("", "configmaps", "hello")["data"] == {"a": "b"} and api.get("", "configmaps", "typo") is None
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  a: c\n")
    again = subprocess.run([*kubectl, "apply", "-f", str(manifest)], capture_output=True, text=True, check=False)
    assert (again.returncode, again.stdout.strip()) == (0, "configmap/hello configured"), again
    assert api.get("", "configmaps", "hello")["data"] == {"a": "c"}


def test_a_trainjob_and_pyctls_runtime_are_validated_stored_and_cancelled(cli):
    """Kubeflow Trainer v2.3.0 kinds: created with fieldValidation=Strict against the pinned CRDs; the
    TrainJob's node Job and pods are made (their image cannot be pulled here: nothing runs)."""
    api, inventory, run = cli
    image = ("--image", "registry.example.org/pyctl/ddp:missing")
    result = run(*_ddp(inventory, "--kind", "trainjob", "--with-runtime", *image))
    assert result.returncode == 0, result
    job_id = result.stdout.strip()
    assert api.get("trainer.kubeflow.org", "clustertrainingruntimes", "pyctl-torch") is not None
    trainjob = api.get("trainer.kubeflow.org", "trainjobs", job_id)
    assert trainjob["spec"]["runtimeRef"]["name"] == "pyctl-torch"
    assert ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/default/trainjobs") in api.requests
    pods = api.list("", "pods", selector=f"jobset.sigs.k8s.io/jobset-name={job_id}")
    assert sorted(p["spec"]["hostname"] for p in pods) == [f"{job_id}-node-0-0", f"{job_id}-node-0-1"]
    again = run(*_ddp(inventory, "--kind", "trainjob", "--with-runtime", *image))  # the runtime exists: merge-patched
    assert again.returncode == 0, again
    assert json.loads(run("train", "status", job_id, "--json").stdout)["state"] == "running"
    assert run("train", "cancel", job_id).returncode == 0
    wait_for(lambda: api.get("trainer.kubeflow.org", "trainjobs", job_id) is None, 20, "the TrainJob to go")
    assert api.list("", "pods", selector=f"jobset.sigs.k8s.io/jobset-name={job_id}") == []
    assert api.warnings == []

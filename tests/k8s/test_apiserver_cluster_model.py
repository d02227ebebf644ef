"""The fake cluster's model inside the HTTPS API double (issue 14, section 5's seam, step c), in process.

Nodes join through kubeadm's REST flow (tests/doubles/kubeadm_rest.py) with their host's facts, and the real kubectl
(Debian's 1.36) applies pyctl's golden manifests over TLS: the same judgements as tests/k8s/test_doubles.py makes of
the fake cluster (nodes NotReady until flannel runs with the pod CIDR; nvidia.com/gpu only where the device plugin
runs with the nvidia runtime; the acceptance gate's pods succeed only on a working cluster, a reader fails unless the
other node wrote through the claim), now made by the API double's controllers (one model: fake_cluster.Cluster).
A Job's pods go to the joined nodes the scheduler would find feasible, and run through the kubelet stand-in in the
network namespace the double was given for each node (the e2e's lab: its workers' own namespaces).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, unique_lab_name, wait_for
from tests.doubles import kubeadm_rest
from tests.doubles.fake_apiserver import ApiServerDouble, Image
from tests.doubles.fake_cluster import CP_TAINT, NOT_READY

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sample"
KUBECTL = Path(sys.executable).parent / "kubectl"  # Debian sid's 1.36 build, as scripts/setup --dev installs it
NVIDIA = {"runc": "", "nvidia": "/usr/bin/nvidia-container-runtime"}
WORKERS = {"gpu1": 2, "gpu2": 8, "cpu1": 0}
WORKER_ADDRESSES = {"gpu1": "10.250.8.11", "gpu2": "10.250.8.12", "cpu1": "10.250.8.13"}
IMAGE = "pyctl-test:cpu"
CLUSTER = {
    "apiVersion": "kubeadm.k8s.io/v1beta4",
    "kind": "ClusterConfiguration",
    "kubernetesVersion": "v1.36.1",
    "networking": {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"},
}


@pytest.fixture
def api(tmp_path: Path):
    if not KUBECTL.is_file():
        pytest.skip(f"kubectl 1.36 is not at {KUBECTL}: run scripts/setup --dev")
    with ApiServerDouble(tmp_path / "api", nodes=[], images={IMAGE: Image({})}, master_delay_s=0.2) as double:
        admin = kubeadm_rest.Api.from_kubeconfig(double.kubeconfig.read_text())
        ca = double.pki["ca.crt"].read_bytes()
        kubeadm_rest.upload_kubeadm_config(admin, CLUSTER)
        control_plane = kubeadm_rest.node_object(
            "cp1", {"node-role.kubernetes.io/control-plane": ""}, [CP_TAINT], {"runtimes": {"runc": ""}}
        )
        assert admin.call("POST", "/api/v1/nodes", control_plane)[0] == 201
        kubeadm_rest.upload_cluster_info(admin, double.server, ca)
        token = kubeadm_rest.create_token(admin, "15m0s", "test")
        endpoint = double.server.removeprefix("https://")
        for name, gpus in WORKERS.items():
            found, server = kubeadm_rest.discover(endpoint, token, [kubeadm_rest.ca_hash(ca)], timeout=30)
            labels = {"nvidia.com/gpu.present": "true"} if gpus else {}
            facts = {"gpus": gpus, "runtimes": NVIDIA if gpus else {"runc": ""}, "default_runtime": "runc"}
            facts["address"] = WORKER_ADDRESSES[name]
            kubeadm_rest.register_node(server, found, token, kubeadm_rest.node_object(name, labels, None, facts))
        yield double
        assert not [w for w in double.warnings if w.startswith(("controller error", "server error"))]


def kubectl(api: ApiServerDouble, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(api.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply(api: ApiServerDouble, text: str) -> str:
    return kubectl(api, "apply", "-f", "-", stdin=text)


def nodes(api: ApiServerDouble) -> dict[str, dict]:
    items = json.loads(kubectl(api, "get", "nodes", "-o", "json"))["items"]
    return {n["metadata"]["name"]: n for n in items if n["metadata"]["name"] in WORKERS}


def ready(node: dict) -> dict:
    return next(c for c in node["status"].get("conditions") or [] if c["type"] == "Ready")


def daemonset_seen(api: ApiServerDouble, namespace: str, name: str) -> bool:
    """The double's controllers have judged the DaemonSet as it is now (its status carries the model's counts)."""
    ds = api.get("apps", "daemonsets", name, namespace)
    return ds is not None and "desiredNumberScheduled" in (ds.get("status") or {})


def test_joined_nodes_are_not_ready_until_flannel_runs_with_kubeadms_pod_cidr(api):
    assert wait_for(lambda: all(ready(n).get("message") == NOT_READY for n in nodes(api).values()))
    flannel = (GOLDEN / "flannel.yaml").read_text()
    apply(api, flannel.replace('"Network": "10.244.0.0/16"', '"Network": "10.99.0.0/16"'))
    assert wait_for(lambda: daemonset_seen(api, "kube-flannel", "kube-flannel-ds"))
    assert {ready(n)["status"] for n in nodes(api).values()} == {"False"}
    apply(api, flannel)
    assert wait_for(lambda: {ready(n)["status"] for n in nodes(api).values()} == {"True"})
    assert ready(api.get("", "nodes", "cp1", ""))["status"] == "True"


def test_gpus_appear_only_where_the_device_plugin_runs_with_the_nvidia_runtime(api):
    apply(api, (GOLDEN / "flannel.yaml").read_text())
    assert wait_for(lambda: {ready(n)["status"] for n in nodes(api).values()} == {"True"})
    plugin = (GOLDEN / "nvidia-device-plugin.yaml").read_text()
    apply(api, yaml.safe_dump_all([d for d in yaml.safe_load_all(plugin) if d and d["kind"] == "DaemonSet"]))
    assert wait_for(lambda: daemonset_seen(api, "kube-system", "nvidia-device-plugin-daemonset"))
    assert "nvidia.com/gpu" not in nodes(api)["gpu1"]["status"]["allocatable"]
    # admission refuses the DaemonSet's pods while their RuntimeClass does not exist: none runs
    assert json.loads(kubectl(api, "get", "pods", "-n", "kube-system", "-o", "json"))["items"] == []
    apply(api, plugin)
    assert wait_for(lambda: nodes(api)["gpu2"]["status"]["allocatable"].get("nvidia.com/gpu") == "8")
    allocatable = {name: n["status"]["allocatable"] for name, n in nodes(api).items()}
    assert allocatable["gpu1"]["nvidia.com/gpu"] == "2" and "nvidia.com/gpu" not in allocatable["cpu1"]
    ds = api.get("apps", "daemonsets", "nvidia-device-plugin-daemonset", "kube-system")
    assert ds["status"]["numberReady"] == 2
    pods = json.loads(kubectl(api, "get", "pods", "-n", "kube-system", "-o", "json"))["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["gpu1", "gpu2"]
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"DaemonSet"}


SELECTOR = "app.kubernetes.io/managed-by=pyctl-verify"


def phases(api: ApiServerDouble) -> dict[str, str]:
    items = json.loads(kubectl(api, "get", "pods", "-n", "default", "-l", SELECTOR, "-o", "json"))["items"]
    return {p["metadata"]["name"]: p["status"]["phase"] for p in items}


def test_the_verify_pods_succeed_only_on_a_working_cluster(api):
    """test_doubles' judgement of the acceptance gate's pods, through the API double and the real kubectl."""
    runtime_class = [d for d in yaml.safe_load_all((GOLDEN / "nvidia-device-plugin.yaml").read_text()) if d]
    apply(api, yaml.safe_dump_all([d for d in runtime_class if d["kind"] == "RuntimeClass"]))
    apply(api, (GOLDEN / "round1.yaml").read_text())  # no pod network yet
    assert set(phases(api).values()) == {"Failed"}
    kubectl(api, "delete", "pods", "-n", "default", "-l", SELECTOR)
    apply(api, (GOLDEN / "flannel.yaml").read_text())
    assert wait_for(lambda: {ready(n)["status"] for n in nodes(api).values()} == {"True"})
    apply(api, (GOLDEN / "round1.yaml").read_text())  # the network, but no claim yet and no device plugin
    found = phases(api)
    assert found["pyctl-verify-smoke"] == "Succeeded"
    assert found["pyctl-verify-write-0"] == "Pending" and found["pyctl-verify-gpu-0"] == "Failed"
    kubectl(api, "delete", "pods", "-n", "default", "-l", SELECTOR)
    for name in ("nvidia-device-plugin.yaml", "shared-storage.yaml"):
        apply(api, (GOLDEN / name).read_text())
    assert wait_for(lambda: nodes(api)["gpu2"]["status"]["allocatable"].get("nvidia.com/gpu") == "8")
    claim = "persistentvolumeclaims"
    assert wait_for(lambda: api.list("", claim, "default")[0].get("status", {}).get("phase") == "Bound")
    for name in ("round1.yaml", "round2.yaml"):
        apply(api, (GOLDEN / name).read_text())
    assert len(phases(api)) == 7 and set(phases(api).values()) == {"Succeeded"}


def test_a_reader_fails_when_the_other_node_never_wrote(api):
    for name in ("flannel.yaml", "shared-storage.yaml"):
        apply(api, (GOLDEN / name).read_text())
    assert wait_for(lambda: {ready(n)["status"] for n in nodes(api).values()} == {"True"})
    apply(api, (GOLDEN / "round2.yaml").read_text())
    readers = {name: phase for name, phase in phases(api).items() if name.startswith("pyctl-verify-read")}
    assert readers and set(readers.values()) == {"Failed"}


def test_a_joined_node_takes_the_device_plugins_label_as_the_role_applies_it(api):
    """nvidia_device_plugin's label.yml: `kubectl label node N KEY=true --overwrite`, "not labeled" when unchanged;
    the model's status of a joined node passes the API server's validation of the whole Node on every patch."""
    assert wait_for(lambda: ready(nodes(api)["gpu1"]).get("message") == NOT_READY)
    label = ("label", "node", "gpu1", "nvidia.com/gpu.present=true", "--overwrite")
    assert kubectl(api, *label).strip() == "node/gpu1 not labeled"  # it joined with the label
    assert kubectl(api, "label", "node", "cpu1", "pyctl.io/test=yes", "--overwrite").strip() == "node/cpu1 labeled"
    assert api.get("", "nodes", "cpu1", "")["metadata"]["labels"]["pyctl.io/test"] == "yes"


# --- Jobs on joined nodes: the scheduler's choice, then the kubelet stand-in in each node's host namespace ---------


def job(name: str, completions: int, gpus: int = 0, command: str = "true") -> str:
    container = {"name": "main", "image": IMAGE, "command": ["sh", "-c", command]}
    container["env"] = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return yaml.safe_dump(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "completionMode": "Indexed",
                "completions": completions,
                "parallelism": completions,
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
            },
        }
    )


def events(api: ApiServerDouble, reason: str, job_name: str) -> list[str]:
    """The messages of `reason` events about the job's pods, by completion index."""
    pods = {p["metadata"]["uid"]: p for p in api.list("", "pods", "default", f"job-name={job_name}")}
    found = [
        (
            int(
                pods[e["involvedObject"]["uid"]]["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            ),
            e["message"],
        )
        for e in api.list("", "events", "default")
        if e["reason"] == reason and e["involvedObject"].get("uid") in pods
    ]
    return [message for _, message in sorted(found)]


def working(api: ApiServerDouble) -> None:
    """flannel and the device plugin applied: every node Ready, the GPU nodes advertising their GPUs."""
    for name in ("flannel.yaml", "nvidia-device-plugin.yaml"):
        apply(api, (GOLDEN / name).read_text())
    assert wait_for(lambda: nodes(api)["gpu2"]["status"]["allocatable"].get("nvidia.com/gpu") == "8")
    assert wait_for(lambda: {ready(n)["status"] for n in nodes(api).values()} == {"True"})


def test_a_jobs_pods_go_to_the_ready_joined_nodes_that_fit_them(api):
    apply(api, job("early", 1))  # no pod network yet: every node NotReady
    assert wait_for(lambda: events(api, "FailedScheduling", "early"))
    assert events(api, "FailedScheduling", "early")[0].startswith("0/4 nodes are available")
    working(api)
    # cp1 keeps kubeadm's control-plane taint, which the pods do not tolerate; the rest by name
    apply(api, job("cpu", 3))
    assert wait_for(lambda: len(events(api, "Scheduled", "cpu")) == 3)
    assert [m.rsplit(" ", 1)[1] for m in events(api, "Scheduled", "cpu")] == ["cpu1", "gpu1", "gpu2"]
    apply(api, job("gpu", 2, gpus=2))  # only the nodes with 2 allocatable GPUs fit
    assert wait_for(lambda: len(events(api, "Scheduled", "gpu")) == 2)
    assert [m.rsplit(" ", 1)[1] for m in events(api, "Scheduled", "gpu")] == ["gpu1", "gpu2"]
    apply(api, job("big", 1, gpus=9))
    assert wait_for(lambda: events(api, "FailedScheduling", "big"))
    assert "Insufficient nvidia.com/gpu" in events(api, "FailedScheduling", "big")[0]
    # no host namespace was named for these nodes: the kubelet cannot make the pods' sandboxes
    assert wait_for(lambda: len(events(api, "FailedCreatePodSandBox", "cpu")) == 3)
    assert "node cpu1 has no network namespace" in events(api, "FailedCreatePodSandBox", "cpu")[0]


@pytest.fixture
def host_namespaces():
    """Two network namespaces standing in for the lab hosts of cpu1 and gpu1."""
    require_root()
    names = {node: f"pyctl-{unique_lab_name('jn')}" for node in ("cpu1", "gpu1")}
    try:
        for node, name in names.items():
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "-n", name, "addr", "add", f"{WORKER_ADDRESSES[node]}/32", "dev", "lo"], check=True)
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_jobs_pods_run_as_processes_in_their_nodes_host_namespaces(api, host_namespaces):
    api.namespaces.update(host_namespaces)
    working(api)
    apply(api, job("where", 2, command='echo "$NODE $JOB_COMPLETION_INDEX $(readlink /proc/self/ns/net)"'))
    assert wait_for(lambda: (api.get("batch", "jobs", "where") or {}).get("status", {}).get("succeeded") == 2, 60)
    job_status = api.get("batch", "jobs", "where")["status"]
    assert [c["type"] for c in job_status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    for pod in api.list("", "pods", "default", "job-name=where"):
        node = pod["spec"]["nodeName"]
        index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        inode = Path(f"/run/netns/{host_namespaces[node]}").stat().st_ino
        log = kubectl(api, "logs", "-n", "default", pod["metadata"]["name"]).strip()
        assert log == f"{node} {index} net:[{inode}]"
        assert pod["status"]["phase"] == "Succeeded" and pod["status"]["podIP"] == WORKER_ADDRESSES[node]

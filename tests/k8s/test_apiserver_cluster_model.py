"""The fake cluster's model inside the HTTPS API double (issue 14, section 5's seam, step c), in process.

Nodes join through kubeadm's REST flow (tests/doubles/kubeadm_rest.py) with their host's facts, and the real kubectl
(Debian's 1.36) applies pyctl's golden manifests over TLS: the same judgements as tests/k8s/test_doubles.py makes of
the fake cluster (nodes NotReady until flannel runs with the pod CIDR; nvidia.com/gpu only where the device plugin
runs with the nvidia runtime; the acceptance gate's pods succeed only on a working cluster, a reader fails unless the
other node wrote through the claim), now made by the API double's controllers (one model: fake_cluster.Cluster).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import wait_for
from tests.doubles import kubeadm_rest
from tests.doubles.fake_apiserver import ApiServerDouble
from tests.doubles.fake_cluster import CP_TAINT, NOT_READY

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sample"
KUBECTL = Path(sys.executable).parent / "kubectl"  # Debian sid's 1.36 build, as scripts/setup --dev installs it
NVIDIA = {"runc": "", "nvidia": "/usr/bin/nvidia-container-runtime"}
WORKERS = {"gpu1": 2, "gpu2": 8, "cpu1": 0}
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
    with ApiServerDouble(tmp_path / "api", nodes=[]) as double:
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

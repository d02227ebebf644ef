"""The test doubles themselves, in-process: the fake cluster's model behaves like the real components in
the ways the lab tests rely on, and the small schema validator the kubeadm double carries agrees with
the `jsonschema` package. The golden renders are what they are fed, so the doubles model pyctl's own
manifests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.doubles import kubeadm_config
from tests.doubles.fake_cluster import Cluster

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sample"


def text(name: str) -> str:
    return (GOLDEN / name).read_text()


@pytest.fixture
def cluster(tmp_path) -> Cluster:
    fake = Cluster(tmp_path / "state.json")
    fake.init(
        {
            "cluster": {
                "podSubnet": "10.244.0.0/16",
                "serviceSubnet": "10.96.0.0/12",
                "controlPlaneEndpoint": "192.168.10.11:6443",
                "clusterName": "sample",
                "kubernetesVersion": "v1.36.1",
            },
            "ca_hash": "sha256:" + "0" * 64,
            "node": {"name": "cp1", "control_plane": True, "address": "192.168.10.11"},
        }
    )
    for name, gpus in (("gpu1", 2), ("gpu2", 8), ("cpu1", 0)):
        labels = {"nvidia.com/gpu.present": "true"} if gpus else {}
        runtimes = {"runc": "", "nvidia": "/usr/bin/nvidia-container-runtime"} if gpus else {"runc": ""}
        token = fake.token_create({"ttl": "15m0s"})["join"].split("--token ")[1].split()[0]
        answer = fake.join(
            {
                "token": token,
                "ca_hashes": ["sha256:" + "0" * 64],
                "node": {"name": name, "labels": labels, "gpus": gpus, "runtimes": runtimes},
            }
        )
        assert answer == {"ok": True}
    return fake


def get(fake: Cluster, kinds: str) -> list[dict]:
    rc, out, err = fake.kubectl(["get", kinds, "--all-namespaces", "-o", "json"], {})
    assert rc == 0, err
    return json.loads(out)["items"]


def apply(fake: Cluster, name: str, content: str | None = None) -> str:
    rc, out, err = fake.kubectl(["apply", "-f", name], {name: content if content is not None else text(name)})
    assert rc == 0, err
    return out


def test_nodes_are_not_ready_until_flannel_runs_with_the_pod_cidr(cluster):
    assert {n["status"]["conditions"][-1]["status"] for n in get(cluster, "nodes")} == {"False"}
    wrong = text("flannel.yaml").replace('"Network": "10.244.0.0/16"', '"Network": "10.99.0.0/16"')
    apply(cluster, "flannel.yaml", wrong)
    assert {n["status"]["conditions"][-1]["status"] for n in get(cluster, "nodes")} == {"False"}
    assert "configured" in apply(cluster, "flannel.yaml")
    assert {n["status"]["conditions"][-1]["status"] for n in get(cluster, "nodes")} == {"True"}
    assert "unchanged" in apply(cluster, "flannel.yaml") and "created" not in apply(cluster, "flannel.yaml")


def test_gpus_appear_only_where_the_device_plugin_runs_with_the_nvidia_runtime(cluster):
    apply(cluster, "flannel.yaml")
    without_class = [d for d in yaml.safe_load_all(text("nvidia-device-plugin.yaml")) if d and d["kind"] == "DaemonSet"]
    apply(cluster, "plugin.yaml", yaml.safe_dump_all(without_class))  # no RuntimeClass object yet
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")}
    assert "nvidia.com/gpu" not in nodes["gpu1"]["status"]["allocatable"]
    # admission refuses the DaemonSet's pods while their RuntimeClass does not exist: none runs
    assert [p for p in get(cluster, "pods") if p["metadata"]["namespace"] == "kube-system"] == []
    apply(cluster, "nvidia-device-plugin.yaml")
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")}
    assert nodes["gpu1"]["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert nodes["gpu2"]["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in nodes["cpu1"]["status"]["allocatable"]
    daemonsets = {d["metadata"]["name"]: d["status"] for d in get(cluster, "daemonsets")}
    assert daemonsets["nvidia-device-plugin-daemonset"]["numberReady"] == 2


def runtime_class_only() -> str:
    return yaml.safe_dump_all(
        [d for d in yaml.safe_load_all(text("nvidia-device-plugin.yaml")) if d and d["kind"] == "RuntimeClass"]
    )


def test_the_verify_pods_succeed_only_on_a_working_cluster(cluster):
    selector = ["-n", "default", "-l", "app.kubernetes.io/managed-by=pyctl-verify"]
    apply(cluster, "runtimeclass.yaml", runtime_class_only())
    apply(cluster, "round1.yaml")  # no pod network yet
    assert {p["status"]["phase"] for p in get(cluster, "pods")} == {"Failed"}
    cluster.kubectl(["delete", "pods", *selector], {})
    apply(cluster, "flannel.yaml")
    apply(cluster, "round1.yaml")  # the network, but no claim yet and no device plugin
    phases = {
        p["metadata"]["name"]: p["status"]["phase"] for p in get(cluster, "pods") if "verify" in p["metadata"]["name"]
    }
    assert phases["pyctl-verify-smoke"] == "Succeeded"
    assert phases["pyctl-verify-write-0"] == "Pending" and phases["pyctl-verify-gpu-0"] == "Failed"
    cluster.kubectl(["delete", "pods", *selector], {})
    for name in ("flannel.yaml", "nvidia-device-plugin.yaml", "shared-storage.yaml", "round1.yaml", "round2.yaml"):
        apply(cluster, name)
    pods = [p for p in get(cluster, "pods") if p["metadata"]["name"].startswith("pyctl-verify")]
    assert len(pods) == 7 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    claims = get(cluster, "persistentvolumeclaims")
    assert claims[0]["status"]["phase"] == "Bound"


def test_a_reader_fails_when_the_other_node_never_wrote(cluster):
    for name in ("flannel.yaml", "shared-storage.yaml", "round2.yaml"):
        apply(cluster, name)
    readers = [p for p in get(cluster, "pods") if p["metadata"]["name"].startswith("pyctl-verify-read")]
    assert {p["status"]["phase"] for p in readers} == {"Failed"}


def test_joins_check_the_token_its_lifetime_and_the_ca_hash(cluster):
    node = {"name": "late", "gpus": 0}
    assert "is invalid" in cluster.join({"token": "abcdef.0123456789abcdef", "ca_hashes": [], "node": node})["error"]
    token = cluster.token_create({"ttl": "15m0s"})["join"].split("--token ")[1].split()[0]
    assert "not pinned" in cluster.join({"token": token, "ca_hashes": ["sha256:" + "1" * 64], "node": node})["error"]
    cluster.data["tokens"][token.split(".")[0]]["expires"] = 0
    assert "expired" in cluster.join({"token": token, "ca_hashes": ["sha256:" + "0" * 64], "node": node})["error"]


def test_labels_report_whether_they_changed(cluster):
    assert cluster.kubectl(["label", "node", "cpu1", "a=b", "--overwrite"], {})[1] == "node/cpu1 labeled"
    assert cluster.kubectl(["label", "node", "cpu1", "a=b", "--overwrite"], {})[1] == "node/cpu1 not labeled"
    assert cluster.kubectl(["label", "node", "nope", "a=b"], {})[0] == 1


# --- the kubeadm double's validator ---------------------------------------------------------------


def mutations() -> list[tuple[str, dict]]:
    init, cluster, kubelet = [d for d in yaml.safe_load_all(text("kubeadm-config.yaml")) if d]
    (join,) = [d for d in yaml.safe_load_all(text("join.yaml")) if d]
    cases = [("init", init), ("cluster", cluster), ("kubelet", kubelet), ("join", join)]
    bad = []
    for label, doc, change in [
        ("unknown field", cluster, lambda d: d["networking"].update(podCIDR="10.0.0.0/8")),
        ("wrong type", init, lambda d: d["localAPIEndpoint"].update(bindPort="6443")),
        ("bad enum", kubelet, lambda d: d.update(cgroupDriver="systemd-ish")),
        ("bad duration", init, lambda d: d["bootstrapTokens"][0].update(ttl="ten minutes")),
        ("nested unknown", join, lambda d: d["discovery"]["bootstrapToken"].update(caCertHash="x")),
        ("wrong list item", cluster, lambda d: d["apiServer"].update(certSANs=[1])),
    ]:
        mutated = copy.deepcopy(doc)
        change(mutated)
        bad.append((label, mutated))
    return [(label, doc, True) for label, doc in cases] + [(label, doc, False) for label, doc in bad]


@pytest.mark.parametrize(("label", "doc", "valid"), mutations(), ids=[m[0] for m in mutations()])
def test_the_small_validator_agrees_with_jsonschema(label, doc, valid):
    schema = kubeadm_config.schema(doc["apiVersion"], doc["kind"])
    ours = kubeadm_config.schema_problems(doc, schema, schema)
    theirs = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    assert (not ours) == (not theirs) == valid, (ours, [e.message for e in theirs])


def test_meaning_checks_catch_what_kubeadm_would_refuse():
    (join,) = [d for d in yaml.safe_load_all(text("join.yaml")) if d]
    join["discovery"]["bootstrapToken"].update(caCertHashes=[], unsafeSkipCAVerification=True, token="abc")
    problems = kubeadm_config.meaning_problems(join)
    assert any("caCertHashes: empty" in p for p in problems)
    assert any("unsafeSkipCAVerification" in p for p in problems)
    assert any("not a bootstrap token" in p for p in problems)
    cluster = [d for d in yaml.safe_load_all(text("kubeadm-config.yaml")) if d][1]
    cluster["networking"]["serviceSubnet"] = "10.244.0.0/12"
    assert any("is not a valid CIDR" in p for p in kubeadm_config.meaning_problems(cluster))
    cluster["networking"]["serviceSubnet"] = "10.240.0.0/12"
    assert any("overlaps" in p for p in kubeadm_config.meaning_problems(cluster))


def test_admission_refuses_a_pod_whose_runtime_class_does_not_exist(cluster):
    apply(cluster, "flannel.yaml")
    rc, out, err = cluster.kubectl(["apply", "-f", "round1.yaml"], {"round1.yaml": text("round1.yaml")})
    assert rc == 1 and 'pods "pyctl-verify-gpu-0" is forbidden: pod rejected: RuntimeClass "nvidia" not found' in err
    assert "pod/pyctl-verify-smoke created" in out  # the other objects of the file are applied


def test_a_runtime_class_whose_handler_the_nodes_containerd_lacks_is_reported(cluster):
    """The handler must name a runtime of the node's containerd configuration (`containerd config dump`)."""
    cluster.data["nodes"]["gpu1"]["runtimes"] = {"runc": ""}  # the nvidia drop-in lost on gpu1
    for name in ("flannel.yaml", "nvidia-device-plugin.yaml"):
        apply(cluster, name)
    plugin = {
        p["spec"]["nodeName"]: p for p in get(cluster, "pods") if p["metadata"]["name"].startswith("nvidia-device")
    }
    waiting = plugin["gpu1"]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating"
    assert 'failed to get sandbox runtime: no runtime for "nvidia" is configured' in waiting["message"]
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")}
    assert "nvidia.com/gpu" not in nodes["gpu1"]["status"]["allocatable"]
    assert nodes["gpu2"]["status"]["allocatable"]["nvidia.com/gpu"] == "8"


def test_a_runc_handler_gives_no_gpus_although_the_runtime_class_is_named_nvidia(cluster):
    runc_class = runtime_class_only().replace("handler: nvidia", "handler: runc")
    apply(cluster, "flannel.yaml")
    apply(cluster, "runtimeclass.yaml", runc_class)
    plugin = [d for d in yaml.safe_load_all(text("nvidia-device-plugin.yaml")) if d and d["kind"] == "DaemonSet"]
    apply(cluster, "plugin.yaml", yaml.safe_dump_all(plugin))
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes")}
    assert "nvidia.com/gpu" not in nodes["gpu1"]["status"]["allocatable"]  # NVML never loads under runc


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            (
                "ghcr.io/flannel-io/flannel:v0.28.9\n        command:\n        - /opt/bin/flanneld",
                "docker.io/flannel/flannel:v0.22.0\n        command:\n        - /opt/bin/flanneld",
            ),
            "is not flannel's ghcr.io/flannel-io/flannel:v0.28.9",
        ),
        (("- --kube-subnet-mgr", "- --kube-subnet-manager"), "are not flannel's"),
        (
            ('"Backend":\n    {"Type": "vxlan"}', '"Backend":\n    {"Type": "vxlan-ng"}'),
            "unknown backend type: vxlan-ng",
        ),
    ],
)
def test_flannel_runs_only_as_the_pinned_upstream_manifest_runs_it(cluster, change, problem):
    manifest = text("flannel.yaml")
    assert change[0] in manifest
    apply(cluster, "flannel.yaml", manifest.replace(*change))
    assert {n["status"]["conditions"][-1]["status"] for n in get(cluster, "nodes")} == {"False"}
    flannel = [p for p in get(cluster, "pods") if p["metadata"]["name"].startswith("kube-flannel")]
    assert flannel and all(
        problem in p["status"]["containerStatuses"][0]["lastState"]["terminated"]["message"] for p in flannel
    )
    apply(cluster, "flannel.yaml")
    assert {n["status"]["conditions"][-1]["status"] for n in get(cluster, "nodes")} == {"True"}


def test_the_doubles_flannel_contract_is_the_version_pyctl_pins():
    from tests.doubles.fake_cluster import FLANNEL

    defaults = yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/flannel/defaults/main.yml").read_text())
    assert defaults["flannel_version"] == FLANNEL["version"], "update FLANNEL from the new kube-flannel.yml"


def test_apply_refuses_unknown_fields_as_the_api_servers_strict_validation_does(cluster):
    manifest = text("flannel.yaml").replace(
        "      hostNetwork: true\n", "      hostNetwork: true\n      hostNetworking: true\n"
    )
    rc, _, err = cluster.kubectl(["apply", "-f", "flannel.yaml"], {"flannel.yaml": manifest})
    assert rc == 1
    assert err == (
        'Error from server (BadRequest): error when creating "flannel.yaml": DaemonSet in version "v1" cannot be '
        'handled as a DaemonSet: strict decoding error: unknown field "spec.template.spec.hostNetworking"'
    )
    assert cluster.find("DaemonSet", "kube-flannel-ds", "kube-flannel") is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"},
                "spec": {"handler": "nvidia"},
            },
            'RuntimeClass in version "v1" cannot be handled as a RuntimeClass: strict decoding error: unknown field "spec"',
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"},
                "data": {"n": 1},
            },
            "json: cannot unmarshal integer into Go struct field data.n of type string",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": "v"},
                "spec": {"nfs": {"path": "/x"}},
            },
            'The PersistentVolume "v" is invalid: spec.nfs.server: Required value',
        ),
    ],
)
def test_apply_refuses_what_the_pinned_schema_refuses(cluster, document, message):
    rc, _, err = cluster.kubectl(["apply", "-f", "x.yaml"], {"x.yaml": yaml.safe_dump(document)})
    assert rc == 1 and message in err, err


def test_every_manifest_pyctl_applies_passes_strict_validation(cluster):
    from tests.doubles import openapi_strict

    for path in sorted(GOLDEN.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and "kind" in document and not document["apiVersion"].startswith(("kubeadm.k8s", "kubelet.")):
                assert openapi_strict.problems(document, cluster.schema(), path.name) == "", path.name


@pytest.mark.parametrize(
    "name",
    [
        "fake_kubeadm.py",
        "kubeadm_preflight.py",
        "kubeadm_config.py",
        "fake_kubectl.py",
        "openapi_strict.py",
        "fake_cluster.py",
        "kubeadm_rest.py",
        "apiserver_forward.py",
        "kubelet_standin.py",
        "fake_nvidia_container_runtime",
        "fake_nvidia_smi.py",
        "fake_nvidia_smi",
    ],
)
def test_each_double_names_the_upstream_source_and_version_it_reproduces(name):
    import re

    path = Path(__file__).resolve().parents[1] / "doubles" / name
    head = path.read_text().split("\n\n\n")[0] if name.endswith(".py") else path.read_text()
    assert "TEST DOUBLE" in head or "test double" in head.lower()
    assert re.search(r"[Uu]pstream", head), f"{name}: name the upstream source of the behaviour"
    assert re.search(r"\bv?\d+\.\d+\b", head), f"{name}: name the upstream version"


def test_pods_cannot_reach_services_where_bridge_netfilter_is_off(cluster):
    """Not a kubeadm check since 1.30 (kubernetes/kubernetes#123464): the cluster shows the symptom instead."""
    for node in cluster.data["nodes"].values():
        node["bridge_nf_call_iptables"] = False
    apply(cluster, "flannel.yaml")
    apply(
        cluster,
        "round1.yaml",
        yaml.safe_dump_all(
            [d for d in yaml.safe_load_all(text("round1.yaml")) if d and "smoke" in d["metadata"]["name"]]
        ),
    )
    (smoke,) = [p for p in get(cluster, "pods") if p["metadata"]["name"] == "pyctl-verify-smoke"]
    assert smoke["status"]["phase"] == "Failed"
    message = smoke["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert "i/o timeout" in message and "net.bridge.bridge-nf-call-iptables is not 1" in message

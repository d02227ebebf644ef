"""The acceptance judgement (pyctl.k8s.health) over objects built with the kubernetes client's models."""

from __future__ import annotations

import json

from kubernetes.client import V1ContainerState, V1ContainerStateWaiting, V1PodCondition

from pyctl.ansible_plugins.filter import pyctl_k8s
from pyctl.k8s import gpus, health
from tests.k8s import models
from tests.k8s.models import EXPECT


def judge(cluster: models.Cluster, expect: health.Expectations = EXPECT) -> list[health.Problem]:
    return health.judge(cluster.snapshot(), expect)


def messages(problems: list[health.Problem]) -> list[str]:
    return [p.message for p in problems]


def test_a_healthy_cluster_has_no_problems():
    assert judge(models.healthy()) == []


def test_a_node_short_of_gpus_is_named_with_both_counts():
    cluster = models.healthy()
    cluster.nodes["gpu2"].status.allocatable["nvidia.com/gpu"] = "6"
    (problem,) = judge(cluster)
    assert problem.subject == "node gpu2" and problem.severity == health.ERROR
    assert problem.message == "node gpu2 has 6 allocatable nvidia.com/gpu, but nvidia-smi lists 8 GPU(s)"


def test_zero_gpus_on_an_unlabelled_node_says_the_label_is_missing():
    cluster = models.healthy()
    del cluster.nodes["gpu1"].status.allocatable["nvidia.com/gpu"]
    del cluster.nodes["gpu1"].metadata.labels["nvidia.com/gpu.present"]
    (problem,) = judge(cluster)
    assert "node gpu1 has no allocatable nvidia.com/gpu, but nvidia-smi lists 2 GPU(s)" in problem.message
    assert "lacks the label nvidia.com/gpu.present=true" in problem.message


def test_zero_gpus_on_a_labelled_node_points_at_the_device_plugin():
    cluster = models.healthy()
    del cluster.nodes["gpu1"].status.allocatable["nvidia.com/gpu"]
    (problem,) = judge(cluster)
    assert "the NVIDIA device plugin is not serving it" in problem.message


def test_a_not_ready_node_is_named_with_the_kubelets_reason_and_a_hint():
    cluster = models.healthy()
    cluster.nodes["cpu1"] = models.node(
        "cpu1",
        ready="False",
        reason="KubeletNotReady",
        message="container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized",
    )
    (problem,) = judge(cluster)
    assert problem.subject == "node cpu1"
    assert problem.message.startswith("node cpu1 is NotReady (KubeletNotReady: container runtime network not ready")
    assert problem.message.endswith("the pod network is not up there (is flannel running on it?)")


def test_a_node_that_stopped_reporting_asks_about_the_host_and_kubelet():
    cluster = models.healthy()
    cluster.nodes["cpu1"] = models.node(
        "cpu1", ready="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status."
    )
    (problem,) = judge(cluster)
    assert "node cpu1 stopped reporting (Kubelet stopped posting node status.)" in problem.message
    assert "systemctl status kubelet" in problem.message


def test_a_node_that_never_joined_names_the_host_and_the_command():
    cluster = models.healthy()
    del cluster.nodes["cpu1"]
    cluster.daemonsets["flannel"].status.desired_number_scheduled = 3
    cluster.daemonsets["flannel"].status.number_ready = 3
    del cluster.flannel["cpu1"]
    (problem,) = judge(cluster)
    assert problem.message == (
        "node cpu1 (host cpu1) is not in the cluster: it has not joined; run pyctl bootstrap again, "
        "or pyctl node add --host cpu1"
    )


def test_a_pending_claim_is_named_with_its_volume():
    cluster = models.healthy()
    cluster.claims = [models.claim("Pending")]
    (problem,) = judge(cluster)
    assert problem.subject == "claim default/pyctl-shared"
    assert problem.message == (
        "the shared claim default/pyctl-shared is Pending, not Bound: its volume pyctl-shared is missing or "
        "does not match it"
    )


def test_a_missing_claim_says_which_phase_makes_it():
    cluster = models.healthy()
    cluster.claims = []
    (problem,) = judge(cluster)
    assert "does not exist: run the addons phase" in problem.message


def test_no_claim_is_expected_without_an_nfs_server():
    cluster = models.healthy()
    cluster.claims = []
    expect = health.Expectations(nodes=models.NODES, gpus=models.GPUS, claim=None)
    assert judge(cluster, expect) == []


def test_a_crash_looping_flannel_pod_is_named_with_its_node_restarts_and_last_error():
    cluster = models.healthy()
    models.crash_looping(cluster.flannel["gpu2"])
    cluster.daemonsets["flannel"].status.number_ready = 3
    (problem,) = judge(cluster)
    assert problem.subject == "pod kube-flannel/kube-flannel-ds-gpu2"
    assert problem.message == (
        "flannel: pod kube-flannel/kube-flannel-ds-gpu2 on node gpu2 is crash-looping: container main restarted "
        "7 times (last exit code 1: failed to find interface eth9)"
    )


def test_an_image_that_cannot_be_pulled_points_at_the_artifact_list():
    cluster = models.healthy()
    pod = cluster.plugin["gpu1"]
    pod.status.phase = "Pending"
    pod.status.conditions = [V1PodCondition(type="Ready", status="False")]
    pod.status.container_statuses[0].state = V1ContainerState(
        waiting=V1ContainerStateWaiting(reason="ImagePullBackOff", message="dial tcp: i/o timeout")
    )
    cluster.daemonsets["plugin"].status.number_ready = 1
    (problem,) = judge(cluster)
    assert "NVIDIA device plugin: pod kube-system/nvidia-device-plugin-gpu1 on node gpu1 cannot pull image" in (
        problem.message
    )
    assert "pyctl bootstrap --list-artifacts" in problem.message


def test_a_device_plugin_that_runs_nowhere_says_the_label_is_missing():
    cluster = models.healthy()
    cluster.daemonsets["plugin"].status.desired_number_scheduled = 0
    cluster.daemonsets["plugin"].status.number_ready = 0
    cluster.plugin.clear()
    problems = messages(judge(cluster))
    assert "the NVIDIA device plugin runs on no node: no node carries the label nvidia.com/gpu.present=true" in (
        problems
    )


def test_a_missing_daemonset_names_the_phase():
    cluster = models.healthy()
    del cluster.daemonsets["flannel"]
    (problem,) = judge(cluster)
    assert problem.message == (
        "the flannel DaemonSet kube-flannel/kube-flannel-ds does not exist: run the addons phase "
        "(pyctl bootstrap --phases addons)"
    )


def test_without_gpu_hosts_the_device_plugin_is_not_expected():
    cluster = models.healthy()
    del cluster.daemonsets["plugin"]
    for name in models.GPUS:
        del cluster.nodes[name].status.allocatable["nvidia.com/gpu"]
    expect = health.Expectations(nodes=models.NODES, gpus={}, claim=("default", "pyctl-shared"))
    assert judge(cluster, expect) == []


def test_gpus_on_a_host_not_marked_gpu_is_only_a_warning():
    cluster = models.healthy()
    cluster.nodes["cpu1"].status.allocatable["nvidia.com/gpu"] = "1"
    (problem,) = judge(cluster)
    assert problem.severity == health.WARNING
    assert health.errors([problem]) == []


def test_several_problems_come_errors_first():
    cluster = models.healthy()
    cluster.nodes["cpu1"].spec.unschedulable = True
    cluster.claims = [models.claim("Lost")]
    problems = judge(cluster)
    assert [p.severity for p in problems] == [health.ERROR, health.WARNING]


def test_nvidia_smi_gpu_lines_are_counted_and_mig_devices_are_not():
    listing = (
        "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-1)\n"
        "  MIG 3g.40gb     Device  0: (UUID: MIG-1)\n"
        "GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-2)\n"
    )
    assert gpus.count(listing) == 2
    assert gpus.count("") == 0


def test_the_filter_plugin_judges_kubectl_json_the_same_way():
    cluster = models.healthy()
    cluster.nodes["gpu2"].status.allocatable["nvidia.com/gpu"] = "6"
    snapshot = cluster.snapshot()
    items = (
        [dict(n, kind="Node") for n in snapshot.nodes]
        + [dict(p, kind="Pod") for p in snapshot.pods]
        + [dict(d, kind="DaemonSet") for d in snapshot.daemonsets]
        + [dict(c, kind="PersistentVolumeClaim") for c in snapshot.claims]
    )
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    expectations = {
        "nodes": models.NODES,
        "gpus": models.GPUS,
        "claim": {"namespace": "default", "name": "pyctl-shared"},
    }
    problems = pyctl_k8s.cluster_problems(text, expectations)
    assert problems == [p.to_dict() for p in judge(cluster)]
    assert problems[0]["message"].startswith("node gpu2 has 6 allocatable")
    assert pyctl_k8s.gpu_count("GPU 0: x\nGPU 1: y") == 2
    assert pyctl_k8s.cluster_problems(json.dumps({"items": items}), {**expectations, "claim": {}}) == problems


def test_verify_pods_must_all_have_succeeded():
    pods = [
        {
            "kind": "Pod",
            "metadata": {
                "name": "pyctl-verify-write-0",
                "namespace": "default",
                "annotations": {"pyctl.io/purpose": "write to the shared claim from node gpu1"},
            },
            "spec": {"nodeName": "gpu1"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "write", "state": {"terminated": {"exitCode": 1, "message": "Read-only file system"}}}
                ],
            },
        },
        {
            "kind": "Pod",
            "metadata": {"name": "pyctl-verify-smoke", "namespace": "default"},
            "status": {"phase": "Succeeded"},
        },
    ]
    problems = pyctl_k8s.verify_pod_problems(
        {"items": pods}, ["pyctl-verify-smoke", "pyctl-verify-write-0", "pyctl-verify-gpu-0"]
    )
    assert [p["message"] for p in problems] == [
        "write to the shared claim from node gpu1: pod default/pyctl-verify-write-0 failed with exit code 1 "
        "(Read-only file system)",
        "the verify pod pyctl-verify-gpu-0 was never created",
    ]

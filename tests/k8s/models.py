"""Kubernetes API objects built with the kubernetes client's own models, for the judgement tests.

`healthy()` is a cluster that matches `EXPECT`: a control plane, two GPU workers (2 and 8 GPUs) and a
CPU worker, flannel and the device plugin running everywhere they should, the shared claim bound.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import (
    ApiClient,
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1DaemonSet,
    V1DaemonSetSpec,
    V1DaemonSetStatus,
    V1LabelSelector,
    V1Node,
    V1NodeCondition,
    V1NodeSpec,
    V1NodeStatus,
    V1ObjectMeta,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimSpec,
    V1PersistentVolumeClaimStatus,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
)

from pyctl.k8s.health import Expectations, Snapshot

GPUS = {"gpu1": 2, "gpu2": 8}
NODES = {"cp1": "cp1", "gpu1": "gpu1", "gpu2": "gpu2", "cpu1": "cpu1"}
EXPECT = Expectations(nodes=NODES, gpus=GPUS, claim=("default", "pyctl-shared"))

_client = ApiClient()


def plain(obj: Any) -> dict[str, Any]:
    """What the API server (and kubectl -o json) would send: camelCase dicts."""
    return _client.sanitize_for_serialization(obj)


def node(name: str, gpus: int = 0, ready: str = "True", reason: str = "KubeletReady", message: str = "") -> V1Node:
    labels = {"kubernetes.io/hostname": name}
    allocatable = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    if gpus:
        labels["nvidia.com/gpu.present"] = "true"
        allocatable["nvidia.com/gpu"] = str(gpus)
    return V1Node(
        metadata=V1ObjectMeta(name=name, labels=labels),
        spec=V1NodeSpec(),
        status=V1NodeStatus(
            allocatable=allocatable,
            conditions=[
                V1NodeCondition(type="MemoryPressure", status="False"),
                V1NodeCondition(type="DiskPressure", status="False"),
                V1NodeCondition(type="Ready", status=ready, reason=reason, message=message or reason),
            ],
        ),
    )


def running_pod(namespace: str, name: str, labels: dict[str, str], node_name: str, image: str) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(namespace=namespace, name=name, labels=labels),
        spec=V1PodSpec(node_name=node_name, containers=[V1Container(name="main", image=image)]),
        status=V1PodStatus(
            phase="Running",
            conditions=[V1PodCondition(type="Ready", status="True")],
            container_statuses=[
                V1ContainerStatus(
                    name="main",
                    image=image,
                    image_id="",
                    ready=True,
                    restart_count=0,
                    state=V1ContainerState(running=V1ContainerStateRunning()),
                )
            ],
        ),
    )


def crash_looping(pod: V1Pod, restarts: int = 7, message: str = "failed to find interface eth9") -> V1Pod:
    status = pod.status.container_statuses[0]
    status.ready = False
    status.restart_count = restarts
    status.state = V1ContainerState(waiting=V1ContainerStateWaiting(reason="CrashLoopBackOff", message="back-off"))
    status.last_state = V1ContainerState(
        terminated=V1ContainerStateTerminated(exit_code=1, reason="Error", message=message)
    )
    pod.status.conditions = [V1PodCondition(type="Ready", status="False", reason="ContainersNotReady")]
    return pod


def daemonset(namespace: str, name: str, desired: int, ready: int) -> V1DaemonSet:
    return V1DaemonSet(
        metadata=V1ObjectMeta(namespace=namespace, name=name),
        spec=V1DaemonSetSpec(
            selector=V1LabelSelector(match_labels={"app": name}),
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels={"app": name}),
                spec=V1PodSpec(containers=[V1Container(name="main", image="image")]),
            ),
        ),
        status=V1DaemonSetStatus(
            desired_number_scheduled=desired,
            current_number_scheduled=desired,
            number_misscheduled=0,
            number_ready=ready,
        ),
    )


def claim(phase: str = "Bound") -> V1PersistentVolumeClaim:
    return V1PersistentVolumeClaim(
        metadata=V1ObjectMeta(namespace="default", name="pyctl-shared"),
        spec=V1PersistentVolumeClaimSpec(access_modes=["ReadWriteMany"], volume_name="pyctl-shared"),
        status=V1PersistentVolumeClaimStatus(phase=phase),
    )


class Cluster:
    """Mutable model objects; `snapshot()` turns them into what the judgement reads."""

    def __init__(self) -> None:
        self.nodes = {name: node(name, GPUS.get(name, 0)) for name in NODES}
        self.flannel = {
            name: running_pod("kube-flannel", f"kube-flannel-ds-{name}", {"app": "flannel"}, name, "flannel")
            for name in NODES
        }
        self.plugin = {
            name: running_pod(
                "kube-system", f"nvidia-device-plugin-{name}", {"name": "nvidia-device-plugin-ds"}, name, "plugin"
            )
            for name in GPUS
        }
        self.daemonsets = {
            "flannel": daemonset("kube-flannel", "kube-flannel-ds", len(NODES), len(NODES)),
            "plugin": daemonset("kube-system", "nvidia-device-plugin-daemonset", len(GPUS), len(GPUS)),
        }
        self.claims = [claim()]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            nodes=[plain(n) for n in self.nodes.values()],
            pods=[plain(p) for p in [*self.flannel.values(), *self.plugin.values()]],
            daemonsets=[plain(d) for d in self.daemonsets.values()],
            claims=[plain(c) for c in self.claims],
        )


def healthy() -> Cluster:
    return Cluster()

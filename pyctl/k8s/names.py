"""Names of what pyctl puts into the cluster. The roles are the source; tests check these match them."""

from __future__ import annotations

from dataclasses import dataclass

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
RUNTIME_CLASS = "nvidia"


@dataclass(frozen=True)
class Addon:
    """A DaemonSet-based add-on: where it lives and how its pods are labelled."""

    title: str
    namespace: str
    daemonset: str
    pod_label: tuple[str, str]
    phase_hint: str


FLANNEL = Addon(
    title="flannel",
    namespace="kube-flannel",
    daemonset="kube-flannel-ds",
    pod_label=("app", "flannel"),
    phase_hint="run the addons phase (pyctl bootstrap --phases addons)",
)
DEVICE_PLUGIN = Addon(
    title="NVIDIA device plugin",
    namespace="kube-system",
    daemonset="nvidia-device-plugin-daemonset",
    pod_label=("name", "nvidia-device-plugin-ds"),
    phase_hint="run the addons phase (pyctl bootstrap --phases addons)",
)

# The shared claim training jobs mount (role shared_storage's defaults).
SHARED_CLAIM_NAME = "pyctl-shared"
SHARED_CLAIM_NAMESPACE = "default"

# Pods the verify phase starts, and removes again.
VERIFY_POD_LABEL = ("app.kubernetes.io/managed-by", "pyctl-verify")

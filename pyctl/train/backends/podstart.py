"""Why a Kubernetes job's pods have not started, and when to give up on them.

A pod that never leaves Pending (an image that cannot be pulled, no node with enough free GPUs, a
missing or unbound claim) would otherwise keep `pyctl train ... --follow` waiting for ever. `StartWatch`
reads each poll's pods and the events of the job and its pods, returns the reasons it has not reported
yet (each once), and after the start deadline (`--start-timeout`, measured from submission) the verdict
that ends the job. Nothing here talks to the API server: the Kubernetes client passes the objects in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyctl.train.request import DEFAULT_START_TIMEOUT_S

# Waiting reasons of a container that is on its way: not worth a line.
_NORMAL_WAITING = {"ContainerCreating", "PodInitializing"}
# Event reasons worth a line: what the scheduler, the kubelet and the Job controller say when they cannot.
_WARNING_EVENTS = {
    "FailedScheduling",
    "FailedMount",
    "FailedAttachVolume",
    "Failed",
    "BackOff",
    "ErrImageNeverPull",
    "InspectFailed",
    "FailedCreate",
    "FailedCreatePodSandBox",
}
# Normal events that show a slow start is moving (a multi-GB image being pulled).
_PROGRESS_EVENTS = {"Pulling", "Pulled"}


def _hint(text: str, image: str | None) -> str:
    lowered = text.lower()
    if "insufficient nvidia.com/gpu" in lowered:
        return "fewer free GPUs than --gpus-per-node on enough nodes ('pyctl doctor' lists each node's GPUs)"
    if "persistentvolumeclaim" in lowered and "not found" in lowered:
        return "the claim is missing: 'pyctl bootstrap --phases storage,addons' makes it, or give --claim"
    if "unbound" in lowered and "persistentvolumeclaim" in lowered:
        return "the claim is not bound to a volume yet ('kubectl describe pvc')"
    if any(word in text for word in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "pull")):
        where = f" {image}" if image else " the image"
        return f"can every node pull{where}? push it to a registry the nodes reach, or import it on each node"
    return ""


def pod_reasons(pod: Any) -> list[str]:
    """Why one pod is not running yet: its containers' waiting reasons and an unscheduled condition."""
    reasons: list[str] = []
    status = pod.status
    if status is None:
        return reasons
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reasons.append(f"{condition.reason or 'not scheduled'}: {condition.message or ''}".rstrip(": "))
    for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = container.state.waiting if container.state else None
        if waiting is not None and waiting.reason and waiting.reason not in _NORMAL_WAITING:
            reasons.append(f"{waiting.reason}: {waiting.message or ''}".rstrip(": "))
    return reasons


def event_reasons(events: list[Any]) -> list[str]:
    """The events that say something is wrong (type Warning, or a reason known to block a start), and
    the image pulls (a slow one is not a stuck one)."""
    lines = []
    for event in events:
        if event.type == "Warning" or event.reason in _WARNING_EVENTS or event.reason in _PROGRESS_EVENTS:
            what = event.involved_object.name if event.involved_object is not None else "?"
            lines.append(f"event {event.reason} on {what}: {(event.message or '').strip()}")
    return lines


def _image(pod: Any) -> str | None:
    containers = pod.spec.containers if pod.spec is not None else None
    return containers[0].image if containers else None


@dataclass
class StartWatch:
    """Follows a job's pods until every expected pod has left Pending once, or the deadline passes."""

    expected: int  # pods the job needs (its nodes)
    created: float  # when the job was submitted (epoch seconds)
    timeout_s: float = DEFAULT_START_TIMEOUT_S
    started: bool = False
    _seen: set[str] = field(default_factory=set)
    _last: dict[str, list[str]] = field(default_factory=dict)  # node label -> its current reasons

    def observe(self, pods: list[tuple[int, Any]], events: list[Any], now: float) -> tuple[list[str], str | None]:
        """`pods` as (node index, pod). Returns the lines not shown before, and a failure message once
        the deadline has passed with a pod still pending (None otherwise)."""
        if self.started:
            return [], None
        pending = [(index, pod) for index, pod in pods if pod.status is None or pod.status.phase == "Pending"]
        if len(pods) >= self.expected and not pending:
            self.started = True
            return [], None
        lines = []
        self._last = {}
        for index, pod in pending:
            label = f"node {index} ({pod.metadata.name})"
            image = _image(pod)
            for reason in pod_reasons(pod):
                self._last.setdefault(label, []).append(reason)
                hint = _hint(reason, image)
                lines.append(f"{label} waiting: {reason}" + (f" ({hint})" if hint else ""))
        lines += event_reasons(events)
        fresh = [line for line in lines if line not in self._seen]
        self._seen.update(fresh)
        if self.timeout_s <= 0 or now - self.created < self.timeout_s:
            return fresh, None
        return fresh, self._verdict(len(pods), pending, event_reasons(events))

    def _verdict(self, count: int, pending: list[tuple[int, Any]], events: list[str]) -> str:
        limit = f"within {self.timeout_s:.0f} s (--start-timeout)"
        if count == 0:
            cause = events[-1] if events else "the Job controller made none (kubectl describe job)"
            return f"no pod was created {limit}: {cause}"
        if count < self.expected and not pending:
            return f"only {count} of {self.expected} pods were created {limit}" + (f": {events[-1]}" if events else "")
        parts = []
        for label, reasons in self._last.items():
            parts.append(f"{label}: {reasons[-1]}")
        if not parts:
            parts = [f"node {index} ({pod.metadata.name}): Pending" for index, pod in pending]
            if events:
                parts.append(events[-1])
        return f"pods did not start {limit}: {'; '.join(parts)}"


# --- before submitting ------------------------------------------------------------------------------


def claims_and_images(documents: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The claims the pods mount and the images they run, from the parsed manifests (any kind)."""
    claims: list[str] = []
    images: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            claim = node.get("persistentVolumeClaim")
            if isinstance(claim, dict) and claim.get("claimName"):
                claims.append(str(claim["claimName"]))
            for key in ("containers", "initContainers"):
                for container in node.get(key) or []:
                    if isinstance(container, dict) and container.get("image"):
                        images.append(str(container["image"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(documents)
    return list(dict.fromkeys(claims)), list(dict.fromkeys(images))


def unqualified_image(image: str) -> str | None:
    """What containerd makes of an image name without a registry host (docker.io/...), or None when
    the name has one (`host.domain/...`, `host:port/...`, `localhost/...`)."""
    name = image.split("@", 1)[0]
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return None
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"

"""The acceptance judgement: is this cluster what the inventory asked for?

Pure functions over Kubernetes API objects as dicts (the camelCase JSON that `kubectl get -o json`
prints and `ApiClient.sanitize_for_serialization` makes of the client's models). Each problem is one
sentence a user can act on. The verify phase (through the filter plugin in pyctl/ansible_plugins) and
`pyctl doctor` both judge with `judge()`, so the bootstrap's acceptance gate and doctor agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pyctl.k8s import names
from pyctl.k8s.names import Addon

ERROR = "error"
WARNING = "warning"
_MESSAGE_CHARS = 160
_PRESSURES = ("MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass(frozen=True)
class Problem:
    """One thing wrong, as a sentence. `subject` names the object ("node gpu1", "pod ns/name")."""

    subject: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Expectations:
    """What the inventory asks for.

    nodes: Kubernetes node name -> inventory host, for every control plane and worker host.
    gpus: node name -> the GPUs `nvidia-smi -L` lists there, for every gpu=true host.
    claim: (namespace, name) of the shared claim, or None when the inventory has no nfs_server.
    """

    nodes: Mapping[str, str]
    gpus: Mapping[str, int] = field(default_factory=dict)
    claim: tuple[str, str] | None = None

    @property
    def addons(self) -> tuple[Addon, ...]:
        return (names.FLANNEL, names.DEVICE_PLUGIN) if self.gpus else (names.FLANNEL,)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Expectations:
        claim = data.get("claim")
        if isinstance(claim, Mapping):
            claim = (str(claim["namespace"]), str(claim["name"])) if claim.get("name") else None
        elif claim:
            claim = (str(claim[0]), str(claim[1]))
        return cls(
            nodes={str(k): str(v) for k, v in (data.get("nodes") or {}).items()},
            gpus={str(k): int(v) for k, v in (data.get("gpus") or {}).items()},
            claim=claim or None,
        )


@dataclass
class Snapshot:
    """The objects the judgement reads, as dicts."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    daemonsets: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_items(cls, items: Iterable[Mapping[str, Any]]) -> Snapshot:
        """From a mixed list, e.g. `kubectl get nodes,pods,daemonsets,pvc -A -o json`'s items."""
        snapshot = cls()
        target = {
            "Node": snapshot.nodes,
            "Pod": snapshot.pods,
            "DaemonSet": snapshot.daemonsets,
            "PersistentVolumeClaim": snapshot.claims,
        }
        for item in items:
            bucket = target.get(str(item.get("kind", "")))
            if bucket is not None:
                bucket.append(dict(item))
        return snapshot


# --- small readers ------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name", "?"))


def _ns_name(obj: Mapping[str, Any]) -> str:
    return f"{_meta(obj).get('namespace', '')}/{_name(obj)}"


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("labels") or {}


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _short(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _quantity(value: Any) -> int:
    """An integer resource quantity ("2", 2); anything else counts as 0."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


# --- nodes --------------------------------------------------------------------------------------


def node_problems(nodes: list[Mapping[str, Any]], expect: Expectations) -> list[Problem]:
    problems: list[Problem] = []
    present = {_name(n): n for n in nodes}
    for node_name, host in expect.nodes.items():
        if node_name not in present:
            problems.append(
                Problem(
                    f"node {node_name}",
                    f"node {node_name} (host {host}) is not in the cluster: it has not joined; run pyctl bootstrap "
                    f"again, or pyctl node add --host {host}",
                )
            )
    for node_name, node in sorted(present.items()):
        subject = f"node {node_name}"
        ready = _condition(node, "Ready")
        if ready is None or ready.get("status") != "True":
            if ready is not None and ready.get("status") == "Unknown":
                problems.append(
                    Problem(
                        subject,
                        f"node {node_name} stopped reporting ({_short(ready.get('message'))}): is the host up and "
                        "its kubelet running (systemctl status kubelet)?",
                    )
                )
            else:
                parts = ((ready or {}).get("reason") or "", _short((ready or {}).get("message")))
                detail = ": ".join(part for part in parts if part)
                hint = (
                    ": the pod network is not up there (is flannel running on it?)"
                    if "cni" in detail.lower() or "network" in detail.lower()
                    else ""
                )
                problems.append(Problem(subject, f"node {node_name} is NotReady ({detail or 'no reason given'}){hint}"))
        for pressure in _PRESSURES:
            condition = _condition(node, pressure)
            if condition is not None and condition.get("status") == "True":
                problems.append(
                    Problem(subject, f"node {node_name} reports {pressure}: {_short(condition.get('message'))}")
                )
        if (node.get("spec") or {}).get("unschedulable"):
            problems.append(
                Problem(
                    subject,
                    f"node {node_name} is cordoned (unschedulable): kubectl uncordon {node_name} when it should "
                    "take work again",
                    WARNING,
                )
            )
        if expect.nodes and node_name not in expect.nodes:
            problems.append(Problem(subject, f"node {node_name} is in the cluster but not in the inventory", WARNING))
    return problems


# --- GPUs ---------------------------------------------------------------------------------------


def gpu_problems(nodes: list[Mapping[str, Any]], expect: Expectations) -> list[Problem]:
    """On each GPU node, allocatable nvidia.com/gpu must equal what nvidia-smi lists (FIELD_NOTES #5)."""
    problems: list[Problem] = []
    present = {_name(n): n for n in nodes}
    for node_name, wanted in sorted(expect.gpus.items()):
        subject = f"node {node_name}"
        host = expect.nodes.get(node_name, node_name)
        if wanted <= 0:
            problems.append(
                Problem(
                    subject,
                    f"host {host} is marked gpu=true, but nvidia-smi lists no GPUs there: check the driver "
                    "(nvidia-smi) or set gpu=false",
                )
            )
            continue
        node = present.get(node_name)
        if node is None:
            continue  # reported by node_problems
        allocatable = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(names.GPU_RESOURCE))
        if allocatable == wanted:
            continue
        if allocatable == 0:
            labelled = _labels(node).get(names.GPU_NODE_LABEL) == "true"
            why = (
                "the NVIDIA device plugin is not serving it (see its pod on that node)"
                if labelled
                else f"it lacks the label {names.GPU_NODE_LABEL}=true the device plugin runs on"
            )
            problems.append(
                Problem(
                    subject,
                    f"node {node_name} has no allocatable {names.GPU_RESOURCE}, but nvidia-smi lists {wanted} GPU(s): "
                    f"{why}",
                )
            )
        else:
            problems.append(
                Problem(
                    subject,
                    f"node {node_name} has {allocatable} allocatable {names.GPU_RESOURCE}, but nvidia-smi lists "
                    f"{wanted} GPU(s)",
                )
            )
    for node_name, node in sorted(present.items()):
        if node_name in expect.gpus or not expect.nodes:
            continue
        allocatable = _quantity(((node.get("status") or {}).get("allocatable") or {}).get(names.GPU_RESOURCE))
        if allocatable:
            host = expect.nodes.get(node_name, node_name)
            problems.append(
                Problem(
                    f"node {node_name}",
                    f"node {node_name} advertises {allocatable} {names.GPU_RESOURCE}, but host {host} is not marked "
                    "gpu=true in the inventory",
                    WARNING,
                )
            )
    return problems


# --- pods and add-ons ---------------------------------------------------------------------------


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a pod that should be running is not, as a sentence; None when it is Running and ready."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    node = (pod.get("spec") or {}).get("nodeName")
    where = f"pod {_ns_name(pod)}" + (f" on node {node}" if node else "")
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason == "CrashLoopBackOff":
            last = (container.get("lastState") or {}).get("terminated") or {}
            exit_text = f"last exit code {last.get('exitCode')}" if last.get("exitCode") is not None else "no exit code"
            detail = _short(last.get("message") or last.get("reason") or "")
            return (
                f"{where} is crash-looping: container {container.get('name')} restarted "
                f"{container.get('restartCount', 0)} times ({exit_text}{': ' + detail if detail else ''})"
            )
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
            return (
                f"{where} cannot pull image {container.get('image')} ({reason}: {_short(waiting.get('message'))}); "
                "offline sites mirror it (pyctl bootstrap --list-artifacts) and set mirrors_registries"
            )
        if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
            message = _short(waiting.get("message"))
            return f"{where} cannot start container {container.get('name')} ({reason}: {message})"
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            return f"{where} cannot be scheduled ({_short(scheduled.get('message'))})"
        return f"{where} is Pending ({_short(status.get('reason') or status.get('message') or 'starting')})"
    if phase == "Failed":
        return f"{where} failed ({_short(status.get('reason'))}: {_short(status.get('message'))})"
    if phase == "Running":
        ready = _condition(pod, "Ready")
        if ready is not None and ready.get("status") != "True":
            return f"{where} is running but not ready ({_short(ready.get('message') or ready.get('reason'))})"
        return None
    if phase == "Succeeded":
        return f"{where} exited, though it should keep running"
    return f"{where} is {phase}"


def addon_problems(
    daemonsets: list[Mapping[str, Any]], pods: list[Mapping[str, Any]], addons: Iterable[Addon]
) -> list[Problem]:
    problems: list[Problem] = []
    for addon in addons:
        subject = f"daemonset {addon.namespace}/{addon.daemonset}"
        ds = next(
            (d for d in daemonsets if _name(d) == addon.daemonset and _meta(d).get("namespace") == addon.namespace),
            None,
        )
        if ds is None:
            problems.append(
                Problem(
                    subject,
                    f"the {addon.title} DaemonSet {addon.namespace}/{addon.daemonset} does not exist: "
                    f"{addon.phase_hint}",
                )
            )
            continue
        status = ds.get("status") or {}
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        if desired == 0:
            why = (
                f": no node carries the label {names.GPU_NODE_LABEL}=true"
                if addon is names.DEVICE_PLUGIN
                else ": no node matches it"
            )
            problems.append(Problem(subject, f"the {addon.title} runs on no node{why}"))
            continue
        key, value = addon.pod_label
        own = [p for p in pods if _meta(p).get("namespace") == addon.namespace and _labels(p).get(key) == value]
        explained = False
        for pod in sorted(own, key=_name):
            sentence = pod_problem(pod)
            if sentence:
                problems.append(Problem(f"pod {_ns_name(pod)}", f"{addon.title}: {sentence}"))
                explained = True
        if ready < desired and not explained:
            problems.append(Problem(subject, f"the {addon.title} has {ready} of {desired} pods ready"))
    return problems


# --- storage ------------------------------------------------------------------------------------


def claim_problems(claims: list[Mapping[str, Any]], claim: tuple[str, str] | None) -> list[Problem]:
    if claim is None:
        return []
    namespace, name = claim
    subject = f"claim {namespace}/{name}"
    found = next((c for c in claims if _name(c) == name and _meta(c).get("namespace") == namespace), None)
    if found is None:
        return [
            Problem(
                subject,
                f"the shared claim {namespace}/{name} does not exist: run the addons phase "
                "(pyctl bootstrap --phases addons)",
            )
        ]
    phase = (found.get("status") or {}).get("phase") or "Pending"
    if phase == "Bound":
        return []
    volume = (found.get("spec") or {}).get("volumeName")
    hint = f": its volume {volume} is missing or does not match it" if phase == "Pending" and volume else ""
    return [Problem(subject, f"the shared claim {namespace}/{name} is {phase}, not Bound{hint}")]


# --- the judgement ------------------------------------------------------------------------------


def judge(snapshot: Snapshot, expect: Expectations) -> list[Problem]:
    """Every problem found, errors first; an empty list means the cluster passes the acceptance gate."""
    problems = (
        node_problems(snapshot.nodes, expect)
        + gpu_problems(snapshot.nodes, expect)
        + addon_problems(snapshot.daemonsets, snapshot.pods, expect.addons)
        + claim_problems(snapshot.claims, expect.claim)
    )
    return sorted(problems, key=lambda p: p.severity != ERROR)


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == ERROR]


# --- the verify phase's own pods ----------------------------------------------------------------


def verify_pod_problems(pods: list[Mapping[str, Any]], expected: Iterable[str]) -> list[Problem]:
    """The verify phase's pods must all have Succeeded. Their annotation pyctl.io/purpose says what each proves."""
    problems: list[Problem] = []
    by_name = {_name(p): p for p in pods}
    for name in expected:
        pod = by_name.get(name)
        subject = f"pod {name}"
        if pod is None:
            problems.append(Problem(subject, f"the verify pod {name} was never created"))
            continue
        purpose = (_meta(pod).get("annotations") or {}).get("pyctl.io/purpose", "a smoke test")
        phase = (pod.get("status") or {}).get("phase") or "Unknown"
        if phase == "Succeeded":
            continue
        if phase == "Failed":
            terminated = (
                next(
                    (
                        (c.get("state") or {}).get("terminated")
                        for c in (pod.get("status") or {}).get("containerStatuses") or []
                        if (c.get("state") or {}).get("terminated")
                    ),
                    None,
                )
                or {}
            )
            detail = _short(terminated.get("message") or terminated.get("reason") or "")
            code = terminated.get("exitCode")
            problems.append(
                Problem(
                    subject,
                    f"{purpose}: pod {_ns_name(pod)} failed"
                    + (f" with exit code {code}" if code is not None else "")
                    + (f" ({detail})" if detail else ""),
                )
            )
            continue
        problems.append(Problem(subject, f"{purpose}: {pod_problem(pod) or f'pod {_ns_name(pod)} is {phase}'}"))
    return problems

"""Gang scheduling through Kueue: the queue label on a job, and reading its Workload's admission.

Kueue's contract (v0.19, kubernetes-sigs/kueue: pkg/controller/constants, apis/kueue/v1beta2, and
its batch/job and trainer.kubeflow.org/trainjob integrations, both on by default):

- a job labelled `kueue.x-k8s.io/queue-name: Q` (a LocalQueue in the job's namespace) is managed by
  Kueue; pyctl also creates it with `spec.suspend: true` so no pod starts before admission, whether or
  not Kueue's webhook would have suspended it;
- Kueue makes one Workload per job, in the job's namespace, labelled `kueue.x-k8s.io/job-uid: <uid>`,
  with one pod set of all the job's pods; it reserves quota for all of them or none (condition
  QuotaReserved, whose message says why not: "couldn't assign flavors ...", a missing LocalQueue),
  then sets Admitted and unsuspends the job (`spec.suspend: false`); Evicted (preemption, a stopped
  ClusterQueue, waitForPodsReady timeout) suspends it again and it waits for a new admission.

`admission` turns a Workload (or its absence) into what `--follow` and `status` say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
GROUP, PLURAL = "kueue.x-k8s.io", "workloads"
VERSIONS = ("v1beta2", "v1beta1")  # v0.19 serves both; v1beta2 is stored


def job_labels(labels: dict[str, str], queue: str | None) -> dict[str, str]:
    """The labels of the job object itself (never its pods: Kueue's pod integration would take them)."""
    return {**labels, QUEUE_LABEL: queue} if queue else dict(labels)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    message: str


def _true(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _condition(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (workload.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def admission(queue: str, workload: dict[str, Any] | None, *, kueue_served: bool = True) -> Admission:
    """Where a queued job stands: admitted, or why it waits (one line, for the user)."""
    waiting = f"waiting for admission in queue {queue}"
    if not kueue_served:
        return Admission(False, f"{waiting}: this cluster serves no Kueue Workload API (is Kueue installed?)")
    if workload is None:
        return Admission(False, f"{waiting} (Kueue has not made the job's Workload yet)")
    if _true(workload, "Finished"):
        return Admission(True, "Kueue's Workload finished")
    evicted = _true(workload, "Evicted")
    admitted = _true(workload, "Admitted")
    cluster_queue = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue")
    if admitted and not evicted:
        where = f" (ClusterQueue {cluster_queue})" if cluster_queue else ""
        return Admission(True, f"admitted by Kueue in queue {queue}{where}")
    if evicted:
        text = evicted.get("message") or ""
        detail = f"{evicted.get('reason') or 'Evicted'}{': ' + text if text else ''}"
        return Admission(False, f"{waiting} again: evicted by Kueue ({detail})")
    if _true(workload, "QuotaReserved"):
        return Admission(False, f"{waiting}: quota reserved, admission checks pending")
    reserved = _condition(workload, "QuotaReserved")
    why = (reserved or {}).get("message") or ""
    return Admission(False, f"{waiting}: {why}" if why else waiting)


def find_workload(custom: Any, namespace: str, uid: str) -> tuple[dict[str, Any] | None, bool]:
    """The Workload Kueue made for the job with this uid, and whether the Workload API is served."""
    from kubernetes.client.exceptions import ApiException

    for version in VERSIONS:
        try:
            listing = custom.list_namespaced_custom_object(
                GROUP, version, namespace, PLURAL, label_selector=f"{JOB_UID_LABEL}={uid}"
            )
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        items = listing.get("items") or []
        return (items[0] if items else None), True
    return None, False

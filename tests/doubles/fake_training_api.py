"""TEST DOUBLE - the Kubernetes API as `pyctl.train.backends.kubeclient.Client` calls it, with Kueue and Kubeflow Trainer.

An in-process stand-in for the three kubernetes-client API objects the train backend uses (CoreV1Api,
BatchV1Api, CustomObjectsApi), until the API double over HTTP (issue 14) exists. It keeps Jobs,
TrainJobs, ClusterTrainingRuntimes, ConfigMaps, Services, pods and Kueue Workloads, and follows the
contracts of the releases pyctl pins:

- Kueue v0.19.2 (kubernetes-sigs/kueue, pkg/controller/jobframework and apis/kueue/v1beta2): a job
  with the label `kueue.x-k8s.io/queue-name` gets a Workload in its namespace labelled
  `kueue.x-k8s.io/job-uid`; the job stays suspended (its webhook suspends it when the creator did
  not) until `admit()` sets QuotaReserved and Admitted, and then unsuspends it; `hold(message)` sets
  QuotaReserved=False with Kueue's message; a LocalQueue that does not exist holds it with Kueue's
  "LocalQueue ... doesn't exist" message. `kueue_installed=False`: the Workload API is not served (404).
- Kubeflow Trainer v2.3.0 (kubeflow/trainer, pkg/webhooks and pkg/runtime/framework/plugins): a
  TrainJob is refused when its runtime does not exist or its trainer env sets a PET_* name the torch
  plugin injects; its pods carry `jobset.sigs.k8s.io/jobset-name` and the completion-index
  annotation; its conditions are Suspended, Complete and Failed. Creates with fieldValidation=Strict
  are checked against the pinned CRD schemas (tests/train/crd_schema.py): an unknown field is a 400.
- batch/v1 Jobs: `spec.suspend` true means no pods; pods carry `job-name` and the completion index.

Nothing runs: `run(logs)` starts the pods (Running, with these log lines per completion index) and
`finish(succeeded)` ends the job, as the controllers would. Reads are counted so a test can move the
model along between a follower's polls (`on_read`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from kubernetes.client import (
    ApiClient,
    CoreV1EventList,
    V1Job,
    V1ObjectMeta,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimStatus,
    V1Pod,
    V1PodList,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
INDEX = "batch.kubernetes.io/job-completion-index"
RESERVED = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
_uids = itertools.count(1)


def _error(status: int, reason: str) -> ApiException:
    return ApiException(status=status, reason=reason)


class _Stream:
    def __init__(self, lines: list[str]) -> None:
        self.data = "".join(line + "\n" for line in lines).encode()

    def stream(self, _size: int) -> Any:
        yield self.data


class FakeTrainingApi:
    """One object that answers as CoreV1Api, BatchV1Api and CustomObjectsApi (give it as all three)."""

    def __init__(self, *, kueue_installed: bool = True, local_queues: tuple[str, ...] = ("team-a",)) -> None:
        self.kueue_installed = kueue_installed
        self.local_queues = set(local_queues)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, name) -> object (dicts)
        self.workloads: dict[str, dict[str, Any]] = {}  # job uid -> Workload
        self.pods: list[V1Pod] = []
        self.pod_logs: dict[str, list[str]] = {}
        self.runtimes: set[str] = {"torch-distributed"}
        self.claims: dict[str, str] = {"pyctl-shared": "Bound"}  # claim -> phase
        self.reads = 0
        self.field_validation: list[tuple[str, str | None]] = []  # (kind, fieldValidation) per create
        self.on_read: Callable[[int], None] | None = None
        self._api = ApiClient()

    # -- the model, moved along by tests ------------------------------------------------------------

    def _job(self) -> tuple[str, dict[str, Any]]:
        (kind, _), body = next((k, v) for k, v in self.objects.items() if k[0] in ("Job", "TrainJob"))
        return kind, body

    def hold(self, message: str) -> None:
        _, body = self._job()
        self._workload(body)["status"]["conditions"] = [
            {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": message}
        ]

    def admit(self, cluster_queue: str = "cq") -> None:
        kind, body = self._job()
        workload = self._workload(body)
        workload["status"]["conditions"] = [
            {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved", "message": "Quota reserved"},
            {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "The workload is admitted"},
        ]
        workload["status"]["admission"] = {"clusterQueue": cluster_queue}
        body["spec"]["suspend"] = False
        if kind == "TrainJob":
            body.setdefault("status", {})["conditions"] = [
                {"type": "Suspended", "status": "False", "reason": "Resumed", "message": "TrainJob is resumed"}
            ]

    def run(self, logs: dict[int, list[str]]) -> None:
        kind, body = self._job()
        if body["spec"].get("suspend"):
            raise AssertionError("a suspended job has no pods (admit it first)")
        name = body["metadata"]["name"]
        for index, lines in sorted(logs.items()):
            if kind == "TrainJob":
                pod_name, labels = f"{name}-node-0-{index}-x", {"jobset.sigs.k8s.io/jobset-name": name}
            else:
                pod_name, labels = f"{name}-{index}-x", {"job-name": name}
            self.pods.append(
                V1Pod(
                    metadata=V1ObjectMeta(name=pod_name, labels=labels, annotations={INDEX: str(index)}),
                    status=V1PodStatus(phase="Running"),
                )
            )
            self.pod_logs[pod_name] = lines
        body.setdefault("status", {})["active"] = len(logs)

    def finish(self, succeeded: bool = True) -> None:
        _, body = self._job()
        status = body.setdefault("status", {})
        status["active"] = 0
        condition = "Complete" if succeeded else "Failed"  # TrainJob: copied from the JobSet's Completed/Failed
        status["conditions"] = [*status.get("conditions", []), {"type": condition, "status": "True"}]
        for pod in self.pods:
            pod.status.phase = "Succeeded" if succeeded else "Failed"
        if body["metadata"]["uid"] in self.workloads:
            self.workloads[body["metadata"]["uid"]]["status"]["conditions"].append(
                {"type": "Finished", "status": "True", "reason": "Succeeded" if succeeded else "Failed"}
            )

    def _workload(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.workloads[body["metadata"]["uid"]]

    def _created(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        name = body["metadata"]["name"]
        if (kind, name) in self.objects:
            raise _error(409, "Conflict")
        body["metadata"]["uid"] = f"uid-{next(_uids)}"
        self.objects[(kind, name)] = body
        queue = (body["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        if queue and kind in ("Job", "TrainJob"):
            body["spec"]["suspend"] = True  # Kueue's webhook suspends a job it manages
            message = (
                "Quota not reserved: waiting for the scheduler"
                if queue in self.local_queues
                else f"LocalQueue {queue} doesn't exist"
            )
            uid = body["metadata"]["uid"]
            self.workloads[uid] = {
                "metadata": {"name": f"{kind.lower()}-{name}-abcde", "labels": {"kueue.x-k8s.io/job-uid": uid}},
                "status": {"conditions": [{"type": "QuotaReserved", "status": "False", "message": message}]},
            }
            if kind == "TrainJob":
                body["status"] = {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended"}]}
        return body

    def _read(self) -> None:
        self.reads += 1
        if self.on_read is not None:
            self.on_read(self.reads)

    # -- BatchV1Api --------------------------------------------------------------------------------

    def create_namespaced_job(self, namespace: str, body: dict[str, Any], field_validation: str | None = None) -> V1Job:
        self.field_validation.append(("Job", field_validation))
        created = self._created("Job", body)
        return self._api._ApiClient__deserialize(copy.deepcopy(created), "V1Job")

    def read_namespaced_job(self, name: str, namespace: str) -> V1Job:
        self._read()
        body = self.objects.get(("Job", name))
        if body is None:
            raise _error(404, "Not Found")
        return self._api._ApiClient__deserialize(copy.deepcopy(body), "V1Job")

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str | None = None) -> None:
        if self.objects.pop(("Job", name), None) is None:
            raise _error(404, "Not Found")
        self.pods.clear()

    # -- CoreV1Api ---------------------------------------------------------------------------------

    def create_namespaced_service(
        self, namespace: str, body: dict[str, Any], field_validation: str | None = None
    ) -> None:
        self.field_validation.append(("Service", field_validation))
        self._created("Service", body)

    def create_namespaced_config_map(
        self, namespace: str, body: dict[str, Any], field_validation: str | None = None
    ) -> None:
        self.field_validation.append(("ConfigMap", field_validation))
        self._created("ConfigMap", body)

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any]) -> None:
        self.objects[("ConfigMap", name)]["metadata"].update(body["metadata"])

    def delete_namespaced_config_map(self, name: str, namespace: str) -> None:
        self.objects.pop(("ConfigMap", name), None)

    def read_namespaced_persistent_volume_claim(self, name: str, namespace: str) -> V1PersistentVolumeClaim:
        if name not in self.claims:
            raise _error(404, "Not Found")
        return V1PersistentVolumeClaim(
            metadata=V1ObjectMeta(name=name), status=V1PersistentVolumeClaimStatus(phase=self.claims[name])
        )

    def list_namespaced_event(self, namespace: str, field_selector: str = "") -> CoreV1EventList:
        return CoreV1EventList(items=[])

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> V1PodList:
        key, _, value = label_selector.partition("=")
        return V1PodList(items=[p for p in self.pods if (p.metadata.labels or {}).get(key) == value])

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> Any:
        lines = self.pod_logs[name]
        return _Stream(lines) if kwargs.get("follow") else "\n".join(lines)

    # -- CustomObjectsApi --------------------------------------------------------------------------

    def create_cluster_custom_object(
        self, group: str, version: str, plural: str, body: dict[str, Any], field_validation: str | None = None
    ) -> dict[str, Any]:
        self._strict(plural, body, field_validation)
        created = self._created("ClusterTrainingRuntime", body)
        self.runtimes.add(created["metadata"]["name"])
        return created

    def patch_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.objects[("ClusterTrainingRuntime", name)] = copy.deepcopy(body)
        return body

    def create_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        body: dict[str, Any],
        field_validation: str | None = None,
    ) -> dict[str, Any]:
        if plural != "trainjobs":
            raise _error(404, "Not Found")
        self._strict(plural, body, field_validation)
        if body["spec"]["runtimeRef"]["name"] not in self.runtimes:
            raise _error(422, f"ClusterTrainingRuntime {body['spec']['runtimeRef']['name']} not found")
        if {e["name"] for e in body["spec"].get("trainer", {}).get("env", [])} & RESERVED:
            raise _error(422, "spec.trainer.env: must not have reserved envs")
        return copy.deepcopy(self._created("TrainJob", body))

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        self._read()
        body = self.objects.get(("TrainJob", name))
        if body is None:
            raise _error(404, "Not Found")
        return copy.deepcopy(body)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, propagation_policy: str | None = None
    ) -> None:
        if self.objects.pop(("TrainJob", name), None) is None:
            raise _error(404, "Not Found")
        self.pods.clear()

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, label_selector: str = ""
    ) -> dict[str, Any]:
        if group != "kueue.x-k8s.io" or not self.kueue_installed or version not in ("v1beta1", "v1beta2"):
            raise _error(404, "Not Found")
        uid = label_selector.partition("=")[2]
        return {"items": [copy.deepcopy(self.workloads[uid])] if uid in self.workloads else []}

    def _strict(self, plural: str, body: dict[str, Any], field_validation: str | None) -> None:
        from tests.train import crd_schema

        if field_validation == "Strict":
            try:
                crd_schema.validate(body, plural)
            except AssertionError as exc:
                raise _error(400, f"Bad Request: {exc}") from exc

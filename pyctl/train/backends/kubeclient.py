"""The Kubernetes backend: submit, watch, stream logs of and cancel a job with the kubernetes client.

It reads the admin kubeconfig `pyctl bootstrap` fetched (`settings.kubeconfig(cluster)`), never a
user's ~/.kube/config, and never prints or records anything from it. Logs are merged with `[node i]`
prefixes (i = the completion index; for a PyTorchJob, Master = 0 and Worker k = k + 1).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyctl.errors import PyctlError, UsageError
from pyctl.train import kueue, logs
from pyctl.train.backends import podstart
from pyctl.train.jobs import JobRecord
from pyctl.train.workloads import ddp_trainjob
from pyctl.train.workloads.ddp_manifests import COMPLETION_INDEX_ANNOTATION

KUBEFLOW = ("kubeflow.org", "v1", "pytorchjobs")


class KubeError(PyctlError):
    """The API server refused or could not be reached."""


@dataclass
class Outcome:
    state: str  # queued | running | succeeded | failed | cancelled
    exit_code: int | None
    message: str
    summary: dict[str, Any] | None = None


def job_outcome(status: dict[str, Any] | None) -> Outcome:
    """A batch/v1 Job's status (as a dict) to pyctl's state; exit codes are filled in from pods."""
    conditions = {c.get("type"): c for c in (status or {}).get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Failed", "FailureTarget"):
        if kind in conditions:
            reason = conditions[kind].get("reason") or "Failed"
            text = conditions[kind].get("message") or ""
            return Outcome("failed", 1, f"the Job failed: {reason}{': ' + text if text else ''}")
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return Outcome("succeeded", 0, "the Job completed")
    return Outcome("running", None, f"{(status or {}).get('active') or 0} pod(s) active")


def pytorchjob_outcome(status: dict[str, Any] | None) -> Outcome:
    conditions = {c.get("type"): c for c in (status or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Failed" in conditions:
        return Outcome("failed", 1, f"the PyTorchJob failed: {conditions['Failed'].get('message') or ''}".rstrip(": "))
    if "Succeeded" in conditions:
        return Outcome("succeeded", 0, "the PyTorchJob succeeded")
    return Outcome("running", None, "running")


def node_index(pod: Any) -> int:
    annotations = pod.metadata.annotations or {}
    if COMPLETION_INDEX_ANNOTATION in annotations:
        return int(annotations[COMPLETION_INDEX_ANNOTATION])
    labels = pod.metadata.labels or {}
    index = int(labels.get("training.kubeflow.org/replica-index", "0"))
    return index + (1 if labels.get("training.kubeflow.org/replica-type", "").lower() == "worker" else 0)


class _AdmissionNotes:
    """What a follower says about a queued job: each new reason it waits, then that it was admitted."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.last = ""
        self.queued = False

    def _tell(self, message: str) -> None:
        if message != self.last:
            self.last = message
            self.say(message)

    def held(self, outcome: Outcome, watch: podstart.StartWatch) -> bool:
        """True while the job waits for admission; on admission the start deadline counts from now."""
        if outcome.state == "queued":
            self.queued = True
            self._tell(outcome.message)
            return True
        if self.queued:
            self.queued = False
            admitted = outcome.message if outcome.message.startswith("admitted") else f"admitted; {outcome.message}"
            self._tell(admitted)
            watch.created = time.time()
        return False


class Client:
    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        try:
            self.api = config.new_client_from_config(config_file=str(kubeconfig))
        except Exception as exc:
            raise KubeError(f"the kubeconfig {kubeconfig} cannot be used: {type(exc).__name__}") from exc
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise KubeError(f"{what}: the API server answered {exc.status} {exc.reason}") from exc
        except Exception as exc:  # urllib3 errors: unreachable, TLS
            raise KubeError(f"{what}: the API server cannot be reached ({type(exc).__name__})") from exc

    # -- submit / cancel ----------------------------------------------------------------------------

    def check_before_submit(self, documents: dict[str, str], namespace: str) -> list[str]:
        """Refuse a claim the namespace does not have (UsageError, exit 2); return warnings: an unbound
        claim, an image name without a registry host."""
        from kubernetes.client.exceptions import ApiException

        claims, images = podstart.claims_and_images({n: yaml.safe_load(t) for n, t in documents.items()})
        warnings = []
        for claim in claims:
            try:
                body = self.core.read_namespaced_persistent_volume_claim(claim, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise UsageError(
                        f"the claim {claim!r} does not exist in namespace {namespace}: the pods would never start",
                        hint="'pyctl bootstrap -i INVENTORY --phases storage,addons' makes the shared claim; "
                        "or name an existing one with --claim (and --namespace)",
                    ) from exc
                raise KubeError(f"read the claim {claim}: the API server answered {exc.status} {exc.reason}") from exc
            except Exception as exc:
                raise KubeError(
                    f"read the claim {claim}: the API server cannot be reached ({type(exc).__name__})"
                ) from exc
            phase = body.status.phase if body.status else None
            if phase != "Bound":
                warnings.append(
                    f"the claim {claim!r} in namespace {namespace} is {phase or 'not bound'}: pods wait until it binds"
                )
        for image in images:
            normalized = podstart.unqualified_image(image)
            if normalized is not None:
                warnings.append(
                    f"the image {image!r} names no registry: nodes pull {normalized} unless it was imported on each "
                    f"of them; push it to a registry the nodes reach and give --image REGISTRY/{image}"
                )
        return warnings

    def submit(self, documents: dict[str, str], namespace: str) -> None:
        objects = {name: yaml.safe_load(text) for name, text in documents.items()}
        if "configmap" in objects:
            self._call(
                "create the script ConfigMap",
                self.core.create_namespaced_config_map,
                namespace,
                objects["configmap"],
                field_validation="Strict",
            )
        if "trainjob" in objects:
            self._submit_trainjob(objects, namespace)
            return
        if "pytorchjob" in objects:
            group, version, plural = KUBEFLOW
            self._call(
                "create the PyTorchJob",
                self.custom.create_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                objects["pytorchjob"],
                field_validation="Strict",
            )
            return
        created = self._call(
            "create the Job", self.batch.create_namespaced_job, namespace, objects["job"], field_validation="Strict"
        )
        owner = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": created.metadata.name,
                "uid": created.metadata.uid,
                "blockOwnerDeletion": False,
            }
        ]
        # Owned by the Job, so deleting the Job (cancel, or a TTL) also removes them.
        service = objects["service"]
        service["metadata"]["ownerReferences"] = owner
        self._call(
            "create the headless Service",
            self.core.create_namespaced_service,
            namespace,
            service,
            field_validation="Strict",
        )
        self._own_configmap(objects, namespace, owner)

    def _submit_trainjob(self, objects: dict[str, Any], namespace: str) -> None:
        """pyctl's ClusterTrainingRuntime when asked (created, or replaced: jobs share it), then the
        TrainJob (strict field validation: an unknown field is refused, not dropped), which owns the
        script ConfigMap."""
        from kubernetes.client.exceptions import ApiException

        group, version = ddp_trainjob.GROUP, ddp_trainjob.VERSION
        runtime = objects.get("clustertrainingruntime")
        if runtime is not None:
            name = runtime["metadata"]["name"]
            try:
                self.custom.create_cluster_custom_object(
                    group, version, ddp_trainjob.RUNTIME_PLURAL, runtime, field_validation="Strict"
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise KubeError(
                        f"create the ClusterTrainingRuntime {name}: the API server answered {exc.status} {exc.reason}"
                    ) from exc
                self._call(
                    f"update the ClusterTrainingRuntime {name}",
                    self.custom.patch_cluster_custom_object,
                    group,
                    version,
                    ddp_trainjob.RUNTIME_PLURAL,
                    name,
                    runtime,
                )
        created = self._call(
            "create the TrainJob (is Kubeflow Trainer v2 installed?)",
            self.custom.create_namespaced_custom_object,
            group,
            version,
            namespace,
            ddp_trainjob.PLURAL,
            objects["trainjob"],
            field_validation="Strict",
        )
        self._own_configmap(objects, namespace, [ddp_trainjob.owner_reference(created)])

    def _own_configmap(self, objects: dict[str, Any], namespace: str, owner: list[dict[str, Any]]) -> None:
        """The script ConfigMap (when the job has one) owned by the job, so deleting the job removes it."""
        if "configmap" in objects:
            self._call(
                "own the script ConfigMap",
                self.core.patch_namespaced_config_map,
                objects["configmap"]["metadata"]["name"],
                namespace,
                {"metadata": {"ownerReferences": owner}},
            )

    def cancel(self, record: JobRecord) -> None:
        from kubernetes.client.exceptions import ApiException

        namespace, name = record.k8s.namespace, record.k8s.name
        try:
            if record.k8s.kind == "trainjob":
                self.custom.delete_namespaced_custom_object(
                    ddp_trainjob.GROUP,
                    ddp_trainjob.VERSION,
                    namespace,
                    ddp_trainjob.PLURAL,
                    name,
                    propagation_policy="Foreground",
                )
            elif record.k8s.kind == "pytorchjob":
                group, version, plural = KUBEFLOW
                self.custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, propagation_policy="Foreground"
                )
                self.core.delete_namespaced_config_map(f"{name}-script", namespace)
            else:
                self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"delete {name}: the API server answered {exc.status} {exc.reason}") from exc

    # -- status / logs ------------------------------------------------------------------------------

    def _pods(self, record: JobRecord) -> list[Any]:
        namespace, name = record.k8s.namespace, record.k8s.name
        selector = {
            "pytorchjob": f"training.kubeflow.org/job-name={name}",
            "trainjob": f"{ddp_trainjob.POD_SELECTOR}={name}",
        }.get(record.k8s.kind, f"job-name={name}")
        pods = self._call("list the job's pods", self.core.list_namespaced_pod, namespace, label_selector=selector)
        return sorted(pods.items, key=node_index)

    def status(self, record: JobRecord) -> Outcome:
        namespace, name = record.k8s.namespace, record.k8s.name
        kind = record.k8s.kind
        if kind == "trainjob":
            body = self._call(
                "read the TrainJob",
                self.custom.get_namespaced_custom_object,
                ddp_trainjob.GROUP,
                ddp_trainjob.VERSION,
                namespace,
                ddp_trainjob.PLURAL,
                name,
            )
            state, message = ddp_trainjob.outcome_of(body.get("status"))
            outcome = Outcome(state, {"succeeded": 0, "failed": 1}.get(state), message)
            uid = body["metadata"]["uid"]
        elif kind == "pytorchjob":
            group, version, plural = KUBEFLOW
            body = self._call(
                "read the PyTorchJob", self.custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
            outcome = pytorchjob_outcome(body.get("status"))
            uid = ""
        else:
            body = self._call("read the Job", self.batch.read_namespaced_job, name, namespace)
            outcome = job_outcome(self.api.sanitize_for_serialization(body.status))
            if outcome.state == "running" and body.spec and body.spec.suspend:
                outcome = Outcome("queued", None, "the Job is suspended")
            uid = body.metadata.uid
        if outcome.state == "queued" and record.k8s.queue:
            outcome = self._admission(record, uid)
        if outcome.state == "failed":
            for pod in self._pods(record):
                for container in (pod.status.container_statuses or []) if pod.status else []:
                    terminated = container.state.terminated if container.state else None
                    if terminated is not None and terminated.exit_code:
                        outcome.exit_code = int(terminated.exit_code)
                        outcome.message += f" (node {node_index(pod)} exited with {terminated.exit_code})"
                        return outcome
        return outcome

    def _admission(self, record: JobRecord, uid: str) -> Outcome:
        """A suspended job with a queue: what its Kueue Workload says (admitted: starting)."""
        queue = record.k8s.queue
        try:
            workload, served = kueue.find_workload(self.custom, record.k8s.namespace, uid)
        except Exception as exc:  # urllib3 and API errors: say so, keep waiting
            return Outcome("queued", None, f"waiting for admission in queue {queue} (Workload unreadable: {exc})")
        admission = kueue.admission(queue, workload, kueue_served=served)
        if admission.admitted:
            return Outcome("running", None, f"{admission.message}; starting")
        return Outcome("queued", None, admission.message)

    def logs(self, record: JobRecord, out: Callable[[str], None]) -> None:
        for pod in self._pods(record):
            text = self._call(
                "read a pod's log", self.core.read_namespaced_pod_log, pod.metadata.name, record.k8s.namespace
            )
            for line in str(text).splitlines():
                out(f"[node {node_index(pod)}] {line}")

    def _events(self, record: JobRecord, pods: list[Any]) -> list[Any]:
        """Events of the job and of its pods that have not started (what the scheduler and kubelet said)."""
        namespace = record.k8s.namespace
        names = [record.k8s.name] + [p.metadata.name for p in pods if p.status is None or p.status.phase == "Pending"]
        events: list[Any] = []
        for name in names:
            found = self._call(
                "list the job's events",
                self.core.list_namespaced_event,
                namespace,
                field_selector=f"involvedObject.name={name}",
            )
            events += found.items or []
        return events

    def _start_verdict(
        self, record: JobRecord, pods: list[Any], watch: podstart.StartWatch, say: Callable[[str], None]
    ) -> str | None:
        """Until every pod has started: say why they wait; past the deadline, delete the job and say why."""
        if watch.started:
            return None
        events = self._events(record, pods)
        lines, verdict = watch.observe([(node_index(p), p) for p in pods], events, time.time())
        for line in lines:
            say(line)
        if verdict is not None:
            try:
                self.cancel(record)
            except KubeError as exc:
                verdict += f" (deleting the Job failed: {exc.message}; run 'pyctl train cancel {record.id}')"
        return verdict

    def follow(
        self,
        record: JobRecord,
        out: Callable[[str], None],
        poll: float = 2.0,
        say: Callable[[str], None] | None = None,
        log_path: Path = Path("/dev/null"),
    ) -> Outcome:
        """Stream every pod's log (merged, prefixed, also into `log_path`) until the job ends; returns how
        it ended. A queued job: `say` gets why it waits for admission, then that it was admitted. Until
        every pod has started, `say` gets each new reason one is waiting (and the job's warning events);
        past the start deadline (counted from submission, or from admission for a queued job) the job is
        deleted and fails with the reason."""
        say = say or out
        watch = podstart.StartWatch(
            expected=len(record.nodes),
            created=record.created,
            timeout_s=float(
                record.k8s.start_timeout_s
                if record.k8s.start_timeout_s is not None
                else podstart.DEFAULT_START_TIMEOUT_S
            ),
        )
        merged = logs.MergedLog(log_path, echo=out)
        found: dict[str, threading.Thread] = {}
        summary: dict[str, Any] = {}
        errors: list[str] = []

        admission = _AdmissionNotes(say)

        def on_line(line: str) -> None:
            if line.startswith(logs.ERROR_PREFIX):
                errors.append(line[len(logs.ERROR_PREFIX) :].strip())
                return
            parsed = logs.parse_summary(line)
            if parsed is not None:
                summary.update(parsed)

        def stream(pod_name: str, index: int) -> None:
            source = merged.source(f"[node {index}] ", on_line)
            for _ in range(600):  # wait for the container to start
                try:
                    response = self.core.read_namespaced_pod_log(
                        pod_name, record.k8s.namespace, follow=True, _preload_content=False
                    )
                    for chunk in response.stream(65536):
                        source.feed(chunk)
                    break
                except Exception:  # not started yet (400 ContainerCreating): try again
                    time.sleep(1)
            source.flush()

        while True:
            pods = self._pods(record)
            outcome = self.status(record)
            if admission.held(outcome, watch):  # by Kueue: no pods yet, and no start deadline running
                time.sleep(poll)
                continue
            verdict = self._start_verdict(record, pods, watch, say) if outcome.state == "running" else None
            if verdict is not None:
                merged.close()
                return Outcome("failed", 1, verdict)
            for pod in pods:
                if pod.metadata.name not in found and pod.status and pod.status.phase != "Pending":
                    thread = threading.Thread(target=stream, args=(pod.metadata.name, node_index(pod)), daemon=True)
                    found[pod.metadata.name] = thread
                    thread.start()
            if outcome.state != "running":
                for thread in found.values():
                    thread.join(timeout=30)
                outcome.summary = summary or None
                if outcome.state == "failed" and errors:
                    outcome.message += f" ({errors[0]})"
                merged.close()
                return outcome
            time.sleep(poll)

    # -- one-off pods (pyctl train fetch) ----------------------------------------------------------

    def run_pod(self, manifest: dict[str, Any], timeout: float, poll: float = 1.0) -> str:
        """Create a pod, wait until it has run to the end, return its log; the pod is deleted in any case."""
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        self._call(
            "create the fetch pod", self.core.create_namespaced_pod, namespace, manifest, field_validation="Strict"
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                pod = self._call("read the fetch pod", self.core.read_namespaced_pod, name, namespace)
                phase = pod.status.phase if pod.status else None
                if phase in ("Succeeded", "Failed"):
                    break
                if time.monotonic() > deadline:
                    raise KubeError(f"the fetch pod {namespace}/{name} did not finish in {timeout:.0f} s ({phase})")
                time.sleep(poll)
            text = str(self._call("read the fetch pod's log", self.core.read_namespaced_pod_log, name, namespace))
            if phase == "Failed":
                raise KubeError(f"the fetch pod {namespace}/{name} failed: {text.strip()[-300:]}")
            return text
        finally:
            # A pod left behind has ended (restartPolicy Never) and holds nothing but its log.
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_pod(name, namespace)

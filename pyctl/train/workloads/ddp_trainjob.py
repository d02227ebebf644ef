"""Kubeflow Trainer v2: a DDP job as a TrainJob, and pyctl's own ClusterTrainingRuntime for torchrun.

Written against Trainer v2.3.0 (trainer.kubeflow.org/v1alpha1; tests validate the renders against
that release's CRD schemas, kept in tests/fixtures/crds/kubeflow-trainer-v2.3.0/). What the operator
does with a TrainJob on a torch runtime (pkg/runtime/framework/plugins/torch and jobset there):

- it renders a JobSet named after the TrainJob with the runtime's replicated Job "node" (one Indexed
  Job, `numNodes` pods); pod i is `<job>-node-0-<i>.<job>` and carries the label
  `jobset.sigs.k8s.io/jobset-name=<job>` and the completion-index annotation;
- it injects PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK (the completion index), PET_MASTER_ADDR
  (`<job>-node-0-0.<job>`) and PET_MASTER_PORT (29500, fixed) into the container "node", and refuses
  a TrainJob that sets those five itself; torchrun then runs static rendezvous, so multi-node
  `--max-restarts` is refused here as for the PyTorchJob;
- the TrainJob's conditions: Suspended (spec.suspend), Complete and Failed (copied from the JobSet).

pyctl's volumes (the shared claim, /dev/shm, a --script ConfigMap) and its pod labels travel in
`spec.runtimePatches` (manager "pyctl"), so the TrainJob runs on Trainer's own `torch-distributed`
runtime as well as on pyctl's (`--with-runtime`: gang failure and, with GPUs, runtimeClassName nvidia,
which a TrainJob cannot patch).
"""

from __future__ import annotations

from typing import Any

from pyctl.render import render

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
RUNTIME_PLURAL = "clustertrainingruntimes"
API_VERSION = f"{GROUP}/{VERSION}"
UPSTREAM_RUNTIME = "torch-distributed"  # what Trainer's manifests install
PYCTL_RUNTIME = "pyctl-torch"
PYCTL_RUNTIME_GPU = "pyctl-torch-nvidia"
MASTER_PORT = 29500  # constants.ContainerTrainerPort: the operator's, not configurable
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
POD_SELECTOR = "jobset.sigs.k8s.io/jobset-name"


def runtime_name(requested: str | None, with_runtime: bool, gpus: int) -> str:
    if requested:
        return requested
    if with_runtime:
        return PYCTL_RUNTIME_GPU if gpus else PYCTL_RUNTIME
    return UPSTREAM_RUNTIME


def master(job_id: str) -> str:
    return f"{job_id}-node-0-0.{job_id}"


def render_documents(context: dict[str, Any], templates: Any, *, runtime: str, with_runtime: bool) -> dict[str, str]:
    """The TrainJob (and pyctl's runtime when asked) from the DDP manifests' context."""
    env = [e for e in context["env"] if e["name"] not in RESERVED_ENV]
    documents = {}
    if with_runtime:
        name = "clustertrainingruntime.yaml.j2"
        documents["clustertrainingruntime"] = render(templates, name, **context, runtime=runtime)
    documents["trainjob"] = render(
        templates,
        "trainjob.yaml.j2",
        **{**context, "master": master(context["job"]), "env": env},
        runtime=runtime,
    )
    return documents


def outcome_of(status: dict[str, Any] | None) -> tuple[str, str]:
    """A TrainJob's status to (state, message): running, queued (suspended), succeeded or failed."""
    conditions = {c.get("type"): c for c in (status or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Failed" in conditions:
        reason = conditions["Failed"].get("reason") or "Failed"
        text = conditions["Failed"].get("message") or ""
        return "failed", f"the TrainJob failed: {reason}{': ' + text if text else ''}"
    if "Complete" in conditions:
        return "succeeded", "the TrainJob completed"
    if "Suspended" in conditions:
        return "queued", "the TrainJob is suspended"
    active = sum(int(j.get("active") or 0) for j in (status or {}).get("jobsStatus") or [])
    return "running", f"{active} pod(s) active"


def owner_reference(created: dict[str, Any]) -> dict[str, Any]:
    metadata = created["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "blockOwnerDeletion": False,
    }

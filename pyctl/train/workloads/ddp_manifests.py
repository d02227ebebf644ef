"""Kubernetes manifests for a DDP job: an Indexed Job + headless Service, or a Kubeflow PyTorchJob.

Rendered from `templates/` with `pyctl.render` (StrictUndefined). Names: the Job, its Service and its
pods' subdomain are all the job id (`ddp-<yymmdd>-<hhmmss>-<hex>`); pod i's host name is `<job>-<i>`,
so node 0 is `<job>-0.<job>`.

How torchrun is wired (PET_* variables, read by torchrun for each of its flags):
- PET_NODE_RANK comes from the pod's completion index (downward API, the annotation
  batch.kubernetes.io/job-completion-index); PET_NNODES, PET_NPROC_PER_NODE, PET_MAX_RESTARTS are fixed.
- PET_MASTER_ADDR/PORT name node 0. Static rendezvous by default: ranks follow the completion index.
- With --max-restarts > 0 on more than one node: c10d rendezvous at node 0 with
  TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (static rendezvous cannot restart across nodes: the restarted
  workers read the failed attempt's peer addresses), and PET_LOCAL_ADDR = the pod's own DNS name, so
  index 0 sorts first and stays rank 0. Index 0 hosts the c10d store (`PET_RDZV_CONF=is_host=1`, 0 on
  the others, set by the pod's start script from the completion index), as on SSH: torchrun's own guess
  resolves pod 0's headless name, which may not be published yet.
- Peers (index > 0) wait for node 0's port before starting torchrun (templates/wait-for-master.sh).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyctl.render import render
from pyctl.train.request import kubernetes_minor
from pyctl.train.workloads.ddp import IMAGE_PAYLOAD, USER_SCRIPT_DIR, DdpJob, checkpoint_args, torchrun_args

TEMPLATES = Path(__file__).with_name("templates")
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
SUCCESS_POLICY_SINCE = (1, 33)  # Job successPolicy is GA (and on by default) from Kubernetes 1.33
PER_INDEX_SINCE = (1, 29)  # backoffLimitPerIndex: beta and on by default from 1.29, GA in 1.33


def shared_job_dir(job: DdpJob, job_id: str) -> str:
    """Where a job keeps its checkpoint on the share when --checkpoint-dir is not given."""
    return f"{job.request.claim_mount.rstrip('/')}/pyctl/jobs/{job_id}"


def _env(job: DdpJob, job_id: str, service: str, *, rank_from_index: bool) -> list[dict[str, Any]]:
    r = job.request
    master = f"{job_id}-0.{service}"
    env: list[dict[str, Any]] = []
    if rank_from_index:
        field = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
        env.append({"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": field}}})
        env += [
            {"name": "PET_NNODES", "value": str(job.nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(job.nproc_per_node)},
            {"name": "PET_MASTER_ADDR", "value": master},
            {"name": "PET_MASTER_PORT", "value": str(r.master_port)},
        ]
        if elastic_rendezvous(job):
            env += [
                {"name": "PET_RDZV_BACKEND", "value": "c10d"},
                {"name": "PET_RDZV_ENDPOINT", "value": "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"},
                {"name": "PET_RDZV_ID", "value": job_id},
                {"name": "PET_LOCAL_ADDR", "value": f"{job_id}-$(PET_NODE_RANK).{service}"},
            ]
        else:
            env.append({"name": "PET_RDZV_BACKEND", "value": "static"})
    env.append({"name": "PET_MAX_RESTARTS", "value": str(r.max_restarts)})
    values = {"PYCTL_JOB_ID": job_id, **job.env}
    if r.checkpoint_dir:
        values["PYCTL_CHECKPOINT_DIR"] = r.checkpoint_dir
    env += [{"name": k, "value": v} for k, v in values.items()]
    return env


def elastic_rendezvous(job: DdpJob) -> bool:
    return job.nodes > 1 and job.request.max_restarts > 0


def _args(job: DdpJob, job_id: str, *, with_counts: bool) -> list[str]:
    script = IMAGE_PAYLOAD if job.request.script is None else f"{USER_SCRIPT_DIR}/{job.script_name}"
    counts = torchrun_args(job) if with_counts else []
    return [
        "python",
        "-m",
        "torch.distributed.run",
        *counts,
        script,
        *job.payload_args,
        *checkpoint_args(job, shared_job_dir(job, job_id)),
    ]


def _common(job: DdpJob, job_id: str) -> dict[str, Any]:
    from pyctl.train.kueue import job_labels

    r = job.request
    labels = {
        "app.kubernetes.io/name": "pyctl-train",
        "app.kubernetes.io/managed-by": "pyctl",
        "pyctl/job-id": job_id,
        "pyctl/workload": "ddp",
    }
    return {
        "job": job_id,
        "service": job_id,
        "master": f"{job_id}-0.{job_id}",
        "namespace": r.namespace,
        "labels": labels,
        "job_labels": job_labels(labels, r.queue),  # the job object's: with Kueue's queue label
        "queue": r.queue or "",
        "nodes": job.nodes,
        "nproc": job.nproc_per_node,
        "image": job.image,
        "port": r.master_port,
        "gpus": r.gpus_per_node,
        "claim": r.claim,
        "claim_mount": r.claim_mount,
        "script_dir": USER_SCRIPT_DIR,
        "script_configmap": f"{job_id}-script" if r.script is not None else "",
        "wait_script": (TEMPLATES / "wait-for-master.sh").read_text(encoding="utf-8"),
    }


def render_ddp(job: DdpJob, job_id: str) -> dict[str, str]:
    """The manifests for `job`, by name (file stem): what `--render` writes and what is submitted."""
    context = _common(job, job_id)
    documents: dict[str, str] = {}
    if context["script_configmap"]:
        documents["configmap"] = render(
            TEMPLATES,
            "configmap.yaml.j2",
            **context,
            script_data={job.script_name: job.script_text.decode("utf-8", errors="replace")},
        )
    if job.request.kind == "trainjob":
        from pyctl.train.workloads import ddp_trainjob

        r = job.request
        runtime = ddp_trainjob.runtime_name(r.runtime, r.with_runtime, r.gpus_per_node)
        context = {**context, "env": _env(job, job_id, job_id, rank_from_index=False)}
        context["args"] = _args(job, job_id, with_counts=False)
        return documents | ddp_trainjob.render_documents(
            context, TEMPLATES, runtime=runtime, with_runtime=r.with_runtime
        )
    if job.request.kind == "pytorchjob":
        env = _env(job, job_id, job_id, rank_from_index=False)
        replicas = [{"type": "Master", "count": 1}]
        if job.nodes > 1:
            replicas.append({"type": "Worker", "count": job.nodes - 1})
        documents["pytorchjob"] = render(
            TEMPLATES,
            "pytorchjob.yaml.j2",
            **{**context, "master": f"{job_id}-master-0"},
            env=env,
            args=_args(job, job_id, with_counts=False),
            replicas=replicas,
        )
        return documents
    documents["service"] = render(TEMPLATES, "service.yaml.j2", **context)
    documents["job"] = render(
        TEMPLATES,
        "indexed-job.yaml.j2",
        **context,
        env=_env(job, job_id, job_id, rank_from_index=True),
        args=_args(job, job_id, with_counts=False),
        success_policy=kubernetes_minor(job.kubernetes_version) >= SUCCESS_POLICY_SINCE,
        per_index=kubernetes_minor(job.kubernetes_version) >= PER_INDEX_SINCE,
    )
    return documents

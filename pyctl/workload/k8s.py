"""`doctor --workload --backend k8s`: the probe and the DDP step as `pyctl train ddp` Indexed Jobs.

Both are rendered by `pyctl.train.workloads.ddp_manifests` (the probe as a user's `--script`, in a ConfigMap; the
payload image, `pyctl-ddp:cpu|cuda`, has torch), then changed in three ways for a check of nodes
rather than a training run:

- one pod per node: a required pod anti-affinity on the job's `pyctl/job-id` label over
  `kubernetes.io/hostname`, and as many completions as the inventory has Kubernetes nodes;
- each pod knows its node: `PYCTL_NODE_NAME` from the downward API (`spec.nodeName`), which the
  probe reports its figures under;
- a deadline: `activeDeadlineSeconds`, so pods that cannot be scheduled end the check instead of
  waiting for ever.

`--render DIR` writes the manifests and runs nothing. Otherwise each Job is submitted and followed
with `pyctl.train.backends.kubeclient.Client`, recorded as a job (`pyctl train logs ID`) and deleted when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pyctl.config import Settings
from pyctl.errors import UsageError
from pyctl.inventory import Cluster
from pyctl.train.jobs import JobRecord, JobStore, K8sInfo, NodeRecord, new_job_id
from pyctl.train.workloads import ddp, ddp_manifests
from pyctl.workload import verdict
from pyctl.workload.check import DDP_LR, WorkloadRequest, probe_path

NODE_NAME_ENV = "PYCTL_NODE_NAME"


def _nodes(cluster: Cluster) -> tuple[list[str], int]:
    nodes = [h.name for h in cluster.nodes]
    if not nodes:
        raise UsageError("the inventory has no Kubernetes nodes (control_plane, workers) to check")
    gpus = 1 if all(h.gpu for h in cluster.nodes) else 0
    return nodes, gpus


def _ddp_request(request: WorkloadRequest, nodes: int, gpus: int, **values: Any) -> ddp.DdpRequest:
    return ddp.DdpRequest(
        inventory=request.inventory,
        backend="k8s",
        nodes=nodes,
        nproc_per_node=1,
        gpus_per_node=gpus,
        image=request.image,
        namespace=request.namespace,
        **values,
    )


def one_pod_per_node(text: str, job_id: str, deadline_s: float) -> str:
    """The Job of `manifests.render_ddp` with one pod per node, the node's name in each pod, a deadline."""
    job = yaml.safe_load(text)
    job["spec"]["activeDeadlineSeconds"] = int(deadline_s)
    pod = job["spec"]["template"]["spec"]
    pod["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"pyctl/job-id": job_id}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    for container in pod["containers"]:
        container.setdefault("env", []).append(
            {"name": NODE_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
        )
    header = f"# pyctl doctor --workload {job_id}: one pod per node (anti-affinity), a deadline. Rendered by pyctl.\n"
    return header + yaml.safe_dump(job, sort_keys=False, width=120)


def render(
    request: WorkloadRequest, settings: Settings, cluster: Cluster, probe_id: str, ddp_id: str
) -> dict[str, dict[str, str]]:
    """{job id: {document name: YAML}} for the probe's Job and the DDP step's Job."""
    nodes, gpus = _nodes(cluster)
    probe_job = ddp.resolve(
        _ddp_request(
            request,
            len(nodes),
            gpus,
            script=probe_path(settings.project_dir),
            script_args=request.probe_args(None),
        ),
        cluster,
        settings.project_dir,
    )
    epochs, batch = request.ddp_shape(len(nodes))
    ddp_job = ddp.resolve(
        _ddp_request(request, len(nodes), gpus, dataset="digits", epochs=epochs, batch_size=batch, lr=DDP_LR),
        cluster,
        settings.project_dir,
    )
    documents = {}
    for job_id, job, deadline in (
        (probe_id, probe_job, request.probe_timeout_s),
        (ddp_id, ddp_job, request.ddp_timeout_s),
    ):
        rendered = ddp_manifests.render_ddp(job, job_id)
        rendered["job"] = one_pod_per_node(rendered["job"], job_id, deadline)
        documents[job_id] = rendered
    return documents


def run(
    request: WorkloadRequest, settings: Settings, cluster: Cluster, say: Callable[[str], None]
) -> dict[str, Any] | None:
    probe_id, ddp_id = new_job_id("allreduce"), new_job_id("ddp")
    documents = render(request, settings, cluster, probe_id, ddp_id)
    if request.render is not None:
        _write(request.render, documents, say)
        return None
    from pyctl.k8s import kube

    kubeconfig = kube.kubeconfig_for(settings, cluster.name, request.inventory)
    nodes, _ = _nodes(cluster)
    say(f"all-reduce between every pair of {len(nodes)} nodes ({request.size_mib:g} MiB): Job {probe_id}")
    outcome = _run_job(settings, kubeconfig, request, probe_id, documents[probe_id], len(nodes))
    summary = outcome.summary or {}
    pairs: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    if outcome.state == "succeeded" and summary.get("event") == "allreduce":
        pairs = list(summary.get("pairs") or [])
    else:
        failed = {name: f"not measured: the all-reduce Job {outcome.message}" for name in nodes}
    say(f"a short DDP run on {len(nodes)} node(s): Job {ddp_id}")
    outcome = _run_job(settings, kubeconfig, request, ddp_id, documents[ddp_id], len(nodes))
    loss = (outcome.summary or {}).get("loss")
    if outcome.state == "succeeded" and isinstance(loss, (int, float)):
        passed = loss <= request.loss_threshold
        reason = None if passed else f"the training loss {loss:.4g} is above {request.loss_threshold:g}"
        result = {"loss": loss, "passed": passed, "reason": reason}
    else:
        result = {"loss": None, "passed": False, "reason": f"the DDP Job {outcome.message}"}
    return verdict.judge(nodes, pairs, failed, result, min_gbps=request.min_gbps)


def _write(folder: Path, documents: dict[str, dict[str, str]], say: Callable[[str], None]) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--render {folder} exists and is not an empty folder", hint="give a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for job_id, rendered in documents.items():
        for name, text in rendered.items():
            (folder / f"{job_id}-{name}.yaml").write_text(text, encoding="utf-8")
            count += 1
    say(f"wrote {count} file(s) to {folder}; nothing was started")


def _run_job(  # noqa: PLR0917 - two call sites, each argument named there
    settings: Settings, kubeconfig: Path, request: WorkloadRequest, job_id: str, documents: dict[str, str], nodes: int
) -> Any:
    """Submit one Job, follow it to its end (its log into the job record), delete it; the Outcome."""
    from pyctl.train import logs
    from pyctl.train.backends import kubeclient

    record = JobRecord(
        id=job_id,
        workload=job_id.split("-", 1)[0],
        backend="k8s",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=f"{job_id}-{i}") for i in range(nodes)],
        options={"doctor_workload": True},
        k8s=K8sInfo(kubeconfig=str(kubeconfig), namespace=request.namespace, kind="indexed-job", name=job_id),
    )
    store = JobStore(settings)
    job_dir = store.create(record)
    client = kubeclient.Client(kubeconfig)
    client.submit(documents, request.namespace)
    log = logs.MergedLog(job_dir / "output.log")
    try:
        outcome = client.follow(record, log.write_line)
    finally:
        log.close()
        client.cancel(record)

    def finish(rec: JobRecord) -> None:
        rec.state, rec.exit_code, rec.message = outcome.state, outcome.exit_code, outcome.message
        rec.finished, rec.summary = time.time(), outcome.summary

    store.update(job_id, finish)
    return outcome

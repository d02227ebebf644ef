"""The Kubernetes backend's lifecycle: prepare (the kubeconfig, the record), submit the manifests, follow
the pods' logs, read the job's status, delete it. The API calls themselves are `kubeclient.Client`'s
(beside this module); the manifests are the workload's (`ddp_manifests.render_ddp`, `distdgl.render_k8s`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pyctl import inventory
from pyctl.config import Settings
from pyctl.errors import UsageError
from pyctl.train.backends import Prepared, Say, Write
from pyctl.train.jobs import JobRecord, JobStore, K8sInfo, NodeRecord
from pyctl.train.workloads import ddp, distdgl


def kubeconfig_of(settings: Settings, cluster: inventory.Cluster, inventory_path: Path) -> Path:
    """The admin kubeconfig `pyctl bootstrap` fetched; UsageError when there is none yet."""
    kubeconfig = settings.kubeconfig(cluster.name)
    if not kubeconfig.is_file():
        raise UsageError(
            f"no kubeconfig for cluster {cluster.name} at {kubeconfig}",
            hint=f"run 'pyctl bootstrap -i {inventory_path}' first (it fetches the admin kubeconfig)",
        )
    return kubeconfig


def render_ddp(job: ddp.DdpJob, job_id: str) -> dict[str, str]:
    """`--render`: the manifests, as files; nothing is submitted."""
    from pyctl.train.workloads import ddp_manifests

    return {f"{name}.yaml": text for name, text in ddp_manifests.render_ddp(job, job_id).items()}


def render_distdgl(job: distdgl.DistDglJob, job_id: str, project_dir: Path) -> dict[str, str]:
    """`--render`: the manifests (the payload is in the image: `project_dir` is not read)."""
    del project_dir
    return {f"{name}.yaml": text for name, text in distdgl.render_k8s(job, job_id).items()}


def prepare_ddp(settings: Settings, cluster: inventory.Cluster, job: ddp.DdpJob, job_id: str) -> Prepared:
    from pyctl.train.workloads import ddp_manifests

    r = job.request
    documents = ddp_manifests.render_ddp(job, job_id)
    kubeconfig = kubeconfig_of(settings, cluster, r.inventory)
    record = JobRecord(
        id=job_id,
        workload="ddp",
        backend="k8s",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=f"{job_id}-{i}") for i in range(job.nodes)],
        options=job.options,
        k8s=K8sInfo(
            kubeconfig=str(kubeconfig),
            namespace=r.namespace,
            kind=r.kind,
            name=job_id,
            queue=r.queue,
            start_timeout_s=r.start_timeout_s,
            image=job.image,
            claim=r.claim,
            claim_mount=r.claim_mount,
        ),
    )
    return Prepared(record, documents)


def prepare_distdgl(settings: Settings, cluster: inventory.Cluster, job: distdgl.DistDglJob, job_id: str) -> Prepared:
    r = job.request
    documents = distdgl.render_k8s(job, job_id)
    kubeconfig = kubeconfig_of(settings, cluster, r.inventory)
    record = JobRecord(
        id=job_id,
        workload="distdgl",
        backend="k8s",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=f"{job_id}-{i}") for i in range(job.num_parts)],
        options=job.options,
        k8s=K8sInfo(
            kubeconfig=str(kubeconfig),
            namespace=r.namespace,
            kind="indexed-job",
            name=job_id,
            queue=r.queue,
            start_timeout_s=r.start_timeout_s,
        ),
    )
    return Prepared(record, documents)


def client_of(record: JobRecord) -> Any:
    """A `pyctl.train.backends.kubeclient.Client` on the job's recorded kubeconfig (UsageError when it is gone)."""
    from pyctl.train.backends import kubeclient

    path = Path(record.k8s.kubeconfig)
    if not path.is_file():
        raise UsageError(f"job {record.id}: its kubeconfig {path} is gone", hint="run 'pyctl bootstrap' again")
    return kubeclient.Client(path)


def apply_outcome(record: JobRecord, outcome: Any) -> None:
    """Copy a `k8s.Outcome` (state, exit code, message, summary) into the record."""
    record.state, record.exit_code, record.message = outcome.state, outcome.exit_code, outcome.message
    if outcome.summary is not None:
        record.summary = outcome.summary
    if outcome.state in ("succeeded", "failed", "cancelled"):
        record.finished = record.finished or time.time()


def _fail(record: JobRecord, message: str) -> None:
    record.state, record.exit_code, record.message, record.finished = "failed", 1, message, time.time()


class K8sBackend:
    """Jobs submitted to Kubernetes; the API is the truth, the record follows it."""

    interrupt_note = ""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def start(self, prepared: Prepared, say: Say) -> JobRecord:
        """Check the namespace (`say` gets the warnings), record the job and its manifests, submit them."""
        from pyctl.train.backends import kubeclient

        record, documents = prepared.record, prepared.work
        client = kubeclient.Client(Path(record.k8s.kubeconfig))
        namespace = record.k8s.namespace
        for warning in client.check_before_submit(documents, namespace):
            say(f"warning: {warning}")
        job_dir = self.store.create(record)
        (job_dir / "manifests").mkdir(mode=0o700)
        for name, text in documents.items():
            (job_dir / "manifests" / f"{name}.yaml").write_text(text, encoding="utf-8")
        try:
            client.submit(documents, namespace)
        except kubeclient.KubeError as exc:
            reason = f"submit failed: {exc.message}"
            self.store.update(record.id, lambda rec: _fail(rec, reason))
            raise
        return self.store.update(record.id, lambda rec: setattr(rec, "state", "running"))

    def follow(self, job_id: str, write: Write, say: Say) -> JobRecord:
        record = self.store.load(job_id)
        outcome = client_of(record).follow(record, write, say=say, log_path=self.store.dir(job_id) / "output.log")
        return self.store.update(job_id, lambda rec: apply_outcome(rec, outcome))

    def unfollowed_lines(self, job_id: str) -> list[str]:
        del job_id  # the pods' logs are the API's: nothing buffered here
        return []

    def refresh(self, record: JobRecord) -> JobRecord:
        if record.final:
            return record
        outcome = client_of(record).status(record)
        return self.store.update(record.id, lambda rec: apply_outcome(rec, outcome))

    def cancel(self, record: JobRecord, wait: bool = True) -> JobRecord:
        del wait  # deletion is foreground: the API answers once the Job is going
        if record.final:
            return record
        client_of(record).cancel(record)

        def change(rec: JobRecord) -> None:
            rec.state, rec.exit_code, rec.message, rec.finished = "cancelled", 130, "cancelled", time.time()

        return self.store.update(record.id, change)

    def logs(self, record: JobRecord, write: Write) -> None:
        client_of(record).logs(record, write)

"""The rendered Indexed Job itself, run: each pod's command and env (downward API resolved as
Kubernetes would) in its own network namespace, with `<job>-<i>.<svc>` resolving as the headless
Service would, through the kubelet stand-in (tests/doubles/kubelet_standin.py).

What this proves: the pod command (the master-port wait, then torchrun), the PET_* wiring (node rank
from the completion index, master = pod 0's DNS name, static rendezvous; c10d with PET_LOCAL_ADDR for
restarts), the volumes (the claim for the checkpoint, /dev/shm), and that the job completes. What it
does not: the Job controller, the scheduler, a container runtime, real cluster DNS.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pyctl.inventory import load
from pyctl.train.workloads import ddp, ddp_manifests
from tests.doubles.kubelet_standin import KubeletStandin
from tests.train.conftest import DDP_PYTHON, REPO

pytestmark = pytest.mark.lab


class OwnRecordLateStandin(KubeletStandin):
    """As with real cluster DNS, a pod resolves its own `<host>.<subdomain>` through DNS too (the kubelet's
    /etc/hosts holds only its FQDN and host name), so a record held back is missing for the pod itself."""

    def etc_hosts(self, pod):
        text = super().etc_hosts(pod)
        if pod.index in self._published:
            return text
        own = f"\t{pod.hostname}.{self.subdomain}"
        return "\n".join(line for line in text.splitlines() if not line.endswith(own)) + "\n"


def _run_pods(
    train_lab,
    tmp_path: Path,
    job_id: str,
    dns_delays: dict[int, float | None] | None = None,
    standin_class: type[KubeletStandin] = KubeletStandin,
    **overrides,
) -> tuple[KubeletStandin, dict[int, int], Path]:
    request = ddp.DdpRequest(
        inventory=Path(train_lab.inventory), backend="k8s", nodes=2, dataset="digits", batch_size=32, lr=0.05,
        threads=1, **overrides,
    )  # fmt: skip
    job = ddp.resolve(request, load(train_lab.inventory), REPO)
    documents = ddp_manifests.render_ddp(job, job_id)
    manifest = yaml.safe_load(documents["job"])
    service = yaml.safe_load(documents["service"])
    assert manifest["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]
    share = tmp_path / "share"
    share.mkdir()
    standin = standin_class(
        manifest,
        [(h.namespace, h.address) for h in train_lab.lab.hosts],
        image_paths={"/opt/pyctl/ddp": REPO / "payloads" / "ddp"},  # the image's payload folder
        image_path_env=f"{DDP_PYTHON.parent}:/usr/local/bin:/usr/bin:/bin",  # the image's python, torchrun
        claims={"pyctl-shared": share},
        workdir=tmp_path / "pods",
        dns_delays=dns_delays,
    )
    codes = standin.run(timeout=480)
    return standin, codes, share


def _summary(log: str) -> dict:
    import json

    lines = [ln for ln in log.splitlines() if ln.startswith("PYCTL_SUMMARY ")]
    assert len(lines) == 1, log[-4000:]
    return json.loads(lines[0].split(" ", 1)[1])


def test_rendered_indexed_job_runs_to_completion(train_lab, tmp_path):
    job_id = "ddp-standin"
    standin, codes, share = _run_pods(train_lab, tmp_path, job_id, epochs=6)
    pod0, pod1 = standin.pods
    # Pod 1 may still be tearing down when pod 0 succeeds; successPolicy then ends the job.
    assert standin.outcome == "succeeded" and codes[0] == 0, (
        f"{codes}\n--- pod 0 ---\n{pod0.log()[-3000:]}\n--- pod 1 ---\n{pod1.log()[-3000:]}"
    )
    summary = _summary(pod0.log())
    assert summary["world_size"] == 2 and summary["test_accuracy"] >= 0.90
    # Pod 1 started first and waited for pod 0's name (published once pod 0 started), then for its port.
    assert f"pyctl: node 0 ({job_id}-0.{job_id}:29500) is listening after" in pod1.log()
    # Node rank from the completion index: global rank 0 is on pod 0, rank 1 on pod 1.
    assert f"[host={job_id}-0 rank=0/2" in pod0.log() and f"[host={job_id}-1 rank=1/2" in pod1.log()
    assert (share / "pyctl" / "jobs" / job_id / "checkpoint.pt").is_file(), "checkpoint on the claim"


def test_rendered_indexed_job_restarts_across_pods(train_lab, tmp_path):
    """--max-restarts on 2 nodes: c10d rendezvous at pod 0 (PET_LOCAL_ADDR = $(PET_NODE_RANK) expanded),
    a worker killed mid-epoch, the pods' torchruns restart and resume from the checkpoint on the claim.
    Pod 0's record is published 20 s late, for pod 0 itself too, as cluster DNS may: pod 0 still hosts the
    c10d store (by completion index; torchrun's own guess resolves that name, fails and says no)."""
    job_id = "ddp-standin-r"
    standin, codes, _ = _run_pods(
        train_lab, tmp_path, job_id, dns_delays={0: 20.0}, standin_class=OwnRecordLateStandin,
        epochs=4, max_restarts=1, env=("PYCTL_DDP_FAIL_AT=2:2:1",),
    )  # fmt: skip
    pod0, pod1 = standin.pods
    assert standin.outcome == "succeeded" and codes[0] == 0, (
        f"{codes}\n--- pod 0 ---\n{pod0.log()[-3000:]}\n--- pod 1 ---\n{pod1.log()[-3000:]}"
    )
    summary = _summary(pod0.log())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == 4, summary
    assert "restart_count=1" in pod0.log() + pod1.log()

"""The rendered DistDGL Indexed Job itself, run by the kubelet stand-in (tests/doubles/kubelet_standin.py):
each pod's command, env (downward API: completion index, pod IP) and volumes (the claim, a memory
emptyDir on /dev/shm, the start-up ConfigMap) in its own network namespace (a lab host's), with
`<job>-<i>.<svc>` answered as the headless Service would.

What this proves: the start-up step in a pod (peer names resolved to IPs, retried while a record is
missing, ip_config in completion-index order, its checks), the partition step on pod 0 into the claim,
launch.py's servers and trainers, and the job finishing with the accuracy bound; misconfigurations fail
within 60 s naming the cause. What it does not: the Job controller, the scheduler, a container runtime,
real cluster DNS, the image (the payload folder and the DistDGL environment stand in for it).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml

pytest.register_assert_rewrite("tests.train.distdgl_support", "distdgl_fixtures")
from pyctl.inventory import load  # noqa: E402
from pyctl.train.workloads import distdgl  # noqa: E402
from tests.doubles.kubelet_standin import KubeletStandin  # noqa: E402
from tests.train.distdgl_support import FAIL_BOUND_S, REPO  # noqa: E402

pytest_plugins = ["tests.train.distdgl_support", "distdgl_fixtures"]
pytestmark = pytest.mark.lab


def _render(distdgl_lab, job_id: str, **overrides) -> dict[str, dict]:
    request = distdgl.DistDglRequest(
        inventory=Path(distdgl_lab.inventory), backend="k8s", graph="synthetic", epochs=20, batch_size=256,
        fanouts="10,10", eval_fanouts="-1,-1", **overrides,
    )  # fmt: skip
    job = distdgl.resolve(request, load(distdgl_lab.inventory), REPO)
    return {name: yaml.safe_load(text) for name, text in distdgl.render_k8s(job, job_id).items()}


def _run(distdgl_lab, tmp_path: Path, documents: dict[str, dict], timeout: float = 480, **standin):
    manifest, configmap = documents["job"], documents["configmap"]
    assert manifest["spec"]["template"]["spec"]["subdomain"] == documents["service"]["metadata"]["name"]
    runner = KubeletStandin(
        manifest,
        distdgl_lab.hosts,
        image_paths={"/app": REPO / "payloads" / "distdgl"},  # the image's payload folder (Dockerfile: /app)
        image_path_env=f"{distdgl_lab.python.parent}:/usr/local/bin:/usr/bin:/bin",  # the image's python
        claims={"pyctl-shared": distdgl_lab.share},  # the same folder the SSH tests share: one partition cache
        configmaps={configmap["metadata"]["name"]: configmap["data"]},
        workdir=tmp_path / "pods",
        **standin,
    )
    started = time.monotonic()
    codes = runner.run(timeout=timeout)
    return runner, codes, time.monotonic() - started


def _logs(runner) -> str:
    return "\n".join(f"--- pod {p.index} ---\n{p.log()[-4000:]}" for p in runner.pods)


def _summary(log: str) -> dict:
    lines = [ln for ln in log.splitlines() if ln.startswith("PYCTL_SUMMARY ")]
    assert len(lines) == 1, log[-4000:]
    return json.loads(lines[0].split(" ", 1)[1])


def test_rendered_job_runs_to_completion_with_the_accuracy_bound(distdgl_lab, local_summary, tmp_path):
    """Pod 0's DNS record appears only after 8 s (pod 1 retries), then both pods train to the end."""
    job_id = "distdgl-standin"
    runner, codes, _ = _run(distdgl_lab, tmp_path, _render(distdgl_lab, job_id), dns_delays={0: 8.0})
    pod0, pod1 = runner.pods
    assert runner.outcome == "succeeded" and codes[0] == 0, f"{codes}\n{_logs(runner)}"
    summary = _summary(pod0.log())
    print(
        f"\nDistDGL test accuracy: single process {local_summary['test_acc']:.4f}, "
        f"2 pods (kubelet stand-in) {summary['test_acc']:.4f}"
    )
    assert summary["world_size"] == 2 and abs(summary["test_acc"] - local_summary["test_acc"]) <= 0.02
    # The start-up step resolved the peers' names (pod 1 waited for pod 0's record) and wrote ip_config
    # in completion-index order, with literal IPv4 addresses.
    names = [f"{job_id}-0.{job_id}", f"{job_id}-1.{job_id}"]
    addresses = [a for _, a in distdgl_lab.hosts]
    assert f"waiting for DNS of {names[0]}" in pod1.log(), pod1.log()[-3000:]
    resolved = "resolved 2 peer(s) after"
    assert resolved in pod0.log() and resolved in pod1.log()
    assert f"{names[0]}={addresses[0]}, {names[1]}={addresses[1]}" in pod1.log()
    ip_config = distdgl_lab.share / "pyctl" / "jobs" / job_id / "machine-1" / "ip_config.txt"
    assert ip_config.read_text() == f"{addresses[0]} 30050\n{addresses[1]} 30050\n"
    # Pod 0 ran the partition step into the claim (or found the session's cache there); pod 1 waited.
    assert "machine 0: partition " in pod0.log() and "/mnt/pyctl-shared/pyctl/partitions/" in pod0.log()
    assert "machine 1: machine 0's partition is ready after" in pod1.log()
    assert "[server 0] " in pod0.log() and "[server 1] " in pod1.log()


def _fails_fast(runner, codes, seconds: float, code: int, cause: str) -> None:
    assert runner.outcome == "failed", f"{codes}\n{_logs(runner)}"
    assert seconds < FAIL_BOUND_S, f"{seconds:.1f} s\n{_logs(runner)}"
    failed = [p for p in runner.pods if p.exit_code == code]
    assert failed, f"{codes}\n{_logs(runner)}"
    errors = [ln for p in failed for ln in p.log().splitlines() if ln.startswith("PYCTL_ERROR ")]
    assert errors and all(cause in ln for ln in errors), f"{cause!r} not in {errors}\n{_logs(runner)}"


def _edit_spec(documents: dict[str, dict], **changes) -> dict[str, dict]:
    edited = copy.deepcopy(documents)
    spec = json.loads(edited["configmap"]["data"]["job.json"])
    spec.update(changes)
    edited["configmap"]["data"]["job.json"] = json.dumps(spec)
    return edited


def test_wrong_client_count_fails_fast(distdgl_lab, tmp_path):
    documents = _edit_spec(_render(distdgl_lab, "distdgl-clients"), num_clients=3)
    runner, codes, seconds = _run(distdgl_lab, tmp_path, documents, timeout=FAIL_BOUND_S + 30)
    _fails_fast(runner, codes, seconds, 2, "wrong client count: the job expects DGL_NUM_CLIENT=3 but trainers x")


def test_num_parts_not_matching_the_pods_fails_fast(distdgl_lab, tmp_path):
    documents = _edit_spec(_render(distdgl_lab, "distdgl-parts"), num_parts=3)
    runner, codes, seconds = _run(distdgl_lab, tmp_path, documents, timeout=FAIL_BOUND_S + 30)
    _fails_fast(
        runner, codes, seconds, 2, "num_parts mismatch: the graph is cut into 3 partition(s) but the job runs 2"
    )


def test_own_ip_missing_fails_fast(distdgl_lab, tmp_path):
    """The pod's IP (downward API) is not the address its own name resolves to: a stale record."""
    documents = _render(distdgl_lab, "distdgl-ownip")
    env = documents["job"]["spec"]["template"]["spec"]["containers"][0]["env"]
    for item in env:
        if item["name"] == "PYCTL_POD_IP":
            item.pop("valueFrom")
            item["value"] = "10.254.254.254"
    runner, codes, seconds = _run(distdgl_lab, tmp_path, documents, timeout=FAIL_BOUND_S + 30)
    _fails_fast(runner, codes, seconds, 2, "own IP missing: this machine's IP is 10.254.254.254 but machine")


def test_peer_name_that_never_resolves_fails_within_the_bound(distdgl_lab, tmp_path):
    """Pod 1's record never appears (the pod never got an address): pod 0 gives up after --peer-timeout
    (8 s here; the default 45 s is in the golden job.json), naming the name, instead of hanging; the gang rule
    stops pod 1."""
    documents = _render(distdgl_lab, "distdgl-dns", peer_timeout=8)
    runner, codes, seconds = _run(
        distdgl_lab, tmp_path, documents, timeout=FAIL_BOUND_S + 30, dns_delays={1: None}, master_delay_s=0
    )
    _fails_fast(runner, codes, seconds, 3, "peer DNS: 1 of 2 machine name(s) did not resolve within 8 s")
    assert "distdgl-dns-1.distdgl-dns" in runner.pods[0].log()


def test_the_users_own_trainer_runs_in_the_pods(distdgl_lab, tmp_path):
    """--script on Kubernetes: the trainer comes from the start-up ConfigMap (beside job.json), and the
    pods run it as servers and trainers with DGL_IP_CONFIG / DGL_CONF_PATH on pod 0's partition."""
    request = distdgl.DistDglRequest(
        inventory=Path(distdgl_lab.inventory), backend="k8s", graph="synthetic",
        script=Path(__file__).with_name("distdgl_user_trainer.py"), train_args=("--tag", "pods"),
    )  # fmt: skip
    job = distdgl.resolve(request, load(distdgl_lab.inventory), REPO)
    documents = {name: yaml.safe_load(text) for name, text in distdgl.render_k8s(job, "distdgl-script").items()}
    runner, codes, _ = _run(distdgl_lab, tmp_path, documents)
    assert runner.outcome == "succeeded" and codes[0] == 0, f"{codes}\n{_logs(runner)}"
    summary = _summary(runner.pods[0].log())
    assert summary["tag"] == "pods" and summary["world_size"] == 2
    assert summary["seeds"] == summary["train_nodes"] > 0, summary
    assert "/opt/pyctl/startup/user_distdgl_user_trainer.py --tag pods" in runner.pods[1].log()

"""`--kind trainjob` (Kubeflow Trainer v2) and `--queue` (Kueue) renders: golden files, the pinned schemas.

Golden files live in tests/golden/train/<case>/; `python tests/tools/render_goldens.py --train` writes
them (review the diff), these tests only compare. TrainJob and ClusterTrainingRuntime documents are
validated against Trainer v2.3.0's CRD schemas (tests/fixtures/crds/, via crd_schema.py), core and
batch ones with kubernetes-validate against the inventory's Kubernetes version, strict.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pyctl.inventory import load
from pyctl.train.workloads import ddp, ddp_manifests
from tests.train import crd_schema

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "train"
JOB_ID = "ddp-golden"
SCRIPT = "import torch.distributed as dist\ndist.init_process_group('gloo')\nprint('hello', dist.get_rank())\n"
INVENTORY = """\
all:
  vars:
    ansible_user: ubuntu
    kubernetes_version: "1.36"
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 192.168.10.11}
    workers:
      hosts:
        gpu1: {ansible_host: 192.168.10.21, gpu: true}
        gpu2: {ansible_host: 192.168.10.22, gpu: true}
"""
CASES = {
    "trainjob": {"kind": "trainjob", "nodes": 3, "nproc_per_node": 2, "epochs": 3},
    "trainjob-gpu-runtime-queue": {
        "kind": "trainjob",
        "gpus_per_node": 2,
        "with_runtime": True,
        "queue": "team-a",
        "namespace": "training",
        "checkpoint_dir": "/mnt/pyctl-shared/runs/a",
        "image": "registry.local/pyctl-ddp:cuda",
    },
    "trainjob-script": {"kind": "trainjob", "nodes": 2, "script": "SCRIPT", "script_args": ("--steps", "3")},
    "indexed-job-queue": {"nodes": 2, "queue": "team-a"},
}
PLURALS = {"TrainJob": "trainjobs", "ClusterTrainingRuntime": "clustertrainingruntimes"}


def render_case(tmp_path: Path, case: str) -> dict[str, str]:
    """The documents of one case, by name (what `--render` writes)."""
    overrides = dict(CASES[case])
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    if overrides.get("script") == "SCRIPT":
        script = tmp_path / "user_train.py"
        script.write_text(SCRIPT)
        overrides["script"] = script
    request = ddp.DdpRequest(inventory=inventory, backend="k8s", **overrides)
    job = ddp.resolve(request, load(inventory), REPO)
    return ddp_manifests.render_ddp(job, JOB_ID)


def _documents(tmp_path: Path, case: str) -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render_case(tmp_path, case).items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_renders_match_golden_files(tmp_path, case):
    documents = render_case(tmp_path, case)
    folder = GOLDEN / case
    expected = {p.stem: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    assert expected, f"no golden files in {folder}: run python tests/tools/render_goldens.py --train"
    assert documents == expected, "renders differ from the golden files: python tests/tools/render_goldens.py --train"


@pytest.mark.parametrize("case", sorted(CASES))
def test_renders_validate_against_the_pinned_schemas(tmp_path, case):
    for document in _documents(tmp_path, case).values():
        if document["apiVersion"].startswith("trainer.kubeflow.org/"):
            crd_schema.validate(document, PLURALS[document["kind"]])
        else:
            kubernetes_validate.validate(document, "1.36.0", strict=True)


def test_the_crd_validation_refuses_what_the_api_server_refuses(tmp_path):
    """The validator is not a rubber stamp: unknown fields, wrong types and create-time CEL rules fail."""
    good = _documents(tmp_path, "trainjob")["trainjob"]
    crd_schema.validate(good, "trainjobs")
    broken = [
        ("spec.trainer.numNodes", lambda d: d["spec"]["trainer"].__setitem__("numNodes", "3")),
        ("spec.trainer.gpus", lambda d: d["spec"]["trainer"].__setitem__("gpus", 1)),
        ("metadata.name", lambda d: d["metadata"].__setitem__("name", "Ddp_Golden")),
        ("spec.managedBy", lambda d: d["spec"].__setitem__("managedBy", "someone")),
    ]
    for what, change in broken:
        document = yaml.safe_load(yaml.safe_dump(good))
        change(document)
        with pytest.raises(AssertionError):
            crd_schema.validate(document, "trainjobs")
        assert what


def test_trainjob_wiring(tmp_path):
    """What the operator and torchrun depend on, stated once more than the golden file does."""
    trainjob = _documents(tmp_path, "trainjob")["trainjob"]
    spec = trainjob["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["trainer"]["numNodes"] == 3 and spec["trainer"]["numProcPerNode"] == 2
    names = {e["name"] for e in spec["trainer"]["env"]}
    # The operator injects these and its webhook refuses a TrainJob that sets them.
    assert not names & {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
    assert {"PET_MAX_RESTARTS", "PYCTL_JOB_ID"} <= names
    assert "suspend" not in spec and "kueue.x-k8s.io/queue-name" not in trainjob["metadata"]["labels"]
    patch = spec["runtimePatches"][0]
    pod = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert patch["manager"] == "pyctl"
    assert pod["metadata"]["labels"]["pyctl/job-id"] == JOB_ID
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"shared", "dshm"}
    assert pod["spec"]["containers"][0]["name"] == "node"  # Trainer's trainer container


def test_gpu_trainjob_with_pyctl_runtime_and_queue(tmp_path):
    documents = _documents(tmp_path, "trainjob-gpu-runtime-queue")
    runtime, trainjob = documents["clustertrainingruntime"], documents["trainjob"]
    assert runtime["metadata"]["name"] == "pyctl-torch-nvidia" == trainjob["spec"]["runtimeRef"]["name"]
    assert "namespace" not in runtime["metadata"], "a ClusterTrainingRuntime is cluster-scoped"
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert node["template"]["metadata"]["labels"] == {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    assert node["template"]["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert runtime["spec"]["template"]["spec"]["failurePolicy"] == {"maxRestarts": 0}
    assert node["template"]["spec"]["backoffLimit"] == 0
    assert trainjob["spec"]["trainer"]["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 2}}
    # Kueue: the queue label on the TrainJob, created suspended; the pods are not labelled for Kueue.
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert trainjob["spec"]["suspend"] is True
    text = render_case(tmp_path, "trainjob-gpu-runtime-queue")["trainjob"]
    assert "Gang scheduling" in text and "queue-name=team-a" in text
    pod = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert "kueue.x-k8s.io/queue-name" not in pod["template"]["spec"]["template"]["metadata"]["labels"]


def test_indexed_job_with_a_queue_is_suspended_and_labelled(tmp_path):
    documents = _documents(tmp_path, "indexed-job-queue")
    job = documents["job"]
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    assert "Gang scheduling" in render_case(tmp_path, "indexed-job-queue")["job"]


def test_trainjob_script_is_mounted_from_its_configmap(tmp_path):
    documents = _documents(tmp_path, "trainjob-script")
    assert set(documents) == {"configmap", "trainjob"}
    trainjob = documents["trainjob"]
    pod = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    spec = pod["template"]["spec"]["template"]["spec"]
    assert {"name": "script", "configMap": {"name": f"{JOB_ID}-script"}} in spec["volumes"]
    assert any(m["name"] == "script" for m in spec["containers"][0]["volumeMounts"])
    assert trainjob["spec"]["trainer"]["args"][3] == "/opt/pyctl/user/user_train.py"

"""Every Kubernetes manifest `pyctl train ddp` renders: golden files, and the pinned API schema.

Golden files live in tests/golden/train/<case>/<document>.yaml. After an intended change, regenerate
them and review the diff:

    python tests/tools/render_goldens.py   # the tests themselves never rewrite them

Schemas: core and batch objects are validated with kubernetes-validate against the version the
inventory pins (`kubernetes_version`, default 1.36), strict (unknown fields fail). The PyTorchJob is a
CRD whose schema pyctl does not vendor: its pod templates are validated as core PodTemplates, and its
own fields against PYTORCHJOB_SCHEMA below, written from the kubeflow.org/v1 PyTorchJob CRD of
training-operator v1.9.0 (the fields pyctl uses, with their types and the CRD's required list).
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pyctl.inventory import load
from pyctl.train.workloads import ddp, ddp_manifests

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "train"
JOB_ID = "ddp-golden"
SCRIPT = "import torch.distributed as dist\ndist.init_process_group('gloo')\nprint('hello', dist.get_rank())\n"

_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
}
_REPLICA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["replicas", "template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "restartPolicy": {"type": "string", "enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _POD_TEMPLATE,
    },
}
PYTORCHJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["pytorchReplicaSpecs"],
            "properties": {
                "nprocPerNode": {"type": "string"},
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "backoffLimit": {"type": "integer"},
                        "cleanPodPolicy": {"type": "string", "enum": ["All", "Running", "None"]},
                        "activeDeadlineSeconds": {"type": "integer"},
                        "ttlSecondsAfterFinished": {"type": "integer"},
                    },
                },
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["Master"],
                    "properties": {
                        "Master": {**_REPLICA, "properties": {**_REPLICA["properties"], "replicas": {"const": 1}}},
                        "Worker": _REPLICA,
                    },
                },
            },
        },
    },
}

INVENTORY = """\
all:
  vars:
    ansible_user: ubuntu
    kubernetes_version: "{version}"
  children:
    control_plane:
      hosts:
        cp1: {{ansible_host: 192.168.10.11}}
    workers:
      hosts:
        gpu1: {{ansible_host: 192.168.10.21, gpu: true}}
        gpu2: {{ansible_host: 192.168.10.22, gpu: true}}
"""

CASES = {
    # name: (kubernetes_version, request overrides)
    "indexed-job": ("1.36", {"nodes": 3, "epochs": 5}),
    "indexed-job-restarts-gpu": (
        "1.36",
        {
            "gpus_per_node": 2,
            "max_restarts": 2,
            "checkpoint_dir": "/mnt/pyctl-shared/runs/a",
            "dataset": "fashion-mnist",
            "data_path": "/mnt/pyctl-shared/data/fashion-mnist",
            "image": "registry.local/pyctl-ddp:cuda",
        },
    ),
    "indexed-job-k8s-1.30": ("1.30", {"nodes": 2}),
    "indexed-job-script": ("1.36", {"nodes": 2, "script": "SCRIPT", "script_args": ("--steps", "3")}),
    "pytorchjob": ("1.36", {"kind": "pytorchjob", "nodes": 3, "nproc_per_node": 2, "epochs": 3}),
    "pytorchjob-gpu": ("1.36", {"kind": "pytorchjob", "gpus_per_node": 1, "namespace": "training", "claim": "data"}),
}


def _render(tmp_path: Path, case: str) -> tuple[str, dict[str, str]]:
    version, overrides = CASES[case]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY.format(version=version))
    if overrides.get("script") == "SCRIPT":
        script = tmp_path / "user_train.py"
        script.write_text(SCRIPT)
        overrides = {**overrides, "script": script}
    request = ddp.DdpRequest(inventory=inventory, backend="k8s", **overrides)
    job = ddp.resolve(request, load(inventory), Path(__file__).resolve().parents[2])
    return version, ddp_manifests.render_ddp(job, JOB_ID)


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_match_golden_files(tmp_path, case):
    _, documents = _render(tmp_path, case)
    folder = GOLDEN / case
    expected = {p.stem: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    assert expected, f"no golden files in {folder}: run python tests/tools/render_goldens.py"
    assert documents == expected, "rendered manifests differ from the golden files (see the module docstring)"


@pytest.mark.parametrize("case", sorted(CASES))
def test_manifests_validate_against_the_pinned_schema(tmp_path, case):
    version, documents = _render(tmp_path, case)
    for text in documents.values():
        document = yaml.safe_load(text)
        if document["apiVersion"] == "kubeflow.org/v1":
            jsonschema.validate(document, PYTORCHJOB_SCHEMA)
            for replica in document["spec"]["pytorchReplicaSpecs"].values():
                template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": "t"},
                    "template": replica["template"],
                }
                kubernetes_validate.validate(template, f"{version}.0", strict=True)
        else:
            kubernetes_validate.validate(document, f"{version}.0", strict=True)


def test_indexed_job_wiring(tmp_path):
    """The facts the pods depend on, stated once more than the golden file does."""
    _, documents = _render(tmp_path, "indexed-job")
    job = yaml.safe_load(documents["job"])
    service = yaml.safe_load(documents["service"])
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"job-name": JOB_ID}
    assert pod["subdomain"] == service["metadata"]["name"]
    assert env["PET_MASTER_ADDR"]["value"] == f"{JOB_ID}-0.{JOB_ID}"
    assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"].endswith(
        "['batch.kubernetes.io/job-completion-index']"
    )
    assert env["PET_NNODES"]["value"] == "3" and env["PET_RDZV_BACKEND"]["value"] == "static"
    assert job["spec"]["backoffLimitPerIndex"] == 0 and job["spec"]["maxFailedIndexes"] == 0
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "pyctl-shared"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}


def test_gpu_job_requests_gpus_and_the_nvidia_runtime(tmp_path):
    _, documents = _render(tmp_path, "indexed-job-restarts-gpu")
    pod = yaml.safe_load(documents["job"])["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    # A quantity string: kubernetes 37's typed client (pydantic) refuses an integer in resources.limits.
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["PET_RDZV_BACKEND"] == "c10d"
    assert "NCCL_SOCKET_IFNAME" not in env and "GLOO_SOCKET_IFNAME" not in env, "pods use their own interface"
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"

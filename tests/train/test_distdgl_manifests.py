"""Every Kubernetes manifest `pyctl train distdgl` renders: golden files, and the pinned API schema.

Golden files live in tests/golden/train/<case>/<document>.yaml. After an intended change, regenerate
them and review the diff:

    python tests/tools/render_goldens.py   # the tests themselves never rewrite them

Schemas: every document is validated with kubernetes-validate (pinned in requirements-dev.txt) against
the version the inventory pins (`kubernetes_version`), strict (unknown fields fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pyctl.inventory import load
from pyctl.train.workloads import distdgl

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "train"
REPO = Path(__file__).resolve().parents[2]
JOB_ID = "distdgl-golden"

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
    "distdgl": ("1.36", {}),
    "distdgl-samplers-k8s-1.30": (
        "1.30",
        {
            "graph": "ogbn-products",
            "num_parts": 2,
            "num_trainers": 2,
            "num_samplers": 1,
            "num_servers": 2,
            "epochs": 5,
            "fanouts": "10,25",
            "eval_fanouts": "-1,-1",
            "train_args": ("--hidden", "128"),
            "env": ("FOO=bar",),
            "image": "registry.local/pyctl-distdgl:cuda",
            "namespace": "training",
            "claim": "data",
            "claim_mount": "/data",
        },
    ),
    # The user's own trainer travels in the start-up ConfigMap, beside job.json, which names it.
    "distdgl-script": (
        "1.36",
        {"script": Path(__file__).with_name("distdgl_user_trainer.py"), "train_args": ("--tag", "mine")},
    ),
    "distdgl-graph-path": (
        "1.36",
        {"graph_path": "/mnt/pyctl-shared/graphs/mine.bin", "part_method": "random", "num_parts": 2, "port": 31000},
    ),
}


def _render(tmp_path: Path, case: str) -> tuple[str, dict[str, str]]:
    version, overrides = CASES[case]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY.format(version=version))
    request = distdgl.DistDglRequest(inventory=inventory, backend="k8s", **overrides)
    job = distdgl.resolve(request, load(inventory), REPO)
    return version, distdgl.render_k8s(job, JOB_ID)


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
        kubernetes_validate.validate(yaml.safe_load(text), f"{version}.0", strict=True)


def test_indexed_job_wiring(tmp_path):
    """The facts the pods depend on, stated once more than the golden files do."""
    _, documents = _render(tmp_path, "distdgl-samplers-k8s-1.30")
    job, service, configmap = (yaml.safe_load(documents[n]) for n in ("job", "service", "configmap"))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"job-name": JOB_ID} and pod["subdomain"] == service["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert job["spec"]["backoffLimitPerIndex"] == 0 and job["spec"]["maxFailedIndexes"] == 0
    assert "successPolicy" not in job["spec"], "Kubernetes 1.30 has no successPolicy"
    assert env["PYCTL_MACHINE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"].endswith(
        "['batch.kubernetes.io/job-completion-index']"
    )
    assert env["PYCTL_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["PYCTL_MACHINES"]["value"] == "2" and "GLOO_SOCKET_IFNAME" not in env
    assert container["command"] == ["python", "/opt/pyctl/startup/distdgl_startup.py"]
    assert container["args"][-2:] == ["--own-ip", "$(PYCTL_POD_IP)"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"} and mounts["dshm"] == "/dev/shm"
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "data" and mounts["shared"] == "/data"
    assert volumes["startup"]["configMap"]["name"] == configmap["metadata"]["name"] == f"{JOB_ID}-startup"
    # The pods run the same start-up step as the SSH hosts, with the job's settings beside it.
    assert configmap["data"]["distdgl_startup.py"] == distdgl.STARTUP.read_text()
    spec = json.loads(configmap["data"]["job.json"])
    assert spec["peer_names"] == [f"{JOB_ID}-0.{JOB_ID}", f"{JOB_ID}-1.{JOB_ID}"], "line order = completion index"
    assert spec["num_clients"] == 2 * (1 + 1) * 2 and spec["num_servers"] == 2
    assert spec["share"] == f"/data/pyctl/jobs/{JOB_ID}" and spec["partition"]["output"] == "/data/pyctl/partitions"
    assert spec["partition"]["args"][:4] == ["--graph", "ogbn-products", "--data-dir", "/data/pyctl/datasets"]
    assert spec["train_args"] == ["--epochs", "5", "--fanouts", "10,25", "--eval-fanouts=-1,-1", "--hidden", "128"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"dgl-server-0": 30050, "dgl-server-1": 30051, "torchrun": 29500, "launch-control": 30049}


def test_the_users_trainer_travels_beside_job_json(tmp_path):
    """--script: the ConfigMap carries the trainer as user_<name>, job.json names it, and the start-up
    step runs it (beside job.json) where it would run our train.py; the --script's own arguments pass."""
    _, documents = _render(tmp_path, "distdgl-script")
    configmap = yaml.safe_load(documents["configmap"])
    trainer = Path(__file__).with_name("distdgl_user_trainer.py")
    assert configmap["data"]["user_distdgl_user_trainer.py"] == trainer.read_text()
    spec = json.loads(configmap["data"]["job.json"])
    assert spec["script"] == "user_distdgl_user_trainer.py"
    assert spec["train_args"] == ["--tag", "mine"]  # no --epochs of ours: the script's arguments only
    assert 'args.spec.parent / spec["script"]' in configmap["data"]["distdgl_startup.py"]

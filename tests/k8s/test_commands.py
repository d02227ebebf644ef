"""doctor, status, reset, node add and bootstrap --list-artifacts, in-process.

The cluster side is a snapshot of kubernetes client models (tests/k8s/models.py) handed to the commands
in place of the API; host probes and playbook runs are replayed (the fake runner of tests/fakes.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from pyctl import cli, runner
from pyctl.errors import ExitCode
from pyctl.k8s import artifacts, hosts, kube
from tests.fakes import FakeRunner
from tests.k8s import models

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = """\
[control_plane]
cp1 ansible_host=10.0.0.1
[workers]
gpu1 ansible_host=10.0.0.2 gpu=true
gpu2 ansible_host=10.0.0.3 gpu=true
cpu1 ansible_host=10.0.0.4
[nfs_server]
cp1
[all:vars]
cluster_name=sample
"""


def smi(count: int) -> str:
    return "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})" for i in range(count))


def probe_events(gpu_counts: dict[str, int], failing: dict[str, str] | None = None, unreachable=()) -> list[dict]:
    events = []
    for host in ("cp1", "gpu1", "gpu2", "cpu1"):
        if host in unreachable:
            events.append(
                {"event": "runner_on_unreachable", "event_data": {"host": host, "task": "x", "res": {"msg": "timeout"}}}
            )
            continue
        events.append(
            {
                "event": "runner_on_ok",
                "event_data": {
                    "host": host,
                    "task": "Read the host name, which is the node name",
                    "res": {"rc": 0, "stdout": host.upper()},
                },
            }
        )
        if host in gpu_counts or host in (failing or {}):
            res = {"rc": 9, "stdout": "", "stderr": failing[host]} if host in (failing or {}) else {}
            res = res or {"rc": 0, "stdout": smi(gpu_counts[host])}
            events.append(
                {
                    "event": "runner_on_ok",
                    "event_data": {"host": host, "task": "List the GPUs with nvidia-smi", "res": res},
                }
            )
    return events


@pytest.fixture
def inv(tmp_path, state_dir):
    path = tmp_path / "hosts.ini"
    path.write_text(INVENTORY, encoding="utf-8")
    return path


@pytest.fixture
def kubeconfig(state_dir):
    path = state_dir / "clusters" / "sample" / "admin.conf"
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "sample", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "admin", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "admin@sample", "context": {"cluster": "sample", "user": "admin"}}],
                "current-context": "admin@sample",
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def cluster_api(monkeypatch):
    """The cluster the commands see: mutate `.cluster` (model objects) before running a command."""

    class Api:
        cluster = models.healthy()
        events = probe_events({"gpu1": 2, "gpu2": 8})
        unreachable: str | None = None

    def snapshot(api_client):
        if Api.unreachable:
            raise kube.ClusterUnreachable(Api.unreachable, hint="is the control plane host up?")
        return Api.cluster.snapshot()

    def probe(settings, cluster):
        report = hosts.fold(Api.events)
        report.run_dir = "runs/x-doctor"
        return report

    monkeypatch.setattr(kube, "snapshot", snapshot)
    monkeypatch.setattr(hosts, "probe", probe)
    return Api


# --- doctor --------------------------------------------------------------------------------------


def test_doctor_without_a_fetched_kubeconfig_says_to_bootstrap(inv, capsys):
    assert cli.main(["doctor", "-i", str(inv)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "pyctl: error: no kubeconfig for cluster 'sample' yet" in err
    assert f"pyctl: hint: run 'pyctl bootstrap -i {inv}' first" in err
    assert "Traceback" not in err


def test_doctor_on_a_healthy_cluster_exits_0(inv, kubeconfig, cluster_api, capsys):
    assert cli.main(["doctor", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    assert "pyctl doctor: cluster sample at https://10.0.0.1:6443" in out
    assert "found: 4/4 nodes Ready, 10 GPUs, flannel 4/4 ready, NVIDIA device plugin 2/2 ready" in out
    assert "nvidia-smi on the GPU hosts: gpu1 2, gpu2 8" in out
    assert "healthy: the cluster matches the inventory" in out


def test_doctor_names_a_node_short_of_gpus_and_exits_1(inv, kubeconfig, cluster_api, capsys):
    cluster_api.events = probe_events({"gpu1": 2, "gpu2": 8})
    cluster_api.cluster = models.healthy()
    cluster_api.cluster.nodes["gpu2"].status.allocatable["nvidia.com/gpu"] = "7"
    assert cli.main(["doctor", "-i", str(inv)]) == 1
    out = capsys.readouterr().out
    assert "1 error(s), 0 warning(s):" in out
    assert "  error: node gpu2 has 7 allocatable nvidia.com/gpu, but nvidia-smi lists 8 GPU(s)" in out


def test_doctor_json_reports_host_and_cluster_problems(inv, kubeconfig, cluster_api, capsys):
    cluster_api.cluster = models.healthy()
    cluster_api.cluster.claims = [models.claim("Pending")]
    cluster_api.events = probe_events({"gpu1": 2}, failing={"gpu2": "NVIDIA-SMI has failed: driver not loaded"})
    assert cli.main(["doctor", "-i", str(inv), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["healthy"] is False and result["cluster"] == "sample"
    messages = [p["message"] for p in result["problems"]]
    assert any(m.startswith("nvidia-smi -L fails on gpu2") and "driver not loaded" in m for m in messages)
    assert any("the shared claim default/pyctl-shared is Pending" in m for m in messages)
    assert result["expected"]["gpus"] == {"gpu1": 2}
    assert result["summary"]["storage"]["phase"] == "Pending"


def test_doctor_reports_an_api_server_that_does_not_answer(inv, kubeconfig, cluster_api, capsys):
    cluster_api.unreachable = "the API server at https://10.0.0.1:6443 does not answer (MaxRetryError: refused)"
    cluster_api.events = probe_events({"gpu1": 2, "gpu2": 8}, unreachable=("cpu1",))
    assert cli.main(["doctor", "-i", str(inv)]) == 1
    out = capsys.readouterr().out
    assert "error: host cpu1 cannot be reached over SSH (timeout): its GPUs were not counted" in out
    assert "error: the API server at https://10.0.0.1:6443 does not answer" in out


def test_doctor_reaches_a_real_but_absent_api_server_and_says_so(inv, kubeconfig, monkeypatch, capsys):
    """No monkeypatched API: the kubernetes client really connects (to nothing) and fails cleanly."""
    kubeconfig.write_text(kubeconfig.read_text().replace("https://10.0.0.1:6443", "https://127.0.0.1:9"))
    monkeypatch.setattr(kube, "TIMEOUT_SECONDS", 2)
    monkeypatch.setattr(hosts, "probe", lambda settings, cluster: hosts.fold(probe_events({"gpu1": 2, "gpu2": 8})))
    assert cli.main(["doctor", "-i", str(inv)]) == 1
    out = capsys.readouterr().out
    assert "the API server at https://127.0.0.1:9 does not answer" in out


# --- status --------------------------------------------------------------------------------------


def test_status_summarises_nodes_gpus_addons_and_storage(inv, kubeconfig, cluster_api, capsys):
    cluster_api.cluster = models.healthy()
    cluster_api.unreachable = None
    assert cli.main(["status", "-i", str(inv)]) == 0
    out = capsys.readouterr().out
    assert "cluster sample at https://10.0.0.1:6443: 4/4 nodes Ready, 10 GPUs" in out
    assert re.search(r"gpu2\s+.\s+Ready\s+.\s+worker\s+.\s+.\s+8", out)
    assert re.search(r"flannel\s+.\s+kube-flannel/kube-flannel-ds\s+.\s+4/4", out)
    assert "default/pyctl-shared" in out and "Bound" in out


def test_status_json(inv, kubeconfig, cluster_api, capsys):
    cluster_api.cluster = models.healthy()
    del cluster_api.cluster.daemonsets["plugin"]
    assert cli.main(["status", "-i", str(inv), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gpus"] == 10 and result["ready_nodes"] == 4
    assert [a["present"] for a in result["addons"]] == [True, False]


def test_status_without_kubeconfig_is_a_usage_error(inv, capsys):
    assert cli.main(["status", "-i", str(inv)]) == ExitCode.USAGE
    assert "run 'pyctl bootstrap" in capsys.readouterr().err


# --- reset ---------------------------------------------------------------------------------------


def test_reset_refuses_without_a_terminal_or_yes(inv, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["reset", "-i", str(inv)]) == ExitCode.USAGE
    assert "add --yes to run it unattended" in capsys.readouterr().err


def test_reset_yes_runs_the_reset_playbook_and_removes_the_kubeconfig(inv, kubeconfig, monkeypatch, capsys):
    fake = FakeRunner("preflight_ok.jsonl")
    monkeypatch.setattr(runner, "run_playbook", fake)
    assert cli.main(["reset", "-i", str(inv), "--yes"]) == 0
    assert fake.requests[0].playbook.name == "reset.yml"
    assert not kubeconfig.exists()
    assert f"reset finished; removed {kubeconfig}" in capsys.readouterr().out


def test_reset_asks_and_a_no_changes_nothing(inv, kubeconfig, monkeypatch, capsys):
    fake = FakeRunner("preflight_ok.jsonl")
    monkeypatch.setattr(runner, "run_playbook", fake)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("typer.confirm", lambda *a, **k: False)
    assert cli.main(["reset", "-i", str(inv)]) == ExitCode.USAGE
    assert fake.requests == [] and kubeconfig.exists()


def test_a_failed_reset_keeps_the_kubeconfig_and_names_the_host(inv, kubeconfig, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_playbook", FakeRunner("preflight_failed.jsonl"))
    assert cli.main(["reset", "-i", str(inv), "--yes"]) == 1
    assert kubeconfig.exists()
    assert "failed on: w1" in capsys.readouterr().err


# --- node add ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("gpu9", "host 'gpu9' is not in the inventory"),
        ("cp1", "cp1 is the control plane host"),
    ],
)
def test_node_add_refuses_hosts_it_cannot_add(inv, kubeconfig, capsys, host, message):
    assert cli.main(["node", "add", "-i", str(inv), "--host", host]) == ExitCode.USAGE
    assert message in capsys.readouterr().err


def test_node_add_needs_a_bootstrapped_cluster(inv, capsys):
    assert cli.main(["node", "add", "-i", str(inv), "--host", "gpu1"]) == ExitCode.USAGE
    assert "has not been bootstrapped from this machine" in capsys.readouterr().err


def test_node_add_runs_the_node_phases_limited_to_the_host(inv, kubeconfig, state_dir, monkeypatch, capsys):
    fake = FakeRunner("preflight_ok.jsonl")
    monkeypatch.setattr(runner, "run_playbook", fake)
    assert cli.main(["node", "add", "-i", str(inv), "--host", "gpu2"]) == 0
    request = fake.requests[0]
    assert request.playbook.name == "add_node.yml" and request.limit == "gpu2"
    assert request.extravars == {
        "pyctl_cluster_name": "sample",
        "pyctl_cluster_dir": str(state_dir / "clusters" / "sample"),
    }
    assert "gpu2 is in the cluster; check it with pyctl doctor" in capsys.readouterr().out


def test_node_add_can_run_a_subset_of_the_node_phases(inv, kubeconfig, monkeypatch, capsys):
    fake = FakeRunner("preflight_ok.jsonl")
    monkeypatch.setattr(runner, "run_playbook", fake)
    assert cli.main(["node", "add", "-i", str(inv), "--host", "gpu2", "--phases", "join_nodes"]) == 0
    playbook = fake.requests[0].playbook
    assert playbook.name == "phases.yml"
    assert "join_nodes.yml" in playbook.read_text() and "kubernetes.yml" not in playbook.read_text()
    assert cli.main(["node", "add", "-i", str(inv), "--host", "gpu2", "--phases", "verify"]) == ExitCode.USAGE
    assert "unknown phase(s): verify" in capsys.readouterr().err


# --- bootstrap --list-artifacts -------------------------------------------------------------------


def test_list_artifacts_needs_no_inventory_and_pins_everything(capsys, state_dir):
    assert cli.main(["bootstrap", "--list-artifacts"]) == 0
    out = capsys.readouterr().out
    assert "package         kubeadm=1.36.5-1.1  (pkgs.k8s.io)" in out
    assert "DE15B14486CD377B9E876E1A234654DA9A296436" in out
    assert "{{" not in out


def test_list_artifacts_reads_the_inventory(capsys, state_dir):
    inventory = ROOT / "tests" / "fixtures" / "inventories" / "golden-variant.yml"
    assert cli.main(["bootstrap", "--list-artifacts", "-i", str(inventory)]) == 0
    assert "settings from " + str(inventory) in capsys.readouterr().out


def test_every_image_in_a_rendered_manifest_is_in_the_artifact_list():
    listed = {a.name for a in artifacts.collect(ROOT / "roles") if a.kind == "image"}
    for golden in (ROOT / "tests" / "golden").glob("*/*.yaml"):
        for image in re.findall(r"^\s+(?:- )?image: (\S+)$", golden.read_text(), re.M):
            assert image in listed, f"{golden}: image {image} is not in pyctl bootstrap --list-artifacts"


def test_every_image_and_package_is_pinned():
    for artifact in artifacts.collect(ROOT / "roles"):
        if artifact.kind == "image" and "," not in artifact.name:
            assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", artifact.name), artifact
            assert not artifact.name.endswith((":latest", ":master", ":main")), artifact
        # kubernetes-cni comes as kubelet's dependency; distribution packages follow the host's release.
        if (
            artifact.kind == "package"
            and artifact.name != "kubernetes-cni"
            and artifact.source != "the distribution mirror"
        ):
            assert re.match(r"^\d+\.\d+\.\d+-[\d.]+$", artifact.version), artifact
        if artifact.kind == "manifest":
            assert re.search(r"/v\d+\.\d+\.\d+/", artifact.source) and "sha256:" in artifact.checksum, artifact


def test_node_roles_list_what_they_install_and_follow_the_inventory():
    listed = {(a.role, a.kind, a.name): a for a in artifacts.collect(ROOT / "roles")}
    assert listed[("containerd", "package", "containerd.io")].version == "2.3.5-1"
    # What the repository tasks need on the host first (listed once, though two roles install them).
    assert {("package", p) for p in ("ca-certificates", "gnupg", "python3-debian")} <= {k[1:] for k in listed}
    assert listed[("containerd", "image", "registry.k8s.io/pause:3.10.2")]
    assert listed[("containerd", "package", "nvidia-container-toolkit")].version == "1.18.0-1"
    assert ("nfs_server", "package", "nfs-kernel-server") in listed and (
        "nfs_client",
        "package",
        "nfs-common",
    ) in listed
    docker = {
        (a.kind, a.name): a
        for a in artifacts.collect(
            ROOT / "roles",
            {"containerd_docker_version": "2.1.5-1", "containerd_nvidia_toolkit_install_enabled": False},
        )
        if a.role == "containerd"
    }
    assert docker[("package", "containerd.io")].version == "2.1.5-1"
    assert ("apt-repository", "download.docker.com") in docker and ("package", "containerd") not in docker
    assert not any("nvidia" in name for _, name in docker)
    distribution = {
        (a.kind, a.name)
        for a in artifacts.collect(
            ROOT / "roles", {"containerd_source": "distribution", "containerd_nvidia_toolkit_install_enabled": False}
        )
        if a.role == "containerd"
    }
    assert ("package", "containerd") in distribution and ("package", "gnupg") not in distribution


def test_bootstrap_without_inventory_is_still_a_usage_error(capsys):
    assert cli.main(["bootstrap"]) == ExitCode.USAGE
    assert "--inventory" in capsys.readouterr().err

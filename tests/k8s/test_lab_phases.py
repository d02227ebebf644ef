"""The Kubernetes phases for real on a container lab, with kubeadm, the kubelet, nvidia-smi and the API server
replaced by the test doubles of tests/doubles (installed on the lab hosts by this module only).

One 3-host lab (node1: control plane and NFS server, node2 and node3: GPU workers with 1 and 2 GPUs) is
shared by every test here, in order: a first converge (the node phases prepare_nodes and
container_runtime for real first: the kubeadm double's preflight checks this host's real state, and each
node registers with its real `containerd config dump`), a second that changes nothing and mints
no token, a join interrupted half-way that the next run repairs, the acceptance gate failing by name,
the doctor's host probe, node add, a node_prep and a containerd regression failing the join with
kubeadm's own message, no token anywhere pyctl writes, and reset. The packages come from the lab's own
signed repositories (pyctl.lab.repo): containerd 2.x, kubectl as Debian's real kubectl 1.36 (the binary
scripts/setup --dev puts in the venv, packaged under pkgs.k8s.io's name and pinned version), and kubelet, kubeadm,
cri-tools and the NVIDIA toolkit as the doubles' packages (tests/doubles/debs.py), installed, pinned and held by the
roles.

The cluster is the HTTPS Kubernetes API double (tests/doubles/fake_apiserver.py), served by this module before the
bootstrap on the lab's gateway (install.api_double): kubeadm init, join and token go to it over REST (the kubeadm
double's REST mode, its CA given on node1), node1's port 6443 is forwarded to it, and the roles' kubectl calls (the
API wait, flannel, the device plugin's label and manifests, the claim, the acceptance gate's snapshot and smoke pods)
reach it over TLS with the admin.conf kubeadm wrote. Its cluster model (fake_cluster.Cluster) judges the nodes,
add-ons, GPUs and the gate's pods. The tests read the cluster through the API: the real kubectl on node1, and the
double's record of the requests it served and the bootstrap-token Secrets it was given.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import lab_leftovers, recap, require_root, unique_lab_name
from tests.doubles import debs, install, kubeadm_rest

pytestmark = pytest.mark.lab

KUBECTL = Path(sys.executable).parent / "kubectl"  # Debian sid's 1.36 build, as scripts/setup --dev installs it
GPU = "nvidia.com/gpu"
ADMIN = "kubernetes-admin"  # the CN of admin.conf's client certificate: kubeadm token's and kubectl's user
SECRETS = "/api/v1/namespaces/kube-system/secrets"
HISTORY = 200_000  # the API double's event history, kept whole for `minted`
FIRST_RV = 1001  # the first resourceVersion the double gives (its seeded namespaces)
MY_PHASES = "kubernetes,control_plane,join_nodes,addons,verify"
NODE_PHASES = "prepare_nodes,container_runtime"
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")


@dataclass
class Ctx:
    lab: Any
    inventory: Path
    state: Path
    api: Any  # the API double (fake_apiserver.ApiServerDouble) the cluster is
    outputs: list[str] = field(default_factory=list)

    def pyctl(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYCTL_STATE_DIR=str(self.state))
        result = subprocess.run(
            [sys.executable, "-m", "pyctl", *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def bootstrap(self, phases: str = MY_PHASES) -> subprocess.CompletedProcess:
        return self.pyctl("bootstrap", "-i", str(self.inventory), "--phases", phases)

    def ssh(self, host: str, command: str) -> str:
        return self.lab.ssh(host, command, timeout=60).stdout

    def kubectl(self, command: str) -> str:
        """The real kubectl on the control plane, through node1:6443 to the API double."""
        return self.ssh("node1", f"kubectl --kubeconfig /etc/kubernetes/admin.conf {command}")

    def cluster(self) -> dict[str, dict[str, Any]]:
        """What the roles made, read through the API: "Kind/namespace/name" -> object."""
        kinds = "nodes,daemonsets,runtimeclasses,persistentvolumeclaims,pods,configmaps"
        items = json.loads(self.kubectl(f"get {kinds} --all-namespaces -o json"))["items"]
        return {f"{i['kind']}/{i['metadata'].get('namespace', '')}/{i['metadata']['name']}": i for i in items}

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in json.loads(self.kubectl("get nodes -o json"))["items"]}

    def minted(self) -> list[str]:
        """Every bootstrap token the API server was given: the bootstrap-token Secrets in its history (the tokens
        minted for joins are deleted again)."""
        with self.api.lock:
            history = list(self.api.history)
        assert history[0][0] == FIRST_RV, "the double's history was trimmed: raise HISTORY"
        tokens = []
        for _, event, resource, obj in history:
            if event == "ADDED" and resource == ("", "secrets") and obj.get("type") == kubeadm_rest.TOKEN_TYPE:
                data = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
                tokens.append(f"{data['token-id']}.{data['token-secret']}")
        return tokens

    def writes(self, since: int) -> list[tuple[str, str, str | None]]:
        """The requests other than reads the API double served since its audit record had `since` entries."""
        return [(m, p, user) for m, p, user in self.api.audit[since:] if m != "GET"]


def facts(node: dict[str, Any]) -> dict[str, Any]:
    """What the kubeadm double reported about the node's host when it registered (its kubelet's view)."""
    return json.loads(node["metadata"]["annotations"][kubeadm_rest.FACTS])


def ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"].get("conditions") or [] if c["type"] == "Ready")


@pytest.fixture(scope="module")
def k8s(tmp_path_factory) -> Ctx:
    require_root()
    if not KUBECTL.is_file():
        pytest.skip(f"kubectl 1.36 is not at {KUBECTL}: run scripts/setup --dev")
    from pyctl.config import load_settings
    from pyctl.lab import LabSpec, down, repo, up

    name = unique_lab_name("k")
    try:
        lab = up(LabSpec(name=name, nodes=3, kind="container", gpu_nodes=2)).lab
        repo.publish(lab, debs.build(load_settings(), kubectl=KUBECTL))
        install.install(lab, gpus={"node2": 1, "node3": 2}, packaged=True)
        data = yaml.safe_load(Path(lab.inventory_path).read_text())
        data["all"]["vars"].update(
            {
                "control_plane_api_wait_seconds": 30,
                "verify_timeout_seconds": 8,
                "verify_poll_seconds": 1,
            }
        )
        base = tmp_path_factory.mktemp("k8s-lab")
        inventory = base / "inventory.yml"
        inventory.write_text(yaml.safe_dump(data))
        with install.api_double(lab, base / "api", history=HISTORY) as api:
            yield Ctx(lab, inventory, base / "state", api)
            assert not [w for w in api.warnings if w.startswith(("controller error", "server error"))], api.warnings
    finally:
        down(name)
        assert lab_leftovers(name) == []


def argvs(ctx: Ctx, host: str, tool: str) -> list[list[str]]:
    return [c["argv"] for c in install.calls(ctx.lab, host, tool)]


def test_first_converge_initialises_joins_installs_addons_and_passes_the_gate(k8s):
    result = k8s.bootstrap(phases=f"{NODE_PHASES},{MY_PHASES}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    kubeadm = argvs(k8s, "node1", "kubeadm")
    # kubeadm validates the rendered configuration before init, and init runs once, never printing a token
    validate = kubeadm.index(["config", "validate", "--config", "/etc/kubernetes/pyctl/kubeadm-config.yaml"])
    init = kubeadm.index(["init", "--config", "/etc/kubernetes/pyctl/kubeadm-config.yaml", "--skip-token-print"])
    assert validate < init
    assert [a[:2] for a in kubeadm].count(["token", "create"]) == 1
    assert [a[:2] for a in kubeadm].count(["token", "delete"]) == 1
    assert "pyctl: joins node2 node3" in next(a for a in kubeadm if a[:2] == ["token", "create"])
    for worker in ("node2", "node3"):
        (join,) = [c for c in install.calls(k8s.lab, worker, "kubeadm") if c["argv"][0] == "join"]
        assert join["argv"] == ["join", "--config", "/etc/kubernetes/pyctl/join.yaml"]
        assert join["config_mode"] == "0o600" and join["ca_hashes"] == 1 and join["token_on_argv"] is False
        assert "absent" in k8s.ssh(worker, "test -e /etc/kubernetes/pyctl/join.yaml && echo present || echo absent")
    # the cluster, read through the API: three nodes Ready (flannel runs with kubeadm's pod CIDR), the GPU ones
    # labelled and advertising the GPUs nvidia-smi lists (the device plugin runs with the nvidia runtime there)
    state = k8s.cluster()
    nodes = {key.split("/")[2]: obj for key, obj in state.items() if key.startswith("Node/")}
    assert sorted(nodes) == ["node1", "node2", "node3"] and {ready(n) for n in nodes.values()} == {"True"}
    assert nodes["node3"]["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu.present" not in nodes["node1"]["metadata"]["labels"]
    allocatable = {name: n["status"]["allocatable"].get(GPU) for name, n in nodes.items()}
    assert allocatable == {"node1": None, "node2": "1", "node3": "2"}
    cluster = yaml.safe_load(state["ConfigMap/kube-system/kubeadm-config"]["data"]["ClusterConfiguration"])
    assert cluster["networking"]["podSubnet"] == "10.244.0.0/16"
    # what the nodes' real containerd says (config dump): the GPU hosts have the nvidia runtime pyctl configured
    assert facts(nodes["node3"])["runtimes"]["nvidia"] == "/usr/bin/nvidia-container-runtime"
    assert "nvidia" not in facts(nodes["node1"])["runtimes"] and "runc" in facts(nodes["node1"])["runtimes"]
    # the kubeadm double ran kubeadm's host checks; only what this machine's kernel cannot give is waived, loudly
    (init_call,) = [c for c in install.calls(k8s.lab, "node1", "kubeadm") if c["argv"][0] == "init"]
    cgroup = k8s.ssh("node1", "stat -fc %T /sys/fs/cgroup").strip()
    assert init_call["preflight_waived"] == ([] if cgroup == "cgroup2fs" else ["SystemVerification"])
    applied = {
        "DaemonSet/kube-flannel/kube-flannel-ds",
        "RuntimeClass//nvidia",
        "PersistentVolumeClaim/default/pyctl-shared",
    }
    assert applied <= set(state)
    standalone = [k for k, o in state.items() if k.startswith("Pod/") and not o["metadata"].get("ownerReferences")]
    assert not standalone, "the verify pods are removed again (the DaemonSets' pods stay)"
    # the roles' kubectl is Debian's real one, speaking TLS to the API double
    version = k8s.kubectl("version")
    assert "Client Version: v1.36." in version and "Server Version: v1.36" in version
    # the admin kubeconfig is on the controller, readable by its owner only: the API double's, through node1:6443
    kubeconfig = k8s.state / "clusters" / "node1" / "admin.conf"
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    fetched = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    assert fetched["server"] == f"https://{k8s.lab.host('node1').address}:6443"
    assert base64.b64decode(fetched["certificate-authority-data"]) == k8s.api.pki["ca.crt"].read_bytes()
    assert "== phase verify" in result.stdout


def test_second_converge_changes_nothing_and_mints_no_token(k8s):
    before = argvs(k8s, "node1", "kubeadm")
    result = k8s.bootstrap()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    rows = recap(result.stdout)
    assert sorted(rows) == ["node1", "node2", "node3"]
    assert all(row[1] == 0 for row in rows.values()), rows  # changed = 0 everywhere
    new = argvs(k8s, "node1", "kubeadm")[len(before) :]
    assert not [a for a in new if a[0] in ("init", "token")], new
    assert [c["argv"][0] for c in install.calls(k8s.lab, "node2", "kubeadm")].count("join") == 1


def test_check_mode_on_the_converged_cluster_reports_no_change(k8s):
    result = k8s.pyctl("bootstrap", "-i", str(k8s.inventory), "--phases", MY_PHASES, "--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert all(row[1] == 0 for row in recap(result.stdout).values()), result.stdout


def test_an_interrupted_join_is_repaired_by_the_next_run(k8s):
    k8s.kubectl("delete node node2")
    k8s.ssh("node2", "kubeadm reset --force && touch /etc/pyctl-test-doubles/fail-join-once")
    failed = k8s.bootstrap(phases="join_nodes")
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr
    assert "node2: failed: [join_nodes]" in failed.stderr and "kubeadm join failed on node2" in failed.stderr
    left = k8s.ssh("node2", "ls /etc/kubernetes; systemctl is-active kubelet || true").split()
    assert "bootstrap-kubelet.conf" in left and "kubelet.conf" not in left and left[-1] == "active"
    joins_node3 = [c["argv"][0] for c in install.calls(k8s.lab, "node3", "kubeadm")].count("join")

    fixed = k8s.bootstrap(phases="join_nodes")
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr
    node2 = [c for c in install.calls(k8s.lab, "node2", "kubeadm") if c["argv"][0] == "join"]
    assert "failed" in node2[-2] and "failed" not in node2[-1]
    assert [c["argv"][0] for c in install.calls(k8s.lab, "node3", "kubeadm")].count("join") == joins_node3
    creates = [a for a in argvs(k8s, "node1", "kubeadm") if a[:2] == ["token", "create"]]
    assert "pyctl: joins node2" in creates[-1]  # minted for the host that had to join, only
    assert "node2" in k8s.nodes()


def test_the_gate_fails_naming_each_gpu_problem_and_the_addons_phase_repairs_it(k8s):
    install.configure(k8s.lab, "node2", gpus=2)  # nvidia-smi now lists 2; the node advertises the 1 it joined with
    k8s.kubectl("label node node3 nvidia.com/gpu.present-")  # "green run, zero GPUs": the plugin never lands there
    try:
        caught = k8s.bootstrap(phases="verify")
    finally:
        install.configure(k8s.lab, "node2", gpus=1)
    assert caught.returncode == 1
    assert "node1: failed: [verify] Fail when the cluster does not match the inventory: 2 problem(s)" in caught.stderr
    assert "node node2 has 1 allocatable nvidia.com/gpu, but nvidia-smi lists 2 GPU(s)" in caught.stderr
    assert "node node3 has no allocatable nvidia.com/gpu, but nvidia-smi lists 2 GPU(s)" in caught.stderr
    assert "lacks the label nvidia.com/gpu.present=true" in caught.stderr
    repaired = k8s.bootstrap(phases="addons,verify")
    assert repaired.returncode == 0, repaired.stdout[-3000:] + repaired.stderr


def test_the_doctor_probe_reads_node_names_and_gpus_over_ssh(k8s, monkeypatch):
    from pyctl import inventory
    from pyctl.config import load_settings
    from pyctl.k8s import hosts

    monkeypatch.setenv("PYCTL_STATE_DIR", str(k8s.state))
    cluster = inventory.load(k8s.inventory)
    report = hosts.probe(load_settings(), cluster)
    assert report.node_names == {"node1": "node1", "node2": "node2", "node3": "node3"}
    expect, problems = hosts.expectations(cluster, report)
    assert problems == [] and dict(expect.gpus) == {"node2": 1, "node3": 2}
    assert expect.claim == ("default", "pyctl-shared")


def test_node_add_joins_one_host_and_touches_the_control_plane_only_for_its_token(k8s):
    k8s.kubectl("delete node node3")
    k8s.ssh("node3", "kubeadm reset --force")
    k8s.ssh("node1", ": > /var/log/pyctl-test-doubles/calls.jsonl")
    before = len(k8s.api.audit)
    # preflight is left out: its /var free-space check finds no / mount in a container's facts.
    result = k8s.pyctl("node", "add", "-i", str(k8s.inventory), "--host", "node3", "--phases", "kubernetes,join_nodes")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert sorted(recap(result.stdout)) == ["node3"]
    control_plane_calls = [(c["tool"], *c["argv"][:2]) for c in install.calls(k8s.lab, "node1")]
    assert control_plane_calls == [("kubeadm", "token", "create"), ("kubeadm", "token", "delete")]
    # through the API: the cluster's admin (kubeadm token on node1; kubectl would be it too) only wrote the token's
    # Secret and deleted it again, and node3 registered itself with that token
    writes = k8s.writes(before)
    admin = [(m, p) for m, p, user in writes if user == ADMIN]
    assert [m for m, _ in admin] == ["POST", "DELETE"] and admin[0][1] == SECRETS, writes
    assert re.fullmatch(rf"{SECRETS}/bootstrap-token-[a-z0-9]{{6}}", admin[1][1])
    assert [(m, p) for m, p, user in writes if user != ADMIN] == [("POST", "/api/v1/nodes")], writes
    node3 = k8s.nodes()["node3"]
    assert node3["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"  # registered with it: no label call needed


def _rejoin_node3(k8s: Ctx, phases: str = "kubernetes,join_nodes") -> subprocess.CompletedProcess:
    k8s.kubectl("delete node node3")
    k8s.ssh("node3", "kubeadm reset --force")
    return k8s.pyctl("node", "add", "-i", str(k8s.inventory), "--host", "node3", "--phases", phases)


def test_node_prep_and_containerd_regressions_fail_the_join_with_kubeadms_own_messages(k8s):
    """ip_forward off (what a broken node_prep leaves) and containerd stopped (a broken containerd phase) are
    refused by kubeadm's preflight on the real host, both in one run as kubeadm reports them; the fix for
    each (the machine's sysctl for a container host, the container_runtime phase) lets the host join."""
    (node3,) = [h for h in k8s.lab.hosts if h.name == "node3"]
    forward = ["nsenter", f"--net=/run/netns/{node3.namespace}", "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]
    subprocess.run(forward, check=True, timeout=30)
    try:
        k8s.ssh("node3", "systemctl stop containerd")
        k8s.kubectl("delete node node3")
        k8s.ssh("node3", "kubeadm reset --force")
        failed = k8s.pyctl(
            "node", "add", "-i", str(k8s.inventory), "--host", "node3", "--phases", "kubernetes,join_nodes"
        )
    finally:
        from pyctl.lab.container import set_host_sysctls

        set_host_sysctls([node3.namespace])  # what the lab sets for its container hosts at `lab up`
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr
    assert "kubeadm join failed on node3" in failed.stderr
    assert (
        "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1"
        in failed.stderr
    )
    assert "[ERROR CRI]: could not connect to the container runtime" in failed.stderr
    assert "node3" not in k8s.nodes()
    fixed = k8s.pyctl(
        "node",
        "add",
        "-i",
        str(k8s.inventory),
        "--host",
        "node3",
        "--phases",
        "container_runtime,kubernetes,join_nodes",
    )
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr
    assert "node3" in k8s.nodes()


def test_no_minted_token_appears_anywhere_pyctl_wrote_or_printed(k8s):
    minted = k8s.minted()
    assert len(minted) >= 4  # kubeadm init's own, then one per run that had hosts to join
    secrets = set(minted) | {t.split(".")[1] for t in minted}
    files = [p for p in k8s.state.rglob("*") if p.is_file()]
    assert any(p.name == "pyctl.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a minted token is in {path}"
    for text in k8s.outputs:
        assert not [s for s in secrets if s in text], "a minted token was printed"
        assert not TOKEN.search(text), "something shaped like a bootstrap token was printed"


def test_reset_takes_every_host_out_and_a_second_reset_changes_nothing(k8s):
    kubeconfig = k8s.state / "clusters" / "node1" / "admin.conf"
    first = k8s.pyctl("reset", "-i", str(k8s.inventory), "--yes")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    assert not kubeconfig.exists()
    assert "absent" in k8s.ssh("node1", "test -e /etc/kubernetes/admin.conf && echo present || echo absent")
    assert "absent" in k8s.ssh("node1", "test -e /etc/kubernetes/pyctl && echo present || echo absent")
    for worker in ("node2", "node3"):
        assert "absent" in k8s.ssh(worker, "test -e /etc/kubernetes/kubelet.conf && echo present || echo absent")
    assert [a[0] for a in argvs(k8s, "node2", "kubeadm")][-1] == "reset"
    second = k8s.pyctl("reset", "-i", str(k8s.inventory), "--yes")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr
    assert all(row[1] == 0 for row in recap(second.stdout).values()), second.stdout

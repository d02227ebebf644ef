"""The Kubernetes phases for real on a container lab, with kubeadm, kubectl, the kubelet and nvidia-smi
replaced by the test doubles of tests/doubles (installed on the lab hosts by this module only).

One 3-host lab (node1: control plane and NFS server, node2 and node3: GPU workers with 1 and 2 GPUs) is
shared by every test here, in order: a first converge (the node phases prepare_nodes and
container_runtime for real first: the kubeadm double's preflight checks this host's real state, and the
fake cluster reads each node's real `containerd config dump`), a second that changes nothing and mints
no token, a join interrupted half-way that the next run repairs, the acceptance gate failing by name,
the doctor's host probe, node add, a node_prep and a containerd regression failing the join with
kubeadm's own message, no token anywhere pyctl writes, and reset. The packages come from the lab's own
signed repositories (pyctl.lab.repo): containerd 2.x, and kubelet, kubeadm, kubectl, cri-tools and the NVIDIA
toolkit as the doubles' packages (tests/doubles/debs.py), installed, pinned and held by the roles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import lab_leftovers, recap, require_root, unique_lab_name
from tests.doubles import debs, install

pytestmark = pytest.mark.lab

MY_PHASES = "kubernetes,control_plane,join_nodes,addons,verify"
NODE_PHASES = "prepare_nodes,container_runtime"
TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")


@dataclass
class Ctx:
    lab: object
    inventory: Path
    state: Path
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
        return self.ssh("node1", f"kubectl --kubeconfig /etc/kubernetes/admin.conf {command}")


@pytest.fixture(scope="module")
def k8s(tmp_path_factory) -> Ctx:
    require_root()
    from pyctl.config import load_settings
    from pyctl.lab import LabSpec, down, repo, up

    name = unique_lab_name("k")
    try:
        lab = up(LabSpec(name=name, nodes=3, kind="container", gpu_nodes=2)).lab
        repo.publish(lab, debs.build(load_settings()))
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
        yield Ctx(lab, inventory, base / "state")
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
    # the cluster the doubles model: three nodes, the GPU one labelled, add-ons and the shared claim applied
    state = install.cluster_state(k8s.lab, "node1")
    assert sorted(state["nodes"]) == ["node1", "node2", "node3"]
    assert state["nodes"]["node3"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert state["nodes"]["node2"]["gpus"] == 1 and "nvidia.com/gpu.present" not in state["nodes"]["node1"]["labels"]
    assert state["cluster"]["podSubnet"] == "10.244.0.0/16"
    # what the nodes' real containerd says (config dump): the GPU hosts have the nvidia runtime pyctl configured
    assert state["nodes"]["node3"]["runtimes"]["nvidia"] == "/usr/bin/nvidia-container-runtime"
    assert "nvidia" not in state["nodes"]["node1"]["runtimes"] and "runc" in state["nodes"]["node1"]["runtimes"]
    # the kubeadm double ran kubeadm's host checks; only what this machine's kernel cannot give is waived, loudly
    (init_call,) = [c for c in install.calls(k8s.lab, "node1", "kubeadm") if c["argv"][0] == "init"]
    cgroup = k8s.ssh("node1", "stat -fc %T /sys/fs/cgroup").strip()
    assert init_call["preflight_waived"] == ([] if cgroup == "cgroup2fs" else ["SystemVerification"])
    applied = {
        "DaemonSet/kube-flannel/kube-flannel-ds",
        "RuntimeClass//nvidia",
        "PersistentVolumeClaim/default/pyctl-shared",
    }
    assert applied <= set(state["objects"])
    assert not [k for k in state["objects"] if k.startswith("Pod/")], "the verify pods are removed again"
    # the admin kubeconfig is on the controller, readable by its owner only
    kubeconfig = k8s.state / "clusters" / "node1" / "admin.conf"
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
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
    assert "node2" in install.cluster_state(k8s.lab, "node1")["nodes"]


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
    # preflight is left out: its /var free-space check finds no / mount in a container's facts.
    result = k8s.pyctl("node", "add", "-i", str(k8s.inventory), "--host", "node3", "--phases", "kubernetes,join_nodes")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert sorted(recap(result.stdout)) == ["node3"]
    control_plane_calls = [(c["tool"], *c["argv"][:2]) for c in install.calls(k8s.lab, "node1")]
    assert control_plane_calls == [("kubeadm", "token", "create"), ("kubeadm", "token", "delete")]
    node3 = install.cluster_state(k8s.lab, "node1")["nodes"]["node3"]
    assert node3["labels"]["nvidia.com/gpu.present"] == "true"  # registered with it: no label call needed


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
    assert "node3" not in install.cluster_state(k8s.lab, "node1")["nodes"]
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
    assert "node3" in install.cluster_state(k8s.lab, "node1")["nodes"]


def test_no_minted_token_appears_anywhere_pyctl_wrote_or_printed(k8s):
    minted = install.cluster_state(k8s.lab, "node1")["minted"]
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

"""The whole bootstrap end to end, twice, then training through `--backend k8s` (issue 14, section 5).

One mixed lab of 3 fresh Debian 13 hosts (tests/k8s/full_lab.py): node1 a QEMU VM (control plane and NFS server),
node2 and node3 container hosts (workers; node3 gpu=true with the NVIDIA doubles). `pyctl bootstrap` runs with
every phase (no --phases): the packages come from the lab's own signed repositories (containerd 2.x and the CNI
plugins real, Debian's builds; kubelet, kubeadm, kubectl, cri-tools and the NVIDIA toolkit the doubles' packages),
a real containerd 2.x loads pyctl's version-3 configuration on every host, node1's kernel serves the NFS export
and mounts it, and the acceptance gate (verify) passes. A second run changes nothing. Then a DDP job and a
DistDGL job run through `pyctl train ... --backend k8s --follow` to their test accuracy. Last, node1 reboots: its
node state and containerd 2.x come back, and a re-run of the node phases changes nothing (the reboot test; this VM
replaced a 2-VM lab of its own in tests/roles).

The cluster is one HTTPS Kubernetes API double (tests/doubles/fake_apiserver.py) for the bootstrap and training,
served before the bootstrap on the lab's gateway (full_lab.api_double): kubeadm init, join and token reach it over
REST (the kubeadm double's REST mode), node1:6443 is forwarded to it, and the roles' kubectl calls (Debian's real
kubectl 1.36, installed from the lab's repository as pkgs.k8s.io's kubectl) speak TLS to it with the admin.conf
kubeadm wrote. The admin.conf the bootstrap fetches is used as it is: `pyctl train` runs on the lab's network (inside
its network namespace, as a controller on the nodes' network), the Jobs' pods go to the joined workers the scheduler
finds feasible, and the double's kubelet stand-in runs each as processes in its worker's network namespace with this
machine's payload environments. The tests read the cluster through the API (the real kubectl on node1, and the
double's record of the requests it served). The claim is a folder of this machine (the container hosts cannot mount
the VM's NFS export).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import lab_leftovers, recap, require_root, unique_lab_name
from tests.doubles import install
from tests.k8s import full_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

GPU = "nvidia.com/gpu"
K8S_PACKAGES = ("kubelet", "kubeadm", "kubectl", "cri-tools", "kubernetes-cni")
FAST_DDP = ["--dataset", "digits", "--batch-size", "32", "--lr", "0.05", "--threads", "1", "--epochs", "4"]
DISTDGL = [
    "--graph",
    "synthetic",
    "--epochs",
    "20",
    "--batch-size",
    "256",
    "--fanouts",
    "10,10",
    "--eval-fanouts=-1,-1",
]


@dataclass
class Ctx:
    lab: Any
    inventory: Path
    state: Path
    work: Path
    api: Any  # the API double (fake_apiserver.ApiServerDouble) the cluster is
    dgl_python: Path | None
    runs: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def pyctl(self, *args: str, timeout: int = 1800, in_lab: bool = False) -> subprocess.CompletedProcess:
        """`pyctl ARGS`; `in_lab`: on the lab's network, where the fetched admin.conf's node1:6443 answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYCTL_", "PET_", "TORCH"))}
        env.update(PYCTL_STATE_DIR=str(self.state), PYCTL_CONFIG=str(self.state / "none.toml"))
        argv = [sys.executable, "-m", "pyctl", *args]
        return subprocess.run(
            full_lab.in_lab(self.lab, argv) if in_lab else argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def bootstrap(self, key: str) -> subprocess.CompletedProcess:
        """`pyctl bootstrap -i INVENTORY`, every phase; each run once per module (the tests read its output)."""
        if key not in self.runs:
            start = time.monotonic()
            self.runs[key] = self.pyctl("bootstrap", "-i", str(self.inventory))
            self.seconds[key] = time.monotonic() - start
        return self.runs[key]

    def ssh(self, host: str, command: str) -> str:
        return self.lab.ssh(host, command, timeout=120).stdout

    def kubectl(self, command: str) -> Any:
        """The real kubectl on the control plane, through node1:6443 to the API double; its JSON output."""
        return json.loads(self.ssh("node1", f"kubectl --kubeconfig /etc/kubernetes/admin.conf {command} -o json"))

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: n for n in self.kubectl("get nodes")["items"]}


def ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"].get("conditions") or [] if c["type"] == "Ready")


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> Ctx:
    require_root()
    if not full_lab.KUBECTL.is_file():
        pytest.skip(f"kubectl 1.36 is not at {full_lab.KUBECTL}: run scripts/setup --dev")
    from pyctl.lab import down, up
    from tests.train.conftest import REPO

    dgl_python = Path(os.environ.get("PYCTL_DISTDGL_PYTHON", REPO / ".venv-distdgl" / "bin" / "python"))
    dgl_python = dgl_python if dgl_python.exists() else None
    name = unique_lab_name("e2e")
    work = tmp_path_factory.mktemp("full-bootstrap")
    started = time.monotonic()
    try:
        lab = up(full_lab.spec(name)).lab
        inventory = full_lab.prepare(lab, work / "inventory.yml")
        with full_lab.api_double(lab, work / "api", dgl_python) as api:
            ctx = Ctx(lab, inventory, work / "state", work, api, dgl_python)
            ctx.seconds["lab"] = time.monotonic() - started
            yield ctx
            ctx.seconds["module"] = time.monotonic() - started
            print(f"\nfull bootstrap module: {json.dumps({k: round(v) for k, v in ctx.seconds.items()})} s")
            assert not [w for w in api.warnings if w.startswith(("controller error", "server error"))], api.warnings
    finally:
        down(name)
        assert lab_leftovers(name) == []


def installed_from(policy: str) -> dict[str, tuple[str, list[str]]]:
    """`apt-cache policy P...` -> package: (installed version, the sources that version comes from)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", policy.strip()):
        lines = block.splitlines()
        name = lines[0].rstrip(":")
        installed = next((ln.split(":", 1)[1].strip() for ln in lines if ln.strip().startswith("Installed:")), "")
        sources: list[str] = []
        for i, line in enumerate(lines):
            if line.strip().startswith("*** "):
                for follow in lines[i + 1 :]:
                    if not re.match(r"^\s+\d+ ", follow):
                        break
                    sources.append(follow.split()[1])
        out[name] = (installed, sources)
    return out


def test_every_phase_on_fresh_hosts_passes_the_acceptance_gate(e2e):
    result = e2e.bootstrap("first")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    phases = re.findall(r"^== phase (\w+)", result.stdout, re.M)
    assert phases == [
        "preflight", "prepare_nodes", "container_runtime", "storage", "ssh_trust",
        "kubernetes", "control_plane", "join_nodes", "addons", "verify",
    ]  # fmt: skip
    assert sorted(recap(result.stdout)) == ["node1", "node2", "node3"]
    # the gate: the cluster matches the inventory (GPUs included), then the smoke pods ran and succeeded
    gate = result.stdout.split("== phase verify", 1)[1]
    for task in (
        "Wait until the cluster matches the inventory",
        "Wait until the smoke pods have finished, round 1",
        "Wait until the smoke pods have finished, round 2",
    ):
        assert re.search(rf"^\S+ ok\s+node1\s+{re.escape(task)}$", gate, re.M), gate[-3000:]
    assert re.search(r"skipped\s+node1\s+Fail when the cluster does not match the inventory", gate)
    # only what this machine cannot give is waived, loudly: cgroup v2 on the container hosts of a hybrid kernel
    for host in full_lab.workers(e2e.lab):
        cgroup = e2e.ssh(host.name, "stat -fc %T /sys/fs/cgroup").strip()
        waived = re.search(rf"ok\s+{host.name}\s+Warn that the lab waives cgroup v2 on this host$", result.stdout, re.M)
        assert bool(waived) == (cgroup != "cgroup2fs"), cgroup
    assert "node1 is not on cgroup v2" not in result.stdout  # the VM has a kernel of its own
    # the cluster, read through the API (Debian's kubectl 1.36 on node1, over TLS to the API double): the three
    # hosts joined and Ready (flannel runs), node3's GPU labelled and advertised (the device plugin runs there)
    nodes = e2e.nodes()
    assert sorted(nodes) == ["node1", "node2", "node3"] and {ready(n) for n in nodes.values()} == {"True"}
    assert nodes["node3"]["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    allocatable = {name: n["status"]["allocatable"].get(GPU) for name, n in nodes.items()}
    assert allocatable == {"node1": None, "node2": None, "node3": "1"}
    assert "nvidia.com/gpu.present" not in nodes["node2"]["metadata"]["labels"]
    taints = [t["key"] for t in nodes["node1"]["spec"].get("taints") or []]
    assert taints == ["node-role.kubernetes.io/control-plane"]
    version = e2e.ssh("node1", "kubectl --kubeconfig /etc/kubernetes/admin.conf version")
    assert "Client Version: v1.36." in version and "Server Version: v1.36" in version


def test_the_packages_come_from_the_labs_repositories_pinned_and_held(e2e):
    assert e2e.bootstrap("first").returncode == 0
    url = e2e.lab.extra["repo"]["url"]
    for host in e2e.lab.hosts:
        wanted = ("containerd.io", *K8S_PACKAGES) + (("nvidia-container-toolkit",) if host.gpu else ())
        packages = installed_from(e2e.ssh(host.name, f"apt-cache policy {' '.join(wanted)}"))
        for package in wanted:
            version, sources = packages[package]
            assert version != "(none)", f"{package} is not installed on {host.name}"
            assert any(s.startswith(url) for s in sources), f"{host.name}: {package} {version} from {sources}"
        held = e2e.ssh(host.name, "apt-mark showhold").split()
        assert {"kubelet", "kubeadm", "kubectl", "containerd.io"} <= set(held), (host.name, held)
        assert packages["containerd.io"][0].startswith("2."), packages["containerd.io"]
        double = e2e.ssh(host.name, "dpkg-query -W -f='${Description}' kubeadm")
        assert "test double" in double.lower()  # what is a double says so


def test_a_real_containerd_2_runs_pyctls_version_3_configuration_on_every_host(e2e):
    assert e2e.bootstrap("first").returncode == 0
    for host in e2e.lab.hosts:
        version = e2e.ssh(host.name, "containerd --version")
        assert re.search(r"containerd \S+ v?2\.\d+\.\d+", version), version
        assert e2e.ssh(host.name, "systemctl is-active containerd").strip() == "active"
        dump = e2e.ssh(host.name, "containerd config dump")
        assert re.search(r"^version = 3$", dump, re.M), host.name
        assert "SystemdCgroup = true" in dump and "io.containerd.cri.v1.runtime" in dump
        runtimes = set(
            re.findall(r"\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.containerd\.runtimes\.(\w+)\]", dump)
        )
        assert ("nvidia" in runtimes) == host.gpu, (host.name, runtimes)


def test_node1s_kernel_serves_the_nfs_export_and_the_container_hosts_get_the_client_only(e2e):
    assert e2e.bootstrap("first").returncode == 0
    node1 = e2e.lab.host("node1")
    exports = e2e.ssh("node1", "exportfs -s")
    assert re.search(rf"^/srv/pyctl\s+{re.escape(e2e.lab.subnet)}\(", exports, re.M), exports
    mount = e2e.ssh("node1", "findmnt --noheadings --output SOURCE,FSTYPE --mountpoint /mnt/pyctl").split()
    assert mount[0] == f"{node1.address}:/srv/pyctl" and mount[1].startswith("nfs"), mount
    # a write through the NFS mount is read from the exported folder (the kernel's NFS client and server)
    token = f"written through NFS {time.time_ns()}"
    e2e.ssh("node1", f"echo '{token}' > /mnt/pyctl/e2e-check && sync")
    assert e2e.ssh("node1", "cat /srv/pyctl/e2e-check").strip() == token
    for host in full_lab.workers(e2e.lab):  # container hosts: the client installed, no mount (no NFS here)
        assert "install ok installed" in e2e.ssh(host.name, "dpkg-query -W -f='${Status}' nfs-common")
        assert e2e.ssh(host.name, "findmnt --noheadings --mountpoint /mnt/pyctl || true").strip() == ""
    # the shared claim's volume is the export on node1, and the claim is bound to it (read through the API)
    volumes = e2e.kubectl("get persistentvolumes")["items"]
    assert [v["spec"]["nfs"] for v in volumes] == [{"server": node1.address, "path": "/srv/pyctl"}], volumes
    claim = e2e.kubectl("get persistentvolumeclaim pyctl-shared -n default")
    assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == volumes[0]["metadata"]["name"]


def test_a_second_run_changes_nothing(e2e):
    assert e2e.bootstrap("first").returncode == 0
    before = [c["argv"][:2] for c in install.calls(e2e.lab, "node1", "kubeadm")]
    served = len(e2e.api.audit)
    result = e2e.bootstrap("second")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    rows = recap(result.stdout)
    assert sorted(rows) == ["node1", "node2", "node3"]
    assert all(row[1] == 0 for row in rows.values()), rows  # changed = 0 on every host
    after = [c["argv"][:2] for c in install.calls(e2e.lab, "node1", "kubeadm")]
    assert not [a for a in after[len(before) :] if a[0] in ("init", "token")], after[len(before) :]
    # through the API: no bootstrap token was minted, no Node registered or removed
    writes = [(m, p) for m, p, _ in e2e.api.audit[served:] if m in ("POST", "DELETE")]
    assert not [w for w in writes if w[1].endswith("/secrets") or w[1].startswith("/api/v1/nodes")], writes


def test_ddp_and_distdgl_through_the_k8s_backend_finish_with_their_accuracy(e2e):
    from tests.train.conftest import need_ddp_python

    assert e2e.bootstrap("first").returncode == 0
    need_ddp_python()
    # pyctl reads the admin.conf the bootstrap fetched, as it is: kubeadm's, naming node1:6443 (forwarded to the API
    # double) and the cluster CA kubeadm was given
    fetched = e2e.state / "clusters" / "node1" / "admin.conf"
    kept = fetched.read_bytes()
    cluster = yaml.safe_load(kept)["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://{e2e.lab.host('node1').address}:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == e2e.api.pki["ca.crt"].read_bytes()
    warned = len(e2e.api.warnings)
    inventory = str(e2e.inventory)
    common = ["-i", inventory, "--backend", "k8s", "--start-timeout", "120", "--follow"]
    start = time.monotonic()
    ddp = e2e.pyctl("train", "ddp", *common, "--nodes", "2", *FAST_DDP, timeout=600, in_lab=True)
    e2e.seconds["ddp"] = time.monotonic() - start
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    summaries = [
        json.loads(ln.split("PYCTL_SUMMARY ", 1)[1]) for ln in ddp.stdout.splitlines() if "PYCTL_SUMMARY " in ln
    ]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2 and summaries[0]["test_accuracy"] >= 0.90
    assert re.search(r"job (\S+) succeeded: the Job completed; test accuracy 0\.\d+", ddp.stderr), ddp.stderr
    # Where the scheduler put each pod, from its Scheduled event: the joined workers (node1 keeps kubeadm's
    # control-plane taint). When node 0 finishes first, the Job's success policy has the controller stop and delete
    # node 1's pod (as the real one does), but the event stays.
    placed = {
        re.search(r" to (\S+)$", event["message"])[1]
        for event in e2e.api.list("", "events")
        if event["reason"] == "Scheduled" and event["involvedObject"]["kind"] == "Pod"
    }
    assert placed == {"node2", "node3"}
    if e2e.dgl_python is None:
        pytest.skip("the DistDGL environment (.venv-distdgl) is missing; the DDP job ran")
    start = time.monotonic()
    dgl = e2e.pyctl("train", "distdgl", *common, "--num-parts", "2", *DISTDGL, timeout=600, in_lab=True)
    e2e.seconds["distdgl"] = time.monotonic() - start
    assert dgl.returncode == 0, dgl.stdout[-3000:] + dgl.stderr[-3000:]
    match = re.search(r"job (\S+) succeeded: the Job completed; test accuracy (0\.\d+)", dgl.stderr)
    assert match and float(match[2]) >= 0.80, dgl.stderr
    assert e2e.api.warnings[warned:] == [], "pyctl sent a field the 1.36 schema does not know"
    assert fetched.read_bytes() == kept  # nothing replaced it


NODE_PHASES = "prepare_nodes,container_runtime,storage,ssh_trust"


def test_after_a_reboot_of_node1_its_state_is_back_and_the_node_phases_change_nothing(e2e):
    """The reboot test on a VM host (issue 3) and containerd 2.x surviving a reboot (issue 14), on the VM that ran
    every phase: after a reboot swap stays off, the modules and sysctls are back, containerd 2.x runs pyctl's
    version-3 configuration, the export is served and mounted again (_netdev); a re-run of the node phases changes
    nothing. Runs last: the cluster's services on node1 are not read after it."""
    assert e2e.bootstrap("second").returncode == 0
    # The cluster's key went to the cluster directory pyctl passed (pyctl_cluster_dir), private.
    key_dir = e2e.state / "clusters" / "node1" / "ssh"
    assert oct(key_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((key_dir / "id_ed25519").stat().st_mode & 0o777) == "0o600"

    from pyctl.lab import reboot

    start = time.monotonic()
    reboot(e2e.lab, ["node1"])  # in place (QEMU stays); returns when the new boot answers over SSH
    # then until systemd has started every unit (degraded: a unit the test does not read failed)
    system = e2e.lab.ssh("node1", "systemctl is-system-running --wait", timeout=600, check=False).stdout.strip()
    assert system in ("running", "degraded"), system
    e2e.seconds["reboot"] = time.monotonic() - start
    out = e2e.ssh(
        "node1",
        "swapon --show --noheadings | wc -l; ls -d /sys/module/overlay /sys/module/br_netfilter | wc -l;"
        " sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward;"
        " systemctl is-active containerd; ctr version >/dev/null && echo ctr-ok;"
        " findmnt --noheadings --output FSTYPE --mountpoint /mnt/pyctl",
    ).split()
    assert out[0] == "0", f"swap is back: {out}"
    assert out[1] == "2", f"modules not loaded at boot: {out}"
    assert out[2:5] == ["1", "1", "1"], f"sysctls not applied at boot: {out}"
    assert out[5:7] == ["active", "ctr-ok"], f"containerd not healthy: {out}"
    assert out[7:] in (["nfs"], ["nfs4"]), f"the export is not mounted after boot: {out}"
    assert re.search(r"containerd \S+ v?2\.\d+\.\d+", e2e.ssh("node1", "containerd --version"))
    dump = e2e.ssh("node1", "containerd config dump")
    assert re.search(r"^version = 3$", dump, re.M) and "SystemdCgroup = true" in dump
    exports = e2e.ssh("node1", "exportfs -s")
    assert re.search(rf"^/srv/pyctl\s+{re.escape(e2e.lab.subnet)}\(.*[(,]root_squash[,)]", exports, re.M), exports

    again = e2e.pyctl("bootstrap", "-i", str(e2e.inventory), "--phases", NODE_PHASES)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr
    rows = recap(again.stdout)
    assert sorted(rows) == ["node1", "node2", "node3"]
    assert all(row[1] == 0 for row in rows.values()), rows  # changed = 0 on every host

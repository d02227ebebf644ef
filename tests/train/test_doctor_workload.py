"""`pyctl doctor --workload --backend ssh` for real on netns lab hosts: gloo all-reduce between every
pair of hosts, then the DDP payload, a verdict per node.

The slow host is throttled on its own `eth0` inside its namespace with `tc`: netem (delay and rate)
where the kernel has it, else a token bucket (tbf) at the same rate; this machine's kernel has tbf
but no netem. The all-reduce is 1 MiB, so the throttled pairs take seconds, not minutes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import require_root
from tests.train.conftest import DDP_PYTHON, TrainLab, need_ddp_python, pyctl

pytestmark = pytest.mark.lab
RATE = "50mbit"


def _doctor(lab: TrainLab, inventory: str, *args: str):
    return pyctl(
        lab.state_dir,
        "doctor", "--workload", "-i", inventory, "--backend", "ssh", "--ssh-user", "root",
        "--python", str(DDP_PYTHON), "--allreduce-mib", "1", "--json", *args,
        timeout=300,
    )  # fmt: skip


def test_two_hosts_get_a_verdict_each_and_a_broken_one_fails_with_its_reason(train_lab, tmp_path):
    """The 2-host lab plus a third inventory host (node1's sshd again, reached by its name: the inventory
    refuses a second host on the same address) whose training interface does not exist: it fails alone,
    in the preflight, and the two others are measured and train."""
    inventory = yaml.safe_load(train_lab.lab.inventory_path.read_text())
    inventory["all"]["hosts"]["ghost"] = {"ansible_host": train_lab.lab.hosts[0].name, "train_iface": "nope0"}
    inventory["all"]["children"]["workers"]["hosts"]["ghost"] = None
    path = tmp_path / "with-ghost.yml"
    path.write_text(yaml.safe_dump(inventory))

    run = _doctor(train_lab, str(path))
    assert run.returncode == 1, str(run)
    report = json.loads(run.stdout)
    nodes = report["nodes"]
    assert sorted(nodes) == ["ghost", "node1", "node2"]
    for name in ("node1", "node2"):
        assert nodes[name]["verdict"] == "ok", str(run)
        assert nodes[name]["allreduce_gbps"] > 0
    assert nodes["ghost"]["verdict"] == "failed"
    assert nodes["ghost"]["allreduce_gbps"] is None
    assert nodes["ghost"]["reason"] == "network interface 'nope0' does not exist", nodes["ghost"]
    assert report["ddp"]["passed"] is True and report["ddp"]["loss"] < 0.6, report["ddp"]
    assert [(link["a"], link["b"]) for link in report["links"]] == [("node1", "node2")]


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory) -> Iterator[TrainLab]:
    require_root()
    need_ddp_python()
    from pyctl.config import load_settings
    from pyctl.lab import LabSpec, down, up
    from tests.conftest import unique_lab_name

    state = tmp_path_factory.mktemp("workload-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYCTL_STATE_DIR", str(state))
        patch.delenv("PYCTL_CONFIG", raising=False)
        name = unique_lab_name("wl")
        try:
            lab = up(LabSpec(name=name, nodes=3, kind="netns"), settings=load_settings()).lab
            yield TrainLab(lab, state)
        finally:
            down(name, settings=load_settings())


def _throttle(namespace: str) -> str:
    """Slow the host's own link down; returns the qdisc used."""
    base = ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0", "root"]
    netem = subprocess.run([*base, "netem", "delay", "20ms", "rate", RATE], capture_output=True, text=True)
    if netem.returncode == 0:
        return "netem"
    subprocess.run([*base, "tbf", "rate", RATE, "burst", "32kbit", "latency", "400ms"], check=True)
    return "tbf"


def test_a_host_slowed_on_purpose_is_named_the_slow_one(three_hosts):
    slowed = three_hosts.lab.hosts[2]
    qdisc = _throttle(slowed.namespace)
    run = _doctor(three_hosts, str(three_hosts.lab.inventory_path))
    assert run.returncode == 1, str(run)
    nodes = json.loads(run.stdout)["nodes"]
    verdicts = {name: node["verdict"] for name, node in nodes.items()}
    assert verdicts == {"node1": "ok", "node2": "ok", slowed.name: "slow"}, f"{qdisc}: {run}"
    assert "the median of the other nodes' best links" in nodes[slowed.name]["reason"]
    assert nodes[slowed.name]["allreduce_gbps"] < 0.5 * nodes["node1"]["allreduce_gbps"]


def test_the_rendered_k8s_probe_job_measures_every_pair_under_the_kubelet_stand_in(train_lab, tmp_path):
    """`--backend k8s`'s probe Job, run: its pods' command and env (the node name from spec.nodeName, which
    the stand-in answers with the host's network namespace) on the lab hosts, the probe from its ConfigMap."""
    from pyctl.config import load_settings
    from pyctl.inventory import load
    from pyctl.workload import k8s
    from pyctl.workload.check import WorkloadRequest
    from tests.doubles.kubelet_standin import KubeletStandin
    from tests.train.conftest import REPO

    request = WorkloadRequest(inventory=train_lab.lab.inventory_path, size_mib=1)
    documents = k8s.render(request, load_settings(), load(train_lab.inventory), "allreduce-standin", "ddp-standin")
    rendered = {name: yaml.safe_load(text) for name, text in documents["allreduce-standin"].items()}
    configmap = rendered["configmap"]
    standin = KubeletStandin(
        rendered["job"],
        [(h.namespace, h.address) for h in train_lab.lab.hosts],
        image_paths={"/opt/pyctl/ddp": REPO / "payloads" / "ddp"},
        image_path_env=f"{DDP_PYTHON.parent}:/usr/local/bin:/usr/bin:/bin",
        claims={"pyctl-shared": tmp_path / "share"},
        configmaps={configmap["metadata"]["name"]: configmap["data"]},
        workdir=tmp_path / "pods",
    )
    (tmp_path / "share").mkdir()
    codes = standin.run(timeout=240)
    pod0 = standin.pods[0]
    assert standin.outcome == "succeeded" and codes[0] == 0, f"{codes}\n{pod0.log()[-3000:]}"
    lines = [ln for ln in pod0.log().splitlines() if ln.startswith("PYCTL_SUMMARY ")]
    summary = json.loads(lines[-1].split(" ", 1)[1])
    namespaces = [h.namespace for h in train_lab.lab.hosts]
    assert sorted(summary["nodes"]) == sorted(namespaces), summary
    assert len(summary["pairs"]) == 1 and summary["pairs"][0]["gbps"] > 0, summary

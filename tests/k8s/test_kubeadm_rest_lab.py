"""The kubeadm double's REST mode on lab hosts (issue 14, section 5's seam, step b), on a 2-host container lab.

The HTTPS API double listens on the lab's gateway inside the lab's network namespace, with a CA made beforehand that
install.api_double puts on node1 as /etc/kubernetes/pki/ca.crt and ca.key (kubeadm uses a pre-existing CA). `kubeadm init` on
node1 signs admin.conf with it, forwards node1:6443 to the double and registers node1; `kubeadm token create` writes
a bootstrap-token Secret; `kubeadm join` on node2 discovers the CA through cluster-info's JWS and the pinned hash and
registers node2. Then the real kubectl (Debian sid's 1.36 build, the one scripts/setup --dev puts in the venv,
copied to node1 in place of the kubectl double) applies flannel's pinned manifest through node1:6443 with the
admin.conf kubeadm wrote, and the nodes turn Ready in the double's cluster model. The host checks are not the point
here (test_lab_phases runs them): they are ignored by name.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import lab_leftovers, require_root, unique_lab_name, wait_for
from tests.doubles import install, kubeadm_rest
from tests.doubles.fake_apiserver import ApiServerDouble, in_netns
from tests.doubles.fake_cluster import NOT_READY

pytestmark = pytest.mark.lab

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sample"
TOKEN_SECRET = "bootstrap.kubernetes.io/token"


@pytest.fixture(scope="module")
def lab_api(tmp_path_factory):
    require_root()
    from pyctl.lab import LabSpec, down, up

    name = unique_lab_name("kr")
    lab = None
    try:
        lab = up(LabSpec(name=name, nodes=2, kind="container")).lab
        install.install(lab)
        folder = tmp_path_factory.mktemp("kubeadm-rest-lab")
        with install.api_double(lab, folder / "api") as api:
            yield lab, api
    finally:
        down(name)
        assert lab_leftovers(name) == []


def ready_message(api: ApiServerDouble, name: str) -> str:
    conditions = (api.get("", "nodes", name, "") or {}).get("status", {}).get("conditions") or []
    return next((c.get("message", "") for c in conditions if c["type"] == "Ready"), "")


def init_config(address: str) -> bytes:
    text = (GOLDEN / "kubeadm-config.yaml").read_text().replace("192.168.10.11", address).replace("cp1", "node1")
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] == "KubeletConfiguration":
            doc["failSwapOn"] = False
    return yaml.safe_dump_all(docs).encode()


def test_init_token_and_join_go_through_the_api_double_over_tls(lab_api):
    lab, api = lab_api
    node1, node2 = lab.host("node1"), lab.host("node2")
    install.put(lab, "node1", "/root/kubeadm.yaml", init_config(node1.address))
    init = lab.ssh(
        "node1",
        "kubeadm init --config /root/kubeadm.yaml --skip-token-print --ignore-preflight-errors=all",
        check=False,
    )
    assert init.returncode == 0 and "initialized successfully" in init.stdout, init.stdout + init.stderr
    cp = api.get("", "nodes", "node1", "")
    assert "node-role.kubernetes.io/control-plane" in cp["metadata"]["labels"]
    assert cp["spec"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    assert api.get("", "configmaps", "cluster-info", "kube-public") is not None

    # the admin.conf kubeadm wrote on node1 (signed there with the given CA) is the cluster's admin through node1:6443
    admin = kubeadm_rest.Api.from_kubeconfig(lab.ssh("node1", "cat /etc/kubernetes/admin.conf").stdout)
    assert admin.server == f"https://{node1.address}:6443"
    status, listed = in_netns(lab.namespace, lambda: admin.call("GET", "/api/v1/namespaces/kube-system/secrets"))
    assert status == 200 and sum(1 for s in listed["items"] if s.get("type") == TOKEN_SECRET) == 1

    token = lab.ssh("node1", "kubeadm token create --ttl 15m0s").stdout.strip()
    assert kubeadm_rest.TOKEN.match(token)
    join = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": f"{node1.address}:6443",
                "token": token,
                "caCertHashes": [kubeadm_rest.ca_hash(api.pki["ca.crt"].read_bytes())],
            }
        },
        "nodeRegistration": {
            "name": "node2",
            "kubeletExtraArgs": [{"name": "node-ip", "value": node2.address}],
        },
    }
    install.put(lab, "node2", "/root/join.yaml", yaml.safe_dump(join).encode())
    joined = lab.ssh("node2", "kubeadm join --config /root/join.yaml --ignore-preflight-errors=all", check=False)
    assert joined.returncode == 0 and "joined the cluster" in joined.stdout, joined.stdout + joined.stderr
    worker = api.get("", "nodes", "node2", "")
    assert worker["status"]["addresses"][0]["address"] == node2.address
    assert lab.ssh("node2", "cat /etc/kubernetes/pki/ca.crt").stdout.encode() == api.pki["ca.crt"].read_bytes()
    # the double's cluster model judges the joined nodes: no CNI yet
    assert wait_for(lambda: ready_message(api, "node2") == NOT_READY)

    lab.ssh("node1", f"kubeadm token delete {token.split('.')[0]}")
    assert api.get("", "secrets", f"bootstrap-token-{token.split('.')[0]}", "kube-system") is None
    calls = [c for c in install.calls(lab, "node2", "kubeadm") if c["argv"][0] == "join"]
    assert calls and calls[0]["ca_hashes"] == 1 and "failed" not in calls[0]


def test_the_real_kubectl_on_the_control_plane_applies_flannel_through_the_double(lab_api):
    lab, api = lab_api
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.is_file():
        pytest.skip(f"kubectl 1.36 is not at {kubectl}: run scripts/setup --dev")
    if api.get("", "nodes", "node2", "") is None:
        pytest.skip("needs the cluster the previous test built")
    install.put(lab, "node1", "/usr/local/bin/kubectl", kubectl.read_bytes(), "755")
    install.put(lab, "node1", "/root/flannel.yaml", (GOLDEN / "flannel.yaml").read_bytes())
    admin = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
    assert "Server Version: v1.36" in lab.ssh("node1", f"{admin} version").stdout
    applied = lab.ssh("node1", f"{admin} apply -f /root/flannel.yaml", check=False)
    assert applied.returncode == 0 and "daemonset.apps/kube-flannel-ds created" in applied.stdout, applied.stderr
    assert wait_for(lambda: ready_message(api, "node2") == "kubelet is posting ready status")
    listed = lab.ssh("node1", f"{admin} get nodes --no-headers").stdout
    assert re.search(r"^node1\s+Ready\s+control-plane", listed, re.M) and re.search(r"^node2\s+Ready", listed, re.M)
    # the roles' other kubectl command lines, as they are (nvidia_device_plugin's label.yml, verify's cluster.yml)
    label = f"{admin} label node node2 nvidia.com/gpu.present=true --overwrite"
    assert lab.ssh("node1", label).stdout.strip() == "node/node2 labeled"
    assert lab.ssh("node1", label).stdout.strip() == "node/node2 not labeled"
    snapshot = json.loads(
        lab.ssh("node1", f"{admin} get nodes,pods,daemonsets,persistentvolumeclaims --all-namespaces -o json").stdout
    )
    kinds = {item["kind"] for item in snapshot["items"]}
    assert {"Node", "Pod", "DaemonSet"} <= kinds
    assert lab.ssh("node1", f"{admin} get --raw /readyz").stdout.strip() == "ok"

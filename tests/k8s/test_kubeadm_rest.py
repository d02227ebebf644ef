"""kubeadm's bootstrap-token flow over the REST API against the HTTPS API double (issue 14, section 5's seam, step b).

In process, no lab: tests/doubles/kubeadm_rest.py (what the kubeadm double is to do on the hosts) writes the token
Secrets and kube-public/cluster-info as kubeadm 1.36 does, the API double's BootstrapSigner signs cluster-info per
token and its TokenCleaner removes expired ones, and a joining node discovers the CA with the token and the pinned
CA hash, then registers its Node with the token's identity, which may do nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root, unique_lab_name, wait_for
from tests.doubles import kubeadm_rest
from tests.doubles.fake_apiserver import ApiServerDouble, NodeSpec, in_netns, make_pki


@pytest.fixture
def api(tmp_path: Path):
    with ApiServerDouble(tmp_path / "api", nodes=[NodeSpec("node1", control_plane=True)]) as double:
        yield double
        assert not [w for w in double.warnings if w.startswith(("controller error", "server error"))]


def admin(api: ApiServerDouble) -> kubeadm_rest.Api:
    return kubeadm_rest.Api.from_kubeconfig(api.kubeconfig.read_text())


def endpoint(api: ApiServerDouble) -> str:
    return api.server.removeprefix("https://")


def initialised(api: ApiServerDouble, ttl: str = "24h0m0s") -> tuple[bytes, str]:
    """kubeadm init's bootstrap-token phase: cluster-info uploaded, one token created."""
    ca = api.pki["ca.crt"].read_bytes()
    kubeadm_rest.upload_cluster_info(admin(api), api.server, ca)
    return ca, kubeadm_rest.create_token(admin(api), ttl, "kubeadm init")


def node(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "pyctl.io/test": "yes"}},
    }


def test_the_ca_hash_is_the_sha256_of_the_certificates_subject_public_key_info(api):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = api.pki["ca.crt"].read_bytes()
    spki = (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert kubeadm_rest.ca_hash(pem) == "sha256:" + hashlib.sha256(spki).hexdigest()


def test_a_token_lets_a_joining_node_discover_the_pinned_ca_and_register_its_node(api):
    ca, token = initialised(api)
    token_id = token.split(".")[0]
    secret = api.get("", "secrets", f"bootstrap-token-{token_id}", "kube-system")
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    fields = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert fields["token-id"] == token_id and fields["token-secret"] == token.split(".")[1]
    assert fields["usage-bootstrap-authentication"] == fields["usage-bootstrap-signing"] == "true"
    assert fields["auth-extra-groups"] == "system:bootstrappers:kubeadm:default-node-token"
    assert fields["expiration"].endswith("Z")

    found_ca, server = kubeadm_rest.discover(endpoint(api), token, [kubeadm_rest.ca_hash(ca)], timeout=30)
    assert (found_ca, server) == (ca, api.server)
    info = api.get("", "configmaps", "cluster-info", "kube-public")
    assert info["data"][f"jws-kubeconfig-{token_id}"].count(".") == 2  # header..signature, payload detached

    kubeadm_rest.register_node(server, found_ca, token, node("node2"))
    assert api.get("", "nodes", "node2", "")["metadata"]["labels"]["pyctl.io/test"] == "yes"
    with pytest.raises(kubeadm_rest.KubeadmError, match='a Node with name "node1" and status "Ready" already exists'):
        kubeadm_rest.register_node(server, found_ca, token, node("node1"))


def test_discovery_refuses_a_ca_that_is_not_pinned(api):
    _, token = initialised(api)
    other = "sha256:" + "0" * 64
    with pytest.raises(
        kubeadm_rest.KubeadmError, match="cluster CA found in cluster-info ConfigMap is invalid: none of"
    ):
        kubeadm_rest.discover(endpoint(api), token, [other], timeout=30)


def test_a_deleted_or_unknown_token_is_refused_as_kubeadm_refuses_it(api):
    ca, token = initialised(api)
    pin = [kubeadm_rest.ca_hash(ca)]
    kubeadm_rest.delete_token(admin(api), token.split(".")[0])
    assert wait_for(
        lambda: (
            not any(
                k.startswith("jws-kubeconfig-")
                for k in api.get("", "configmaps", "cluster-info", "kube-public")["data"]
            )
        )
    )
    for tried in (token, kubeadm_rest.new_token()):
        with pytest.raises(kubeadm_rest.KubeadmError, match=r'token id "[a-z0-9]{6}" is invalid for this cluster'):
            kubeadm_rest.discover(endpoint(api), tried, pin, timeout=1)
    status, _ = kubeadm_rest.Api(api.server, ca, token=token).call("GET", "/api/v1/nodes/node1")
    assert status == 401


def test_a_token_past_its_ttl_is_removed_and_authenticates_no_more(api):
    ca, token = initialised(api, ttl="1s")
    token_id = token.split(".")[0]
    assert wait_for(lambda: api.get("", "secrets", f"bootstrap-token-{token_id}", "kube-system") is None)
    status, _ = kubeadm_rest.Api(api.server, ca, token=token).call("GET", "/api/v1/nodes/node1")
    assert status == 401
    assert kubeadm_rest.list_tokens(admin(api)) == []


def test_the_token_and_anonymous_identities_may_do_only_what_kubeadm_grants_them(api):
    ca, token = initialised(api)
    as_token = kubeadm_rest.Api(api.server, ca, token=token)
    assert as_token.call("GET", "/api/v1/nodes/node1")[0] == 200
    status, body = as_token.call("GET", "/api/v1/namespaces/kube-system/secrets")
    assert status == 403 and f'User "system:bootstrap:{token.split(".")[0]}"' in body["message"]
    anonymous = kubeadm_rest.Api(api.server, ca)
    assert anonymous.call("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info")[0] == 200
    assert anonymous.call("GET", "/api/v1/nodes/node1")[0] == 403
    listed = kubeadm_rest.list_tokens(admin(api))
    assert [t["token-id"] for t in listed] == [token.split(".")[0]] and "token-secret" not in listed[0]


# --- served where a lab's hosts reach it: inside a network namespace, with the cluster CA kubeadm was given ------

ADDRESS = "10.250.7.1"  # inside the test's own network namespace only


@pytest.fixture
def netns_api(tmp_path: Path):
    """The API double listening on ADDRESS:6443 inside a fresh network namespace, serving with a CA made
    beforehand (as kubeadm uses a pre-existing /etc/kubernetes/pki/ca.crt and ca.key)."""
    require_root()
    name = f"pyctl-{unique_lab_name('kr')}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{ADDRESS}/32", "dev", "lo"], check=True)
        given = make_pki(tmp_path / "given", "127.0.0.1")
        ca = (given["ca.crt"], given["ca.key"])
        with ApiServerDouble(tmp_path / "api", host=ADDRESS, port=6443, netns=name, ca=ca, sans=("node1",)) as api:
            yield name, api
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_served_in_a_network_namespace_with_a_given_ca_a_joining_node_discovers_that_ca(netns_api, tmp_path):
    name, api = netns_api
    given = (tmp_path / "given" / "ca.crt").read_bytes()
    assert api.pki["ca.crt"].read_bytes() == given
    assert api.server == f"https://{ADDRESS}:6443"

    def init_and_join() -> tuple[bytes, str]:
        _, token = initialised(api)
        found, server = kubeadm_rest.discover(f"{ADDRESS}:6443", token, [kubeadm_rest.ca_hash(given)], timeout=30)
        kubeadm_rest.register_node(server, found, token, node("node2"))
        return found, server

    assert in_netns(name, init_and_join) == (given, api.server)
    assert api.get("", "nodes", "node2", "") is not None


def test_the_real_kubectl_reaches_the_double_inside_the_namespace_over_verified_tls(netns_api):
    kubectl = Path(sys.executable).parent / "kubectl"  # Debian sid's 1.36 build, as scripts/setup --dev installs it
    if not kubectl.is_file():
        pytest.skip(f"kubectl 1.36 is not at {kubectl}: run scripts/setup --dev")
    name, api = netns_api
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{name}", str(kubectl), "--kubeconfig", str(api.kubeconfig), "get", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^node1\s+Ready", result.stdout, re.M)


# --- the kubeadm double's own pieces of that flow, in process -----------------------------------------------------


@pytest.fixture
def kubeadm_double(monkeypatch, api):
    """The kubeadm double's module loaded as on a lab host (its folder on sys.path), its CA the API double's."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(kubeadm_rest.__file__).parent))
    module = importlib.import_module("fake_kubeadm")
    monkeypatch.setattr(module, "CA", api.pki["ca.crt"])
    monkeypatch.setattr(module, "CA_KEY", api.pki["ca.key"])
    return module


def test_the_kubeadm_doubles_admin_conf_is_signed_with_the_given_ca_and_is_the_clusters_admin(api, kubeadm_double):
    ca = api.pki["ca.crt"].read_bytes()
    text = kubeadm_double.signed_kubeconfig(
        endpoint(api), ca, "kubernetes-admin", "kubernetes-admin", "kubeadm:cluster-admins"
    )
    assert kubeadm_rest.Api.from_kubeconfig(text).call("GET", "/api/v1/namespaces/kube-system/secrets")[0] == 200
    assert kubeadm_rest.Api(api.server, ca).call("GET", "/api/v1/namespaces/kube-system/secrets")[0] == 403
    line = kubeadm_double.join_command(endpoint(api), "abcdef.0123456789abcdef")
    assert f"--discovery-token-ca-cert-hash {kubeadm_rest.ca_hash(ca)}" in line


def test_the_forwarded_port_reaches_the_double_with_tls_end_to_end(api):
    import socket
    import threading

    from tests.doubles import apiserver_forward

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = endpoint(api)
    threading.Thread(target=apiserver_forward.serve, args=(f"127.0.0.1:{port}", target), daemon=True).start()
    forwarded = kubeadm_rest.Api(f"https://127.0.0.1:{port}", api.pki["ca.crt"].read_bytes())
    assert wait_for(lambda: _answers(forwarded))
    assert forwarded.call("GET", "/version")[1]["minor"] == "36"


def _answers(client: kubeadm_rest.Api) -> bool:
    try:
        return client.call("GET", "/readyz")[0] == 200
    except OSError:
        return False

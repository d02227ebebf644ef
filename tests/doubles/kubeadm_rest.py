"""TEST DOUBLE support: kubeadm 1.36's bootstrap-token flow over the Kubernetes REST API, for pyctl's tests only.

What the kubeadm double does against an API server (the HTTPS API double, fake_apiserver.py) instead of the
fake cluster's private endpoints, with the shapes the real kubeadm v1.36 writes and reads (upstream contract:
kubernetes/kubernetes cmd/kubeadm/app/phases/bootstraptoken, app/discovery/token/token.go,
app/util/pubkeypin; staging/src/k8s.io/cluster-bootstrap/token/{api,jws}):

- `create_token` writes the token as kubeadm does: a Secret `bootstrap-token-<id>` in kube-system of type
  bootstrap.kubernetes.io/token (token-id, token-secret, expiration in RFC 3339, usage-bootstrap-authentication,
  usage-bootstrap-signing, auth-extra-groups system:bootstrappers:kubeadm:default-node-token, description);
  `delete_token` deletes it (by id or by the whole token);
- `upload_cluster_info` writes the `cluster-info` ConfigMap in kube-public (its `kubeconfig`: the server and the
  cluster CA, no user), which the API server's BootstrapSigner signs per token (`jws-kubeconfig-<id>`);
- `discover` is kubeadm join's token discovery: it reads cluster-info without trusting the server, waits for the
  JWS signature of its token id, checks it (HS256 keyed by the token secret padded to 32 bytes, detached
  payload, protected header {"alg":"HS256","kid":"<id>"}), checks the CA against the pinned
  `sha256:<hex>` hashes of its Subject Public Key Info, reads cluster-info again over TLS verified with that
  CA, and refuses if the two differ; its errors carry kubeadm's messages;
- `register_node` registers the joining node's Node object with the bootstrap token's credentials after
  kubeadm's check that no Ready Node of that name exists. Not modelled: the kubelet's TLS bootstrap (a
  CertificateSigningRequest for a client certificate); the kubelet stand-in registers with the token instead.

Standard library plus PyYAML only: the lab hosts run it with Debian's python3.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import re
import secrets
import ssl
import string
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
TOKEN_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
DEFAULT_GROUPS = "system:bootstrappers:kubeadm:default-node-token"
CLUSTER_INFO = "cluster-info"
# TEST DOUBLE channel: what a kubelet knows about its host (GPUs from nvidia-smi, containerd's runtimes from
# `containerd config dump`, bridge-nf-call-iptables), put on the Node it registers so the API double's cluster model
# can judge flannel, the device plugin and RuntimeClasses as the real components would on that host.
FACTS = "test-double.pyctl.io/host-facts"
JWS_PREFIX = "jws-kubeconfig-"
_ALPHABET = string.ascii_lowercase + string.digits


class KubeadmError(Exception):
    """What kubeadm prints and exits 1 with."""


# --- the pieces kubeadm computes -------------------------------------------------------------------------------


def new_token() -> str:
    """A token as `kubeadm token generate` makes it: [a-z0-9]{6}.[a-z0-9]{16}."""
    return (
        "".join(secrets.choice(_ALPHABET) for _ in range(6))
        + "."
        + "".join(secrets.choice(_ALPHABET) for _ in range(16))
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached_signature(content: str, token_id: str, token_secret: str) -> str:
    """cluster-bootstrap's jws.ComputeDetachedSignature: compact HS256 JWS with the payload left out."""
    key = token_secret.encode().ljust(32, b"\0")
    header = _b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{_b64url(content.encode())}".encode()
    return f"{header}..{_b64url(hmac.new(key, signing_input, hashlib.sha256).digest())}"


def _der(buf: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the DER element at `at`."""
    tag, length = buf[at], buf[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(buf[start : start + count], "big")
        start += count
    return tag, start, start + length


def pem_to_der(pem: bytes) -> list[bytes]:
    text = pem.decode()
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    return [base64.b64decode("".join(block.split())) for block in blocks]


def spki_hash(cert_der: bytes) -> str:
    """pubkeypin.Hash: sha256 of the certificate's DER SubjectPublicKeyInfo, as `sha256:<hex>`."""
    _, tbs, _ = _der(cert_der, 0)  # Certificate ::= SEQUENCE { tbsCertificate, ... }
    _, at, _ = _der(cert_der, tbs)  # TBSCertificate ::= SEQUENCE { [0] version?, serial, sig, issuer, ...
    if cert_der[at] == 0xA0:
        at = _der(cert_der, at)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        at = _der(cert_der, at)[2]
    end = _der(cert_der, at)[2]
    return "sha256:" + hashlib.sha256(cert_der[at:end]).hexdigest()


def ca_hash(ca_pem: bytes) -> str:
    return spki_hash(pem_to_der(ca_pem)[0])


def duration_seconds(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(h|ms|m|s)", str(text)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def _rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_secret(token: str, ttl: str, description: str, groups: str = DEFAULT_GROUPS) -> dict[str, Any]:
    """The Secret kubeadm's bootstraptoken phase writes for `token` (a ttl of 0 never expires)."""
    found = TOKEN.match(token)
    if not found:
        raise KubeadmError('the bootstrap token was not of the form "[a-z0-9]{6}.[a-z0-9]{16}"')
    token_id, secret = found.groups()
    data = {
        "token-id": token_id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
        "auth-extra-groups": groups,
    }
    if description:
        data["description"] = description
    seconds = duration_seconds(ttl)
    if seconds:
        data["expiration"] = _rfc3339(time.time() + seconds)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_PREFIX + token_id, "namespace": "kube-system"},
        "type": TOKEN_TYPE,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def cluster_info_kubeconfig(server: str, ca_pem: bytes) -> str:
    """The `kubeconfig` of cluster-info: the cluster only (kubeadm's clusterinfo phase)."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "",
                    "cluster": {"certificate-authority-data": base64.b64encode(ca_pem).decode(), "server": server},
                }
            ],
            "contexts": None,
            "current-context": "",
            "preferences": {},
            "users": None,
        },
        sort_keys=False,
    )


# --- a small REST client ---------------------------------------------------------------------------------------


class Api:
    """HTTPS to an API server: verified with `ca_pem` (or not at all, as discovery's first read), as a client
    certificate, a bearer token, or anonymous."""

    def __init__(
        self,
        server: str,
        ca_pem: bytes | None,
        *,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        token: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        if ca_pem is None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        else:
            self.context = ssl.create_default_context(cadata=ca_pem.decode())
        if cert_pem and key_pem:
            with tempfile.TemporaryDirectory() as folder:  # ssl loads a chain from files only
                cert, key = Path(folder) / "c", Path(folder) / "k"
                cert.write_bytes(cert_pem)
                key.touch(0o600)
                key.write_bytes(key_pem)
                self.context.load_cert_chain(cert, key)

    @classmethod
    def from_kubeconfig(cls, text: str) -> Api:
        config = yaml.safe_load(text)
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])

        def data(key: str) -> bytes | None:
            return base64.b64decode(user[key]) if user.get(key) else None

        return cls(
            cluster["server"],
            base64.b64decode(cluster["certificate-authority-data"]),
            cert_pem=data("client-certificate-data"),
            key_pem=data("client-key-data"),
            token=user.get("token"),
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json", "User-Agent": "kubeadm/v1.36.0 (linux/amd64) TEST-DOUBLE"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=20) as response:
                return response.status, _decoded(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decoded(exc.read(), str(exc.reason))


def _decoded(data: bytes, reason: str = "") -> dict[str, Any]:
    """A JSON answer, or a plain one (/readyz says `ok`) as {"text": ...}."""
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return {"text": data.decode(errors="replace"), "message": reason or data.decode(errors="replace")}


def _check(status: int, body: dict[str, Any], doing: str) -> dict[str, Any]:
    if status >= 300:
        raise KubeadmError(f"{doing}: {body.get('message', status)}")
    return body


# --- kubeadm init's and kubeadm token's calls (with the admin credentials) -------------------------------------


def upload_cluster_info(api: Api, server: str, ca_pem: bytes) -> None:
    """kubeadm init's bootstrap-token phase: create (or update) kube-public/cluster-info."""
    path = "/api/v1/namespaces/kube-public/configmaps"
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CLUSTER_INFO, "namespace": "kube-public"},
        "data": {"kubeconfig": cluster_info_kubeconfig(server, ca_pem)},
    }
    status, answer = api.call("POST", path, body)
    if status == 409:
        status, current = api.call("GET", f"{path}/{CLUSTER_INFO}")
        _check(status, current, "unable to read the cluster-info ConfigMap")
        current["data"] = {**(current.get("data") or {}), **body["data"]}
        status, answer = api.call("PUT", f"{path}/{CLUSTER_INFO}", current)
    _check(status, answer, "error uploading the cluster-info ConfigMap")


def create_token(api: Api, ttl: str = "24h0m0s", description: str = "", token: str | None = None) -> str:
    """`kubeadm token create`: the token's Secret; returns the token."""
    token = token or new_token()
    secret = token_secret(token, ttl, description)
    status, answer = api.call("POST", "/api/v1/namespaces/kube-system/secrets", secret)
    if status == 409:
        raise KubeadmError(f'a token with id "{token.split(".")[0]}" already exists')
    _check(status, answer, "failed to create or update bootstrap token")
    return token


def delete_token(api: Api, id_or_token: str) -> None:
    """`kubeadm token delete ID|TOKEN`."""
    token_id = id_or_token.split(".", maxsplit=1)[0]
    if not re.fullmatch(r"[a-z0-9]{6}", token_id):
        raise KubeadmError('given token didn\'t match pattern "[a-z0-9]{6}" or "[a-z0-9]{6}.[a-z0-9]{16}"')
    status, answer = api.call("DELETE", f"/api/v1/namespaces/kube-system/secrets/{SECRET_PREFIX}{token_id}")
    _check(status, answer, f'failed to delete bootstrap token "{token_id}"')


def list_tokens(api: Api) -> list[dict[str, str]]:
    """`kubeadm token list`: the bootstrap tokens' decoded fields (token-secret left out)."""
    status, answer = api.call("GET", "/api/v1/namespaces/kube-system/secrets")
    _check(status, answer, "failed to list bootstrap tokens")
    tokens = []
    for item in answer.get("items") or []:
        if item.get("type") != TOKEN_TYPE:
            continue
        fields = {k: base64.b64decode(v).decode() for k, v in (item.get("data") or {}).items()}
        fields.pop("token-secret", None)
        tokens.append(fields)
    return tokens


# --- kubeadm join's calls (with the bootstrap token only) ------------------------------------------------------


def discover(
    endpoint: str, token: str, ca_hashes: list[str], timeout: float = 60, interval: float = 0.5
) -> tuple[bytes, str]:
    """kubeadm join's token discovery against https://<endpoint>: (the cluster CA, the server to use)."""
    found = TOKEN.match(token)
    if not found:
        raise KubeadmError(f'the bootstrap token "{token[:6]}..." was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"')
    token_id, secret = found.groups()
    for pin in ca_hashes:
        kind, _, value = pin.partition(":")
        if kind.lower() != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise KubeadmError(f"invalid discovery token CA certificate hash: invalid hash {pin!r}")
    server = f"https://{endpoint}"
    insecure = _cluster_info(Api(server, None), token_id, timeout, interval)
    kubeconfig = insecure.get("kubeconfig") or ""
    if not kubeconfig:
        raise KubeadmError(
            "there is no kubeconfig key in the cluster-info ConfigMap. This API Server isn't set up for token"
            " bootstrapping, can't connect"
        )
    if not hmac.compare_digest(
        insecure.get(JWS_PREFIX + token_id, ""), detached_signature(kubeconfig, token_id, secret)
    ):
        raise KubeadmError(
            "failed to verify JWS signature of received cluster info object, can't trust this API Server"
        )
    cluster = yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"])
    if not ca_hashes:
        return ca_pem, cluster["server"]
    hashes = [spki_hash(der) for der in pem_to_der(ca_pem)]
    if not {h.lower() for h in hashes} & {p.lower() for p in ca_hashes}:
        raise KubeadmError(
            f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {':'.join(hashes)!r}"
            " are pinned".replace("'", '"')
        )
    secure = _cluster_info(Api(server, ca_pem), token_id, timeout, interval)
    if secure.get("kubeconfig") != kubeconfig:
        raise KubeadmError(
            "the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was different from the first"
        )
    return ca_pem, cluster["server"]


def _cluster_info(api: Api, token_id: str, timeout: float, interval: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    last = "failed to request the cluster-info ConfigMap"
    while True:
        try:
            status, answer = api.call("GET", f"/api/v1/namespaces/kube-public/configmaps/{CLUSTER_INFO}")
            if status == 200:
                data = answer.get("data") or {}
                if JWS_PREFIX + token_id in data:
                    return data
                last = f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{token_id}"'
            else:
                last = f"failed to request the cluster-info ConfigMap: {answer.get('message', status)}"
        except (urllib.error.URLError, OSError) as exc:
            last = f"failed to request the cluster-info ConfigMap: {exc}"
        if time.monotonic() >= deadline:
            if "could not find a JWS signature" in last:
                raise KubeadmError(
                    f'token id "{token_id}" is invalid for this cluster or it has expired. Use "kubeadm token create"'
                    " on the control-plane node to create a new valid token"
                )
            raise KubeadmError(last)
        time.sleep(interval)


def upload_kubeadm_config(api: Api, cluster_configuration: dict[str, Any]) -> None:
    """kubeadm init's upload-config phase: kube-system/kubeadm-config with the ClusterConfiguration."""
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": yaml.safe_dump(cluster_configuration, sort_keys=False)},
    }
    status, answer = api.call("POST", "/api/v1/namespaces/kube-system/configmaps", body)
    if status == 409:
        status, answer = api.call("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", body)
    _check(status, answer, "error uploading the kubeadm-config ConfigMap")


def node_object(
    name: str,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Node a kubelet registers (its labels from --node-labels, its taints from kubeadm's nodeRegistration),
    with the host's facts (FACTS) for the double's cluster model."""
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})},
        "annotations": {FACTS: json.dumps(facts or {}, sort_keys=True)},
    }
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {}}
    if taints:
        node["spec"]["taints"] = taints
    if (facts or {}).get("address"):
        node["status"] = {"addresses": [{"type": "InternalIP", "address": facts["address"]}]}
    return node


def register_node(server: str, ca_pem: bytes, token: str, node: dict[str, Any]) -> dict[str, Any]:
    """The joining node's Node object, after kubeadm join's check that no Ready Node has its name."""
    api = Api(server, ca_pem, token=token)
    name = node["metadata"]["name"]
    status, existing = api.call("GET", f"/api/v1/nodes/{name}")
    if status == 200:
        ready = next((c for c in existing.get("status", {}).get("conditions") or [] if c["type"] == "Ready"), {})
        if ready.get("status") == "True":
            raise KubeadmError(
                f'a Node with name "{name}" and status "Ready" already exists in the cluster. You must delete the'
                " existing Node or change the name of this new joining Node"
            )
        return existing
    if status != 404:
        _check(status, existing, "cannot get Node")
    status, answer = api.call("POST", "/api/v1/nodes", node)
    return _check(status, answer, f'unable to register node "{name}" with API server')

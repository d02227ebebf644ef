"""TEST DOUBLE - a Kubernetes API server over HTTPS, for pyctl's tests only. It is not Kubernetes.

The real `kubernetes` Python client (and kubectl) talk to it unmodified through a kubeconfig shaped like
the admin.conf `pyctl bootstrap` fetches from kubeadm (cluster "kubernetes", user "kubernetes-admin",
embedded CA and client certificate with O=kubeadm:cluster-admins). Per test it makes a CA, a serving
certificate for 127.0.0.1 and the client certificate in a temporary folder; a bearer token works too.

Upstream contract reproduced: the Kubernetes API 1.36 REST conventions
(https://kubernetes.io/docs/reference/using-api/api-concepts/), for the verbs pyctl uses:
- create (POST), get, list with labelSelector (=, ==, !=, in, notin, exists, !key) and fieldSelector
  (=, ==, !=), replace (PUT, with resourceVersion conflicts), delete with propagationPolicy
  (Foreground keeps the owner with a deletionTimestamp and the foregroundDeletion finalizer until its
  dependents are gone; Background removes it and collects dependents; Orphan, which is batch/v1 Job's
  default, leaves them), patch (application/json-patch+json, merge-patch+json, strategic-merge-patch+json,
  which custom resources refuse with 415 as the real server does; server-side apply,
  application/apply-patch+yaml with fieldManager, as a plain merge of the applied fields: no managed
  fields are tracked, see https://kubernetes.io/docs/reference/using-api/server-side-apply/), the status
  subresource, pod logs (`follow=true` streams chunked until the container ends);
- watch (`watch=true`): chunked JSON watch events ADDED/MODIFIED/DELETED with resourceVersion, from a
  given resourceVersion (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes);
  one older than the kept history gets an ERROR event with a 410 Expired Status;
- errors as metav1.Status objects (404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid, 400 BadRequest,
  415, 401/403), so the client raises ApiException with the right status;
- field validation (KEP-2885, GA in 1.27): every created, replaced or patched object of a built-in kind
  is checked against the pinned Kubernetes 1.36 OpenAPI schema (openapi_strict.py). With
  fieldValidation=Strict an unknown field is a 400 BadRequest "strict decoding error"; with Warn (the
  server's default when the client sends none) it is dropped and a `Warning: 299` header says so
  (recorded in `warnings`, so tests can assert pyctl sends no unknown field); Ignore drops it silently.
  Wrong types are 400, missing required fields and values outside an enum are 422 Invalid. Kubeflow
  Trainer v2.3.0 custom resources are checked against their pinned CRDs (tests/train/crd_schema.py).

Bootstrap tokens, as kubeadm 1.36 relies on them (k8s.io/cluster-bootstrap/token/{api,jws};
https://kubernetes.io/docs/reference/access-authn-authz/bootstrap-tokens/): a bearer token `<id>.<secret>`
matching a Secret kube-system/bootstrap-token-<id> of type bootstrap.kubernetes.io/token, unexpired, with
usage-bootstrap-authentication "true", authenticates as system:bootstrap:<id>, which may only read
kube-public/cluster-info, kube-system's kubeadm-config and kubelet-config, and Nodes, and create a Node (the
kubelet's TLS bootstrap through a CSR is not modelled); anonymous requests may only read cluster-info (kubeadm's
RBAC); the BootstrapSigner keeps cluster-info's `jws-kubeconfig-<id>` signatures equal to the detached HS256 JWS
of its kubeconfig for exactly the unexpired signing tokens, and the TokenCleaner deletes expired token Secrets.
kubeadm's side of the flow is tests/doubles/kubeadm_rest.py. A Secret's `stringData` is merged into `data`.

Controllers, modelled on what pyctl relies on:
- the fake cluster's model (fake_cluster.Cluster, the same code the plain-HTTP fake cluster runs on lab hosts) for
  Nodes registered through kubeadm's flow with their host's facts (kubeadm_rest.FACTS): they are NotReady ("cni
  plugin not initialized") until flannel v0.28.9's DaemonSet runs as the pinned manifest runs it with a net-conf
  Network equal to kube-system/kubeadm-config's podSubnet; they advertise nvidia.com/gpu only where the device
  plugin's DaemonSet runs with the nvidia runtime (a RuntimeClass that exists and whose handler is a runtime of
  the node's `containerd config dump`, or nvidia as containerd's default runtime); DaemonSets get the model's
  status and pods (owned by the DaemonSet, none where admission refuses a missing RuntimeClass); a claim is Bound
  when a volume is pre-bound to it; a standalone pod for a joined node (any node, when the double was given no
  NodeSpec) gets the model's fate instead of the kubelet stand-in's (the acceptance gate's smoke, GPU, write and
  read pods: Failed without a pod network or where the node's bridge-nf-call-iptables is off, Pending while its
  claim is unbound, a reader Failed unless the other node wrote the file through the claim);
- the Job controller (pkg/controller/job, Indexed mode): one pod per completion index, named
  `<job>-<i>-<suffix>` with host name `<job>-<i>`, the job-name, controller-uid and completion-index
  labels and annotation; the pods run through the kubelet stand-in (kubelet_standin.py: processes per
  completion index in the lab hosts' network namespaces, pod i on node i), so their phases, container
  states and logs are the processes' own. The nodes are the NodeSpecs given or, in a cluster nodes join
  (nodes=[]), the scheduler's feasible joined Nodes by name (Ready, taints tolerated, enough allocatable
  nvidia.com/gpu), each run in the network namespace `namespaces=` names for it (its lab host's); the Job's status (active/succeeded/failed, conditions
  SuccessCriteriaMet+Complete or FailureTarget+Failed with reason PodFailurePolicy) follows, and the
  pods the controller stops when the job ends are deleted, as the real one does;
- the scheduler and kubelet's refusals, staged by the double's configuration: a claim that does not
  exist or is not bound (Pending, PodScheduled=False Unschedulable, FailedScheduling event), more
  nvidia.com/gpu than any node has (FailedScheduling "Insufficient nvidia.com/gpu"), an image the double
  cannot "pull" (not in `images`, or in `unpullable`: Waiting ErrImagePull then ImagePullBackOff, with
  Failed and BackOff events), a ConfigMap volume whose ConfigMap is missing (FailedMount);
- Kueue v0.19 (pkg/controller/jobframework, apis/kueue/v1beta2): a Job labelled
  kueue.x-k8s.io/queue-name gets a Workload (served as v1beta2 and v1beta1) labelled
  kueue.x-k8s.io/job-uid; it is admitted all or nothing (QuotaReserved and Admitted, then the Job is
  unsuspended) when its ClusterQueue's quota ("pods", "cpu", "nvidia.com/gpu") holds every pod,
  otherwise held with Kueue's message; a missing LocalQueue holds it with "LocalQueue Q doesn't exist";
  quota is given back when a job finishes or goes, and held workloads are tried again.
- a pod of its own (no controller, as `pyctl train fetch` makes) runs the same way on the first node;
- for kubectl: discovery (/api, /apis), /openapi/v3's index with the fieldValidation parameter of each
  kind's PATCH (so kubectl 1.36 validates on the server), and meta.k8s.io/v1 Tables for `kubectl get`;
- Kubeflow Trainer v2.3.0's torch runtime: a TrainJob on a ClusterTrainingRuntime becomes the runtime's
  "node" Job with the TrainJob's patches and trainer, PET_* injected, pods `<job>-node-0-<i>` labelled
  jobset.sigs.k8s.io/jobset-name; its Complete/Failed conditions follow the Job's (no JobSet object).
  Kueue manages TrainJobs the same way (its trainer.kubeflow.org/trainjob integration: one pod set).
Use: `with ApiServerDouble(tmp, nodes=[NodeSpec(name, netns=..., address=...)], images={...},
claims={...}) as api:` then `api.write_kubeconfig(state_dir / "clusters" / NAME / "admin.conf")`; for a cluster
whose nodes join through kubeadm, `nodes=[]` and `namespaces={node name: its host's network namespace}`.
Where a lab's hosts must reach it: `host=` an address inside a lab's network namespace, `netns=` that namespace
(the listening socket is bound there), `port=6443`, `sans=` the names the hosts use (the control plane's address
and controlPlaneEndpoint), and `ca=(ca.crt, ca.key)` to serve with a CA made beforehand, the way kubeadm uses a
pre-existing /etc/kubernetes/pki/ca.crt and ca.key (https://kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-certs/#custom-certificates);
`pki["ca.key"]` is written either way.
Not modelled: kubeflow.org PyTorchJobs (not served: 404, as without the training operator), the JobSet
object, RBAC (every authenticated user is an admin), Services' endpoints, PVC provisioning, managed
fields of server-side apply, Table columns beyond nodes, pods and jobs.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import ipaddress
import itertools
import json
import os
import re
import secrets
import signal
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.doubles import fake_cluster, kubeadm_rest, openapi_strict
from tests.doubles.kubelet_standin import INDEX_KEY, KubeletStandin

VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0",
    "gitCommit": "test-double",
    "gitTreeState": "clean",
    "buildDate": "2026-04-22T00:00:00Z",
    "goVersion": "go1.25.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}
GPU = "nvidia.com/gpu"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
FOREGROUND = "foregroundDeletion"
BOOTSTRAP_TYPE = "bootstrap.kubernetes.io/token"
# What a kubelet reports about itself (every field NodeSystemInfo requires): the double's values for joined nodes.
NODE_INFO = {
    "kubeletVersion": "v1.36.0",
    "containerRuntimeVersion": "containerd://2.1.4",
    "osImage": "Debian GNU/Linux 13 (trixie)",
    "kernelVersion": "6.12.0",
    "operatingSystem": "linux",
    "architecture": "amd64",
    "machineID": "",
    "systemUUID": "",
    "bootID": "",
    "kubeProxyVersion": "",
}
BOOTSTRAP_TOKEN = re.compile(r"([a-z0-9]{6})\.([a-z0-9]{16})")
JWS_PREFIX = "jws-kubeconfig-"
# What kubeadm's RBAC lets the groups system:bootstrappers and system:anonymous do (kubeadm 1.36,
# app/phases/bootstraptoken/clusterinfo and node): (user kind, method, path pattern).
_BOOTSTRAP_RULES = (
    # system:public-info-viewer (bound to system:authenticated and system:unauthenticated)
    ("anonymous", "GET", re.compile(r"/version/?")),
    ("bootstrap", "GET", re.compile(r"/version/?")),
    ("anonymous", "GET", re.compile(r"/api/v1/namespaces/kube-public/configmaps/cluster-info")),
    ("bootstrap", "GET", re.compile(r"/api/v1/namespaces/kube-public/configmaps/cluster-info")),
    ("bootstrap", "GET", re.compile(r"/api/v1/nodes/[^/]+")),  # kubeadm:get-nodes
    ("bootstrap", "GET", re.compile(r"/api/v1/namespaces/kube-system/configmaps/(kubeadm-config|kubelet-config)")),
    # The kubelet's TLS bootstrap (a CSR, then its own client certificate) is not modelled: the joining
    # node's kubelet stand-in registers its Node with the token (see kubeadm_rest.register_node).
    ("bootstrap", "POST", re.compile(r"/api/v1/nodes")),
)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    subresources: tuple[str, ...] = ()
    short: tuple[str, ...] = ()
    served_versions: tuple[str, ...] = ()  # other versions the same objects are served as

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def custom(self) -> bool:
        return "." in self.group and not self.group.endswith(".k8s.io")

    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, subresources=("status",), short=("ns",)),
    Resource("", "v1", "nodes", "Node", False, subresources=("status",), short=("no",)),
    Resource("", "v1", "pods", "Pod", True, subresources=("status", "log"), short=("po",)),
    Resource("", "v1", "services", "Service", True, subresources=("status",), short=("svc",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, short=("cm",)),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, short=("sa",)),
    Resource(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        True,
        ("create", "delete", "get", "list", "patch", "update", "watch"),
        ("status",),
        ("pvc",),
    ),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False, subresources=("status",), short=("pv",)),
    Resource("", "v1", "events", "Event", True, short=("ev",)),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, subresources=("status",), short=("ds",)),
    Resource("apps", "v1", "deployments", "Deployment", True, subresources=("status",), short=("deploy",)),
    Resource("batch", "v1", "jobs", "Job", True, subresources=("status",)),
    Resource("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, short=("sc",)),
    Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", True, subresources=("status",)),
    Resource("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", "ClusterTrainingRuntime", False),
    Resource(
        "kueue.x-k8s.io",
        "v1beta2",
        "workloads",
        "Workload",
        True,
        subresources=("status",),
        served_versions=("v1beta1",),
    ),
    Resource(
        "kueue.x-k8s.io",
        "v1beta2",
        "localqueues",
        "LocalQueue",
        True,
        subresources=("status",),
        served_versions=("v1beta1",),
    ),
    Resource(
        "kueue.x-k8s.io",
        "v1beta2",
        "clusterqueues",
        "ClusterQueue",
        False,
        subresources=("status",),
        served_versions=("v1beta1",),
    ),
]
# The kinds kubernetes-validate's 1.36 schema knows; the others are custom resources.
_BUILTIN_GROUPS = ("", "apps", "batch", "node.k8s.io", "rbac.authorization.k8s.io", "storage.k8s.io")
_schema_cache: dict[str, Any] = {}
_schema_lock = threading.Lock()


def schema() -> dict[str, Any]:
    with _schema_lock:
        if "1.36" not in _schema_cache:
            _schema_cache["1.36"] = openapi_strict.compile_schema("1.36.0")
        return _schema_cache["1.36"]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A metav1.Status failure the handler sends as it is."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{resource.qualified()} "{name}" not found',
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


# --- selectors ----------------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_matcher(selector: str) -> Any:
    """A predicate over a labels dict, for a labelSelector (equality- and set-based)."""
    checks = []
    for term in _split_terms(selector or ""):
        match = re.match(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$", term)
        if match:
            key, op, value = match.groups()
            checks.append(lambda labels, k=key, o=op, v=value: (labels.get(k) == v) == (o != "!="))
            continue
        match = _SET_TERM.match(term)
        if not match:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        negate, key, op, values = match.groups()
        allowed = {v.strip() for v in (values or "").split(",")}
        if op == "in":
            checks.append(lambda labels, k=key, a=allowed: labels.get(k) in a)
        elif op == "notin":
            checks.append(lambda labels, k=key, a=allowed: labels.get(k) not in a)
        else:
            checks.append(lambda labels, k=key, n=bool(negate): (k in labels) != n)
    return lambda labels: all(check(labels or {}) for check in checks)


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def field_matcher(selector: str) -> Any:
    checks = []
    for term in _split_terms(selector or ""):
        match = re.match(r"^\s*([A-Za-z0-9.]+)\s*(==|!=|=)\s*(.*?)\s*$", term)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid selector: {term!r}")
        path, op, value = match.groups()
        checks.append(lambda obj, p=path, o=op, v=value: (str(_dig(obj, p) or "") == v) == (o != "!="))
    return lambda obj: all(check(obj) for check in checks)


# --- patches ------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


_MERGE_KEYS = {
    "containers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "conditions": "type",
}


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge patch for the built-in kinds, as far as pyctl needs: maps merge, lists of the
    fields Kubernetes gives a patchMergeKey merge by that key, other lists are replaced."""
    if isinstance(patch, list) and key in _MERGE_KEYS and isinstance(target, list):
        merge_key = _MERGE_KEYS[key]
        out = copy.deepcopy(target)
        for item in patch:
            found = next((o for o in out if isinstance(o, dict) and o.get(merge_key) == item.get(merge_key)), None)
            if found is None:
                out.append(copy.deepcopy(item))
            else:
                out[out.index(found)] = strategic_merge_patch(found, item)
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = strategic_merge_patch(out.get(name), value, name)
    return out


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    out = copy.deepcopy(target)
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = out
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "remove":
                parent.pop(index)
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "test" and parent[index] != op["value"]:
                raise ApiError(422, "Invalid", f"the test operation on {op['path']} failed")
        elif kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            parent.pop(last)
        elif kind == "test" and parent.get(last) != op["value"]:
            raise ApiError(422, "Invalid", f"the test operation on {op['path']} failed")
    return out


# --- TLS material -------------------------------------------------------------------------------------


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(
    folder: Path, host: str, ca: tuple[Path, Path] | None = None, sans: tuple[str, ...] = ()
) -> dict[str, Path]:
    """A CA (as kubeadm's "kubernetes" CA; with `ca`, that existing certificate and key, as kubeadm uses a
    pre-existing /etc/kubernetes/pki/ca.crt and ca.key), the API server's serving certificate for `host` and
    `sans` (IP addresses or DNS names), and the admin client certificate (CN=kubernetes-admin,
    O=kubeadm:cluster-admins), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=2)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    if ca is not None:
        ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
        ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
        return _leaves(folder, host, sans, ca_cert, ca_key)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kubernetes"))
        .issuer_name(name("kubernetes"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _leaves(folder, host, sans, ca_cert, ca_key)


def _leaves(folder: Path, host: str, sans: tuple[str, ...], ca: Any, ca_key: Any) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=2)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def leaf(cn: str, org: str | None, usage: Any, sans: list[Any] | None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    names: list[Any] = [
        x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost")
    ]
    for extra in dict.fromkeys((host, *sans)):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(extra)))
        except ValueError:
            names.append(x509.DNSName(extra))
    server, server_key = leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, names)
    client, client_key = leaf("kubernetes-admin", "kubeadm:cluster-admins", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    files = {
        "ca.crt": _pem(ca),
        "ca.key": _key_pem(ca_key),
        "apiserver.crt": _pem(server),
        "apiserver.key": _key_pem(server_key),
        "admin.crt": _pem(client),
        "admin.key": _key_pem(client_key),
    }
    paths = {}
    for file_name, data in files.items():
        path = folder / file_name
        path.write_bytes(data)
        path.chmod(0o600)
        paths[file_name] = path
    return paths


def client_certificate(pki: dict[str, Path], cn: str, org: str) -> tuple[bytes, bytes]:
    """A client certificate (PEM certificate, PEM key) for CN=`cn`, O=`org`, signed with the double's CA: what
    kubeadm's kubeconfig phase signs for admin.conf, super-admin.conf and kubelet.conf."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(pki["ca.crt"].read_bytes())
    ca_key = serialization.load_pem_private_key(pki["ca.key"].read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(cert), _key_pem(key)


def admin_kubeconfig(server: str, pki: dict[str, Path], token: str | None = None) -> str:
    """kubeadm's admin.conf shape (what roles/control_plane fetches): embedded CA and client cert."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    user: dict[str, str] = (
        {"token": token}
        if token
        else {"client-certificate-data": b64(pki["admin.crt"]), "client-key-data": b64(pki["admin.key"])}
    )
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kubernetes", "cluster": {"server": server, "certificate-authority-data": b64(pki["ca.crt"])}}
            ],
            "contexts": [
                {
                    "name": "kubernetes-admin@kubernetes",
                    "context": {"cluster": "kubernetes", "user": "kubernetes-admin"},
                }
            ],
            "current-context": "kubernetes-admin@kubernetes",
            "preferences": {},
            "users": [{"name": "kubernetes-admin", "user": user}],
        },
        sort_keys=False,
    )


def in_netns(netns: str, make: Any) -> Any:
    """`make()` run in a thread that has joined the network namespace /run/netns/`netns` (setns(2) changes the
    calling thread only): a socket it binds listens there, while its accept loop may run in any thread."""
    import ctypes

    result: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns into network namespace {netns}")
            finally:
                os.close(fd)
            result["value"] = make()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


# --- the configuration a test gives ------------------------------------------------------------------


@dataclass
class NodeSpec:
    """A node: a lab host (its network namespace and address run the pods scheduled on it)."""

    name: str
    netns: str = ""
    address: str = "10.244.0.1"
    gpus: int = 0
    control_plane: bool = False
    cpu: int = 2


@dataclass
class Image:
    """What an image name gives a pod: host folders mounted at the image's paths, and the image's PATH."""

    paths: dict[str, Path]
    path_env: str = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class _JobRun:
    job_key: tuple[str, str, str, str]
    nodes: list[NodeSpec] = field(default_factory=list)  # where its pods go: completion index i on nodes[i]
    standin: KubeletStandin | None = None
    thread: threading.Thread | None = None
    pods: dict[int, str] = field(default_factory=dict)  # completion index -> pod name
    ended_own: set[int] = field(default_factory=set)  # indexes whose process ended by itself
    stopped: bool = False
    blocked: bool = False  # a pod could not be scheduled, pulled or mounted: nothing runs
    standalone: bool = False  # a pod without a Job


class _Standin(KubeletStandin):
    """The kubelet stand-in with the API's pod names and node names, and a record of which pods ended
    by themselves (the others were stopped by the Job controller when the job ended)."""

    node_names: dict[int, str]
    run_state: _JobRun

    def field(self, pod: Any, path: str) -> str:
        if path == "spec.nodeName":
            return self.node_names[pod.index]
        return super().field(pod, path)

    def stop_all(self, grace: float = 10) -> None:
        for pod in self.pods:
            if pod.exit_code is not None:
                self.run_state.ended_own.add(pod.index)
        super().stop_all(grace)


# --- the server ---------------------------------------------------------------------------------------


class ApiServerDouble:
    """Start with `with ApiServerDouble(folder, nodes=[...]) as api:`; `api.kubeconfig` is the admin.conf."""

    def __init__(
        self,
        folder: Path,
        *,
        nodes: list[NodeSpec] | None = None,
        namespaces: dict[str, str] | None = None,
        images: dict[str, Image] | None = None,
        unpullable: tuple[str, ...] = (),
        claims: dict[str, Path] | None = None,
        local_queues: dict[str, str] | None = None,
        quotas: dict[str, dict[str, int]] | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        netns: str | None = None,
        ca: tuple[Path, Path] | None = None,
        sans: tuple[str, ...] = (),
        master_delay_s: float = 3.0,
        history: int = 10000,
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes if nodes is not None else [NodeSpec("node1")]  # [] for a cluster nodes join
        self.namespaces = dict(namespaces or {})  # joined node -> its host's network namespace (its pods run there)
        self.images = dict(images or {})
        self.unpullable = set(unpullable)
        self.claim_folders = dict(claims or {})  # claim name (namespace default) -> host folder; Bound
        self.local_queues = dict(local_queues or {})  # LocalQueue (namespace default) -> ClusterQueue
        self.quotas = {k: dict(v) for k, v in (quotas or {}).items()}  # ClusterQueue -> resource -> amount
        self.token = token
        self.host = host
        self.port = port
        self.netns = netns  # listen inside this network namespace (/run/netns/NAME), e.g. on a lab's gateway
        self.master_delay_s = master_delay_s
        self.history_limit = history
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (group, plural, ns, name)
        self.history: list[tuple[int, str, tuple[str, str], dict[str, Any]]] = []
        self.rv = 1000
        self.warnings: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for tests
        self.audit: list[tuple[str, str, str | None]] = []  # (method, path, user; None: anonymous), for tests
        self.runs: dict[str, _JobRun] = {}  # job uid -> its pods' run
        self.model_files: dict[str, str] = {}  # the cluster model's shared file store (what pods wrote to claims)
        self._names = itertools.count(1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.pki = make_pki(folder / "pki", host, ca, sans)
        self._server: ThreadingHTTPServer | None = None
        self.kubeconfig = folder / "admin.conf"
        with self.lock:
            self._seed()

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> ApiServerDouble:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def server(self) -> str:
        assert self._server is not None
        return f"https://{self.host}:{self._server.server_address[1]}"

    def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki["apiserver.crt"], self.pki["apiserver.key"])
        context.load_verify_locations(self.pki["ca.crt"])
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, a bearer token, or anonymous
        double = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, address = super().get_request()
                return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        class Handler(_Handler):
            api = double

        if self.netns:
            self._server = in_netns(self.netns, lambda: Server((self.host, self.port), Handler))
        else:
            self._server = Server((self.host, self.port), Handler)
        self.kubeconfig.write_text(admin_kubeconfig(self.server, self.pki, self.token), encoding="utf-8")
        self.kubeconfig.chmod(0o600)
        for target in (self._server.serve_forever, self._controller_loop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            self._stop_run(run)
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=30)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self.changed:
            self.changed.notify_all()

    def write_kubeconfig(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.kubeconfig.read_text(), encoding="utf-8")
        path.chmod(0o600)
        return path

    # -- the model: objects and their history ---------------------------------------------------------

    def _seed(self) -> None:
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._put(
                self.resource("", "namespaces"),
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace},
                    "status": {"phase": "Active"},
                },
            )
        for node in self.nodes:
            self._put(self.resource("", "nodes"), self._node_object(node))
        for claim in self.claim_folders:
            self.add_claim(claim)
        for queue, cluster_queue in self.local_queues.items():
            self._put(
                self.resource("kueue.x-k8s.io", "localqueues"),
                {
                    "apiVersion": "kueue.x-k8s.io/v1beta2",
                    "kind": "LocalQueue",
                    "metadata": {"name": queue, "namespace": "default"},
                    "spec": {"clusterQueue": cluster_queue},
                },
            )

    def add_claim(self, name: str, namespace: str = "default", bound: bool = True) -> None:
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
            "status": {"phase": "Bound" if bound else "Pending"},
        }
        if bound:
            claim["spec"]["volumeName"] = f"pv-{name}"
            claim["status"] |= {"accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"}}
        with self.lock:
            self._put(self.resource("", "persistentvolumeclaims"), claim)

    def _node_object(self, node: NodeSpec) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        if node.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = ""
        resources = {"cpu": str(node.cpu), "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        if node.gpus:
            resources[GPU] = str(node.gpus)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": labels},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": node.address},
                    {"type": "Hostname", "address": node.name},
                ],
                "allocatable": dict(resources),
                "capacity": dict(resources),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (TEST DOUBLE)",
                    },
                ],
                "nodeInfo": dict(NODE_INFO),
            },
        }

    def resource(self, group: str, plural: str, version: str | None = None) -> Resource:
        for res in RESOURCES:
            if (
                res.group == group
                and res.plural == plural
                and (version is None or version in (res.version, *res.served_versions))
            ):
                return res
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _key(self, res: Resource, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (res.group, res.plural, namespace if res.namespaced else "", name)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _record(self, kind: str, res: Resource, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, kind, (res.group, res.plural), copy.deepcopy(obj)))
        if len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit]
        self.changed.notify_all()

    def _put(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object: uid, resourceVersion, creationTimestamp; an ADDED event."""
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        meta.setdefault("generation", 1)
        self._bump(obj)
        self.objects[self._key(res, meta.get("namespace", ""), meta["name"])] = obj
        self._record("ADDED", res, obj)
        return obj

    def _update(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        self._bump(obj)
        meta = obj["metadata"]
        self.objects[self._key(res, meta.get("namespace", ""), meta["name"])] = obj
        self._record("MODIFIED", res, obj)
        return obj

    def _remove(self, res: Resource, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if self.objects.pop(self._key(res, meta.get("namespace", ""), meta["name"]), None) is None:
            return
        self._bump(obj)
        self._record("DELETED", res, obj)
        if res.plural == "pods":
            self._pod_gone(obj)
        if res.plural == "jobs":
            self._job_gone(obj)
        if res.plural in ("trainjobs", "workloads"):
            self._admit_pending()  # its quota is free again

    def get(self, group: str, plural: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        """An object as stored (a copy), or None: for tests."""
        with self.lock:
            res = self.resource(group, plural)
            obj = self.objects.get(self._key(res, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, group: str, plural: str, namespace: str | None = "default", selector: str = ""
    ) -> list[dict[str, Any]]:
        with self.lock:
            res = self.resource(group, plural)
            match = label_matcher(selector)
            return [
                copy.deepcopy(o)
                for (g, p, ns, _), o in sorted(self.objects.items())
                if (g, p) == (res.group, res.plural)
                and (namespace is None or not res.namespaced or ns == namespace)
                and match(o["metadata"].get("labels") or {})
            ]

    # -- events --------------------------------------------------------------------------------------

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str, component: str) -> None:
        """An Event about `obj` (core/v1, as the scheduler and kubelet write them); a repeat counts up."""
        meta = obj["metadata"]
        res = self.resource("", "events")
        for existing in self.objects.values():
            if (
                existing.get("kind") == "Event"
                and existing["involvedObject"].get("uid") == meta.get("uid")
                and (existing["reason"], existing["message"]) == (reason, message)
            ):
                existing["count"] = existing.get("count", 1) + 1
                existing["lastTimestamp"] = now()
                self._update(res, existing)
                return
        stamp = now()
        self._put(
            res,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{secrets.token_hex(8)}",
                    "namespace": meta.get("namespace", "default"),
                },
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": meta["name"],
                    "namespace": meta.get("namespace", "default"),
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": kind,
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": component},
                "reportingComponent": component,
            },
        )

    # -- validation ----------------------------------------------------------------------------------

    def validate(self, res: Resource, obj: dict[str, Any], mode: str, creating: bool) -> list[str]:
        """Refuse (ApiError) what the server refuses; drop unknown fields under Warn/Ignore and return
        the warnings."""
        name = (obj.get("metadata") or {}).get("name", "")
        expected = res.api_version
        if (
            obj.get("apiVersion") not in (expected, *(f"{res.group}/{v}" for v in res.served_versions))
            or obj.get("kind") != res.kind
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version ({expected})"
                if obj.get("apiVersion") != expected
                else f"the kind in the data ({obj.get('kind')}) does not match the expected kind ({res.kind})",
            )
        if not name or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            cause = "Required value: name or generateName is required" if not name else "Invalid value"
            raise ApiError(
                422, "Invalid", f'{res.kind}.{res.group or "core"} "{name}" is invalid: metadata.name: {cause}'
            )
        unknown: list[str] = []
        if res.group in _BUILTIN_GROUPS:
            walk = openapi_strict._Walk(schema()["defs"])
            definition = schema()["kinds"].get(f"{res.api_version}/{res.kind}")
            walk.walk(obj, {"$ref": f"#/$defs/{definition}"}, "")
            version = res.version
            if walk.decode:
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{res.kind} in version "{version}" cannot be handled as a {res.kind}: {walk.decode[0]}',
                )
            unknown = [u.split('"')[1] for u in walk.unknown]
            if unknown and mode == "Strict":
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{res.kind} in version "{version}" cannot be handled as a {res.kind}: strict decoding error: {fields}',
                )
            if walk.invalid:
                causes = [
                    {
                        "field": i.split(":", 1)[0],
                        "message": i.split(":", 1)[1].strip(),
                        "reason": "FieldValueRequired" if "Required" in i else "FieldValueNotSupported",
                    }
                    for i in walk.invalid
                ]
                text = walk.invalid[0] if len(walk.invalid) == 1 else "[" + ", ".join(walk.invalid) + "]"
                qualified = f"{res.kind}.{res.group}" if res.group else res.kind
                raise ApiError(
                    422,
                    "Invalid",
                    f'{qualified} "{name}" is invalid: {text}',
                    {"name": name, "group": res.group, "kind": res.kind, "causes": causes},
                )
        elif res.group == "trainer.kubeflow.org":
            unknown = self._validate_trainer(res, obj, mode)
        for path in unknown:
            _drop(obj, path)
        return [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []

    def _validate_trainer(self, res: Resource, obj: dict[str, Any], mode: str) -> list[str]:
        import jsonschema

        from tests.train import crd_schema

        try:
            crd_schema.validate(copy.deepcopy(obj), res.plural)
        except (AssertionError, jsonschema.ValidationError) as exc:
            text = str(exc).splitlines()[0]
            if "Additional properties" in text and mode != "Strict":
                return []  # pruned, as the server prunes unknown fields of a structural schema
            if "Additional properties" in text:
                raise ApiError(400, "BadRequest", f"strict decoding error: {text}") from exc
            raise ApiError(
                422, "Invalid", f'{res.kind}.{res.group} "{obj["metadata"]["name"]}" is invalid: {text}'
            ) from exc
        if res.plural == "trainjobs":
            runtime = obj["spec"]["runtimeRef"]["name"]
            if not any(
                o.get("kind") == "ClusterTrainingRuntime" and o["metadata"]["name"] == runtime
                for o in self.objects.values()
            ):
                raise ApiError(
                    422,
                    "Invalid",
                    f'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: spec.runtimeRef: Invalid value: "{runtime}": ClusterTrainingRuntime.trainer.kubeflow.org "{runtime}" not found',
                )
        return []

    # -- verbs ---------------------------------------------------------------------------------------

    def create(
        self, res: Resource, namespace: str, obj: dict[str, Any], query: dict[str, str]
    ) -> tuple[dict[str, Any], list[str]]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if res.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            if self._key(self.resource("", "namespaces"), "", namespace) not in self.objects:
                raise ApiError(
                    404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
                )
        warnings = self.validate(res, obj, query.get("fieldValidation", "Warn"), creating=True)
        key = self._key(res, namespace, meta["name"])
        if key in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res.qualified()} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": res.group, "kind": res.plural},
            )
        for dropped in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(dropped, None)
        if query.get("dryRun") == "All":
            return obj, warnings
        if res.plural == "secrets" and "stringData" in obj:  # write-only: merged into data, base64-encoded
            extra = {k: base64.b64encode(str(v).encode()).decode() for k, v in (obj.pop("stringData") or {}).items()}
            obj["data"] = {**(obj.get("data") or {}), **extra}
        if res.plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Pending"}  # no provisioner here
        if res.plural == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self._put(res, obj)
        self._after_write(res, obj, None)
        return obj, warnings

    def read(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get(self._key(res, namespace, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def replace(
        self,
        res: Resource,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        query: dict[str, str],
        subresource: str = "",
    ) -> tuple[dict[str, Any], list[str]]:
        old = self.read(res, namespace, name)
        sent = (obj.get("metadata") or {}).get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.qualified()} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = obj.get("status")
        else:
            new = obj
            new.setdefault("metadata", {})
            new["metadata"]["namespace"] = old["metadata"].get("namespace") if res.namespaced else None
            if not res.namespaced:
                new["metadata"].pop("namespace", None)
            for kept in ("uid", "creationTimestamp", "deletionTimestamp", "finalizers"):
                if kept in old["metadata"] and kept not in new["metadata"]:
                    new["metadata"][kept] = old["metadata"][kept]
            new["metadata"]["uid"] = old["metadata"]["uid"]
            if "status" in old and res.subresources and "status" in res.subresources:
                new["status"] = old["status"]  # the main resource ignores status changes
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        warnings = self.validate(res, new, query.get("fieldValidation", "Warn"), creating=False)
        self._update(res, new)
        self._after_write(res, new, old)
        return new, warnings

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: bytes,
        content_type: str,
        query: dict[str, str],
        subresource: str = "",
    ) -> tuple[dict[str, Any], list[str]]:
        kind = content_type.split(";", maxsplit=1)[0].strip()
        key = self._key(res, namespace, name)
        old = self.objects.get(key)
        if kind == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml requires fieldManager to be set")
            applied = yaml.safe_load(body)
            if old is None:
                return self.create(
                    res, namespace, applied, {**query, "fieldValidation": query.get("fieldValidation", "Strict")}
                )
            new = merge_patch(old, applied)
            query = {**query, "fieldValidation": query.get("fieldValidation", "Strict")}  # SSA defaults to Strict
        else:
            if old is None:
                raise not_found(res, name)
            patch = json.loads(body or b"null")
            if kind == "application/json-patch+json":
                new = json_patch(old, patch)
            elif kind == "application/merge-patch+json":
                new = merge_patch(old, patch)
            elif kind == "application/strategic-merge-patch+json":
                if res.custom:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    )
                new = strategic_merge_patch(old, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
                )
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status
        elif "status" in res.subresources and old is not None:
            new["status"] = copy.deepcopy(old.get("status"))
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.replace(res, namespace, name, new, query, subresource)

    def delete(self, res: Resource, namespace: str, name: str, options: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        obj = self.read(res, namespace, name)
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:
            policy = "Orphan" if res.plural == "jobs" else "Background"  # batch/v1 Job's default: orphan
        if policy not in ("Foreground", "Background", "Orphan"):
            raise ApiError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}"',
            )
        uid = obj["metadata"]["uid"]
        if policy == "Orphan":
            for dependent in self._dependents(uid):
                dependent["metadata"]["ownerReferences"] = [
                    r for r in dependent["metadata"]["ownerReferences"] if r.get("uid") != uid
                ]
                self._update(self._res_of(dependent), dependent)
        if res.plural == "pods" and self._pod_running(obj):
            self._stop_pod(obj)
        if res.plural == "jobs":
            run = self.runs.get(uid)
            if run is not None:
                threading.Thread(target=self._stop_run, args=(run,), daemon=True).start()
        if policy == "Foreground" and self._dependents(uid):
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["finalizers"] = sorted({*obj["metadata"].get("finalizers", []), FOREGROUND})
            self._update(res, obj)
            self._collect(uid)
            return 200, obj
        self._remove(res, obj)
        self._collect(uid)
        if res.plural == "pods":
            return 200, obj  # pods return the deleted object
        return 200, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": res.group, "kind": res.plural, "uid": uid},
        }

    def _res_of(self, obj: dict[str, Any]) -> Resource:
        group = obj["apiVersion"].rpartition("/")[0]
        return next(r for r in RESOURCES if r.group == group and r.kind == obj["kind"])

    def _dependents(self, uid: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects.values()
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _collect(self, uid: str) -> None:
        """The garbage collector: delete the dependents of a deleted (or foreground-deleting) owner."""
        for dependent in self._dependents(uid):
            if dependent["metadata"].get("deletionTimestamp"):
                continue
            res = self._res_of(dependent)
            if res.plural == "pods" and self._pod_running(dependent):
                dependent["metadata"]["deletionTimestamp"] = now()
                self._update(res, dependent)
                self._stop_pod(dependent)  # removed once its process is gone (the controller loop)
            else:
                self._remove(res, dependent)
                self._collect(dependent["metadata"]["uid"])

    def _finish_foreground(self) -> None:
        for obj in list(self.objects.values()):
            meta = obj["metadata"]
            if (
                meta.get("deletionTimestamp")
                and FOREGROUND in (meta.get("finalizers") or [])
                and not self._dependents(meta["uid"])
            ):
                self._remove(self._res_of(obj), obj)

    # -- Kueue ---------------------------------------------------------------------------------------

    def set_quota(self, cluster_queue: str, quota: dict[str, int]) -> None:
        """Change a ClusterQueue's quota (as an admin would); held workloads are tried again."""
        with self.lock:
            self.quotas[cluster_queue] = dict(quota)
            self._admit_pending()

    def _pod_requests(self, template: dict[str, Any]) -> dict[str, int]:
        total = {"pods": 1, "cpu": 0, GPU: 0}
        for container in template.get("spec", {}).get("containers", []):
            resources = container.get("resources") or {}
            cpu = (resources.get("requests") or {}).get("cpu") or (resources.get("limits") or {}).get("cpu")
            if cpu:
                total["cpu"] += int(float(str(cpu).rstrip("m")) / (1000 if str(cpu).endswith("m") else 1) + 0.999)
            total[GPU] += int((resources.get("limits") or {}).get(GPU, 0))
        return total

    def _make_workload(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        queue = meta["labels"][QUEUE_LABEL]
        if job["kind"] == "TrainJob":  # Kueue's trainer.kubeflow.org/trainjob integration: one pod set
            trainer = job["spec"].get("trainer") or {}
            count = int(trainer.get("numNodes") or 1)
            resources = trainer.get("resourcesPerNode") or {}
            template = {"spec": {"containers": [{"name": "node", "resources": resources}]}}
        else:
            count = int(job["spec"].get("parallelism") or 1)
            template = job["spec"]["template"]
        workload = {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": f"{job['kind'].lower()}-{meta['name']}-{secrets.token_hex(3)[:5]}",
                "namespace": meta["namespace"],
                "labels": {JOB_UID_LABEL: meta["uid"]},
                "ownerReferences": [
                    {
                        "apiVersion": job["apiVersion"],
                        "kind": job["kind"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"queueName": queue, "podSets": [{"name": "main", "count": count, "template": template}]},
            "status": {"conditions": []},
        }
        self._put(self.resource("kueue.x-k8s.io", "workloads"), workload)
        self._admit_pending()

    def _used(self, cluster_queue: str) -> dict[str, int]:
        used: dict[str, int] = {}
        for workload in self.objects.values():
            if workload.get("kind") != "Workload":
                continue
            status = workload.get("status") or {}
            admitted = any(c["type"] == "Admitted" and c["status"] == "True" for c in status.get("conditions", []))
            finished = any(c["type"] == "Finished" and c["status"] == "True" for c in status.get("conditions", []))
            if admitted and not finished and (status.get("admission") or {}).get("clusterQueue") == cluster_queue:
                for name, amount in self._workload_needs(workload).items():
                    used[name] = used.get(name, 0) + amount
        return used

    def _workload_needs(self, workload: dict[str, Any]) -> dict[str, int]:
        pod_set = workload["spec"]["podSets"][0]
        return {k: v * int(pod_set["count"]) for k, v in self._pod_requests(pod_set["template"]).items() if v}

    def _admit_pending(self) -> None:
        res = self.resource("kueue.x-k8s.io", "workloads")
        for workload in sorted(
            (o for o in self.objects.values() if o.get("kind") == "Workload"),
            key=lambda o: o["metadata"]["creationTimestamp"] + o["metadata"]["name"],
        ):
            status = workload.setdefault("status", {})
            if any(
                c["type"] in ("Admitted", "Finished") and c["status"] == "True" for c in status.get("conditions", [])
            ):
                continue
            queue = workload["spec"]["queueName"]
            cluster_queue = self.local_queues.get(queue) if workload["metadata"]["namespace"] == "default" else None
            if cluster_queue is None:
                held = f"LocalQueue {queue} doesn't exist"
            else:
                quota, used, needs = (
                    self.quotas.get(cluster_queue, {}),
                    self._used(cluster_queue),
                    self._workload_needs(workload),
                )
                short = [
                    (name, amount + used.get(name, 0) - quota.get(name, 0))
                    for name, amount in needs.items()
                    if amount + used.get(name, 0) > quota.get(name, 0)
                ]
                held = (
                    f"couldn't assign flavors to pod set main: insufficient unused quota for {short[0][0]} in flavor default-flavor, {short[0][1]} more needed"
                    if short
                    else ""
                )
            stamp = now()
            if held:
                conditions = [
                    {
                        "type": "QuotaReserved",
                        "status": "False",
                        "reason": "Pending",
                        "message": held,
                        "lastTransitionTime": stamp,
                    }
                ]
                if status.get("conditions") != conditions and [
                    c.get("message") for c in status.get("conditions", [])
                ] != [held]:
                    status["conditions"] = conditions
                    self._update(res, workload)
                continue
            status["admission"] = {
                "clusterQueue": cluster_queue,
                "podSetAssignments": [
                    {
                        "name": "main",
                        "flavors": {k: "default-flavor" for k in self._workload_needs(workload)},
                        "count": workload["spec"]["podSets"][0]["count"],
                    }
                ],
            }
            status["conditions"] = [
                {
                    "type": "QuotaReserved",
                    "status": "True",
                    "reason": "QuotaReserved",
                    "message": f"Quota reserved in ClusterQueue {cluster_queue}",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Admitted",
                    "status": "True",
                    "reason": "Admitted",
                    "message": "The workload is admitted",
                    "lastTransitionTime": stamp,
                },
            ]
            self._update(res, workload)
            owner = workload["metadata"]["ownerReferences"][0]
            trainjob = owner["kind"] == "TrainJob"
            owner_res = (
                self.resource("trainer.kubeflow.org", "trainjobs") if trainjob else self.resource("batch", "jobs")
            )
            job = self.objects.get(self._key(owner_res, workload["metadata"]["namespace"], owner["name"]))
            if job is not None and job["spec"].get("suspend"):
                old = copy.deepcopy(job)
                job["spec"]["suspend"] = False
                self._update(owner_res, job)
                self._after_write(owner_res, job, old)

    def _finish_workload(self, job: dict[str, Any], succeeded: bool) -> None:
        for workload in self._dependents(job["metadata"]["uid"]):
            if workload.get("kind") == "Workload":
                workload["status"].setdefault("conditions", []).append(
                    {
                        "type": "Finished",
                        "status": "True",
                        "reason": "Succeeded" if succeeded else "Failed",
                        "message": "Job finished",
                        "lastTransitionTime": now(),
                    }
                )
                self._update(self.resource("kueue.x-k8s.io", "workloads"), workload)
        self._admit_pending()

    # -- the Job controller and the pods ---------------------------------------------------------------

    def _after_write(self, res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        standalone = res.plural == "pods" and old is None and not obj["metadata"].get("ownerReferences")
        if standalone and not self._model_runs(obj):  # the model's verify pods, else the kubelet stand-in
            self._start_pod(obj)
        if res.plural == "jobs":
            labels = obj["metadata"].get("labels") or {}
            if old is None and QUEUE_LABEL in labels:
                obj["spec"]["suspend"] = True  # Kueue's webhook suspends a job it manages
                self._job_status(obj)
                self._make_workload(obj)
                return
            if obj["spec"].get("suspend"):
                self._job_status(obj)
                return
            if obj["metadata"]["uid"] not in self.runs and not obj["metadata"].get("deletionTimestamp"):
                self._start_job(obj)
        elif res.plural == "trainjobs" and old is None and QUEUE_LABEL in (obj["metadata"].get("labels") or {}):
            obj["spec"]["suspend"] = True  # Kueue's webhook suspends a TrainJob it manages
            obj["status"] = {
                "conditions": [
                    {
                        "type": "Suspended",
                        "status": "True",
                        "reason": "Suspended",
                        "message": "TrainJob is suspended",
                        "lastTransitionTime": now(),
                    }
                ]
            }
            self._update(res, obj)
            self._make_workload(obj)
        elif res.plural == "trainjobs" and (
            old is None or bool(old["spec"].get("suspend")) != bool(obj["spec"].get("suspend"))
        ):
            suspended = bool(obj["spec"].get("suspend"))
            condition = {
                "type": "Suspended",
                "status": "True" if suspended else "False",
                "reason": "Suspended" if suspended else "Resumed",
                "message": "TrainJob is suspended" if suspended else "TrainJob is resumed",
                "lastTransitionTime": now(),
            }
            obj["status"] = {"conditions": [condition]}
            self._update(res, obj)
            if not suspended:
                self._start_trainjob(obj)

    def _start_trainjob(self, trainjob: dict[str, Any]) -> None:
        """Kubeflow Trainer v2.3.0's torch plugin, as far as pyctl relies on it: the runtime's replicated
        Job "node" with the TrainJob's runtimePatches and trainer (image, command, args, env,
        resourcesPerNode, numNodes), the PET_* variables injected, pods `<job>-node-0-<i>` under the
        headless Service `<job>` and labelled jobset.sigs.k8s.io/jobset-name. The JobSet between the
        TrainJob and its Job is left out: the Job is owned by the TrainJob directly."""
        meta, spec = trainjob["metadata"], trainjob["spec"]
        name, namespace = meta["name"], meta["namespace"]
        runtime = self.objects[("trainer.kubeflow.org", "clustertrainingruntimes", "", spec["runtimeRef"]["name"])]
        replicated = next(r for r in runtime["spec"]["template"]["spec"]["replicatedJobs"] if r["name"] == "node")
        template = copy.deepcopy(replicated["template"])
        for patch in spec.get("runtimePatches") or []:
            for job_patch in (
                ((patch.get("trainingRuntimeSpec") or {}).get("template") or {})
                .get("spec", {})
                .get("replicatedJobs", [])
            ):
                if job_patch.get("name") == "node":
                    template = strategic_merge_patch(template, job_patch.get("template") or {})
        trainer = spec.get("trainer") or {}
        nodes = int(trainer.get("numNodes") or runtime["spec"].get("mlPolicy", {}).get("numNodes") or 1)
        pod = template["spec"]["template"]
        pod_spec = pod["spec"]
        container = next(c for c in pod_spec["containers"] if c["name"] == "node")
        for field_name in ("image", "command", "args"):
            if trainer.get(field_name):
                container[field_name] = trainer[field_name]
        if trainer.get("resourcesPerNode"):
            container["resources"] = trainer["resourcesPerNode"]
        index = {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}
        container["env"] = [
            *(trainer.get("env") or []),
            {"name": "PET_NNODES", "value": str(nodes)},
            {"name": "PET_NPROC_PER_NODE", "value": str(trainer.get("numProcPerNode") or 1)},
            {"name": "PET_NODE_RANK", "valueFrom": index},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-node-0-0.{name}"},
            {"name": "PET_MASTER_PORT", "value": "29500"},
        ]
        pod_spec["subdomain"] = name
        pod.setdefault("metadata", {}).setdefault("labels", {})["jobset.sigs.k8s.io/jobset-name"] = name
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-node-0",
                "namespace": namespace,
                "labels": {
                    "jobset.sigs.k8s.io/jobset-name": name,
                    **(template.get("metadata", {}).get("labels") or {}),
                },
                "ownerReferences": [
                    {
                        "apiVersion": trainjob["apiVersion"],
                        "kind": "TrainJob",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                **template["spec"],
                "completionMode": "Indexed",
                "completions": nodes,
                "parallelism": nodes,
                "template": pod,
            },
        }
        jobs = self.resource("batch", "jobs")
        self._put(jobs, job)
        self._after_write(jobs, job, None)

    def _trainjob_follows(self, job: dict[str, Any], conditions: list[dict[str, Any]]) -> None:
        """The TrainJob's Complete or Failed condition, copied from its (JobSet's) Job."""
        owner = next((r for r in job["metadata"].get("ownerReferences") or [] if r.get("kind") == "TrainJob"), None)
        if owner is None:
            return
        trainjob = self.objects.get(("trainer.kubeflow.org", "trainjobs", job["metadata"]["namespace"], owner["name"]))
        if trainjob is None:
            return
        final = [
            {**c, "type": "Complete" if c["type"] == "Complete" else "Failed"}
            for c in conditions
            if c["type"] in ("Complete", "Failed")
        ]
        trainjob.setdefault("status", {})["conditions"] = [*trainjob["status"].get("conditions", []), *final]
        self._update(self.resource("trainer.kubeflow.org", "trainjobs"), trainjob)
        self._finish_workload(trainjob, any(c["type"] == "Complete" for c in final))

    def _job_status(self, job: dict[str, Any], **changes: Any) -> None:
        status = job.setdefault("status", {})
        if job["spec"].get("suspend") and not any(c["type"] == "Suspended" for c in status.get("conditions", [])):
            status["conditions"] = [
                *status.get("conditions", []),
                {
                    "type": "Suspended",
                    "status": "True",
                    "reason": "JobSuspended",
                    "message": "Job suspended",
                    "lastProbeTime": now(),
                    "lastTransitionTime": now(),
                },
            ]
        if not job["spec"].get("suspend"):
            for condition in status.get("conditions", []):
                if condition["type"] == "Suspended" and condition["status"] == "True":
                    condition.update(
                        status="False", reason="JobResumed", message="Job resumed", lastTransitionTime=now()
                    )
        status.update(changes)
        self._update(self.resource("batch", "jobs"), job)

    def _start_job(self, job: dict[str, Any]) -> None:
        meta, spec = job["metadata"], job["spec"]
        assert spec.get("completionMode") == "Indexed", "the double runs Indexed Jobs only"
        run = _JobRun(job_key=("batch", "jobs", meta["namespace"], meta["name"]))
        run.nodes = self._placement(spec["template"]["spec"])
        self.runs[meta["uid"]] = run
        completions = int(spec["completions"])
        template = spec["template"]
        pod_res = self.resource("", "pods")
        for index in range(completions):
            name = f"{meta['name']}-{index}-{secrets.token_hex(3)[:5]}"
            labels = {
                **(template.get("metadata", {}).get("labels") or {}),
                "job-name": meta["name"],
                "batch.kubernetes.io/job-name": meta["name"],
                "controller-uid": meta["uid"],
                "batch.kubernetes.io/controller-uid": meta["uid"],
                INDEX_KEY: str(index),
            }
            pod_spec = copy.deepcopy(template["spec"])
            pod_spec["hostname"] = f"{meta['name']}-{index}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": meta["namespace"],
                    "labels": labels,
                    "annotations": {INDEX_KEY: str(index)},
                    "finalizers": ["batch.kubernetes.io/job-tracking"],
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": pod_spec,
                "status": {"phase": "Pending", "qosClass": "BestEffort"},
            }
            self._put(pod_res, pod)
            run.pods[index] = name
            self.event(job, "Normal", "SuccessfulCreate", f"Created pod: {name}", "job-controller")
        self._job_status(job, active=completions, startTime=now(), ready=0, terminating=0)
        blocked = [self._schedule(job, run, index) for index in range(completions)]
        if any(blocked):
            run.blocked = True
            return
        self._run_pods(job, run)

    def _start_pod(self, pod: dict[str, Any]) -> None:
        """A pod of its own (no controller: pyctl train fetch's): scheduled, pulled and run like a Job's
        pod, on the first node, through the kubelet stand-in as a one-index job."""
        meta = pod["metadata"]
        run = _JobRun(job_key=("", "pods", meta["namespace"], meta["name"]), standalone=True)
        run.nodes = self._placement(pod["spec"])
        run.pods[0] = meta["name"]
        self.runs[meta["uid"]] = run
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "spec": {"completionMode": "Indexed", "completions": 1, "template": {"spec": pod["spec"]}},
        }
        if self._schedule(job, run, 0):
            run.blocked = True
            return
        self._run_pods(job, run)

    def _pod(self, run: _JobRun, index: int) -> dict[str, Any] | None:
        return self.objects.get(("", "pods", run.job_key[2], run.pods.get(index, "")))

    def _placement(self, spec: dict[str, Any]) -> list[NodeSpec]:
        """The nodes a pod of `spec` goes to, completion index i to the i-th: the NodeSpecs given; in a cluster nodes
        joined (nodes=[]), the scheduler's feasible nodes by name: the Nodes that are Ready, whose NoSchedule and
        NoExecute taints the pod tolerates and whose allocatable nvidia.com/gpu covers its limit, each run in the
        network namespace `namespaces` names for it (its host's, on this machine)."""
        if self.nodes:
            return self.nodes
        wanted = int(((spec["containers"][0].get("resources") or {}).get("limits") or {}).get(GPU, 0))
        placed = []
        for (group, plural, _, name), node in sorted(self.objects.items()):
            if (group, plural) != ("", "nodes"):
                continue
            status = node.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
            taints = (node.get("spec") or {}).get("taints") or []
            gpus = int((status.get("allocatable") or {}).get(GPU, 0))
            if not ready or not fake_cluster.Cluster.tolerates(spec, taints) or gpus < wanted:
                continue
            address = next((a["address"] for a in status.get("addresses") or [] if a["type"] == "InternalIP"), "")
            placed.append(NodeSpec(name, netns=self.namespaces.get(name, ""), address=address, gpus=gpus))
        return placed

    def _node_count(self) -> int:
        return len(self.nodes) or sum(1 for key in self.objects if key[:2] == ("", "nodes"))

    def _schedule(self, job: dict[str, Any], run: _JobRun, index: int) -> bool:
        """The scheduler's and kubelet's refusals for one pod; True when the pod cannot run."""
        pod = self._pod(run, index)
        assert pod is not None
        spec = pod["spec"]
        namespace = pod["metadata"]["namespace"]
        count = self._node_count()
        preempt = f"preemption: 0/{count} nodes are available: {count} Preemption is not helpful for scheduling."
        unschedulable = ""
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            found = self.objects.get(("", "persistentvolumeclaims", namespace, claim))
            if found is None:
                unschedulable = f'0/{count} nodes are available: persistentvolumeclaim "{claim}" not found. {preempt}'
            elif (found.get("status") or {}).get("phase") != "Bound":
                unschedulable = (
                    f"0/{count} nodes are available: pod has unbound immediate PersistentVolumeClaims. {preempt}"
                )
        container = spec["containers"][0]
        wanted = int(((container.get("resources") or {}).get("limits") or {}).get(GPU, 0))
        if not unschedulable and wanted and all(n.gpus < wanted for n in run.nodes):
            unschedulable = f"0/{count} nodes are available: {count} Insufficient {GPU}. preemption: 0/{count} nodes are available: {count} No preemption victims found for incoming pod."
        if not unschedulable and index >= len(run.nodes):
            unschedulable = f"0/{count} nodes are available: TEST DOUBLE: one lab host per completion index. {preempt}"
        if unschedulable:
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                    "lastTransitionTime": now(),
                }
            ]
            self._update(self.resource("", "pods"), pod)
            self.event(pod, "Warning", "FailedScheduling", unschedulable, "default-scheduler")
            return True
        node = run.nodes[index]
        spec["nodeName"] = node.name
        pod["status"].update(
            hostIP=node.address,
            conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}],
        )
        self._update(self.resource("", "pods"), pod)
        self.event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {namespace}/{pod['metadata']['name']} to {node.name}",
            "default-scheduler",
        )
        for volume in spec.get("volumes") or []:
            name = (volume.get("configMap") or {}).get("name")
            if name and ("", "configmaps", namespace, name) not in self.objects:
                message = f'MountVolume.SetUp failed for volume "{volume["name"]}" : configmap "{name}" not found'
                self._waiting(pod, "ContainerCreating", "")
                self.event(pod, "Warning", "FailedMount", message, "kubelet")
                return True
        image = container["image"]
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"', "kubelet")
        if image in self.unpullable or image not in self.images:
            why = (
                f'failed to pull and unpack image "{_docker_ref(image)}": failed to resolve reference '
                f'"{_docker_ref(image)}": {_docker_ref(image)}: not found'
            )
            message = f'Failed to pull image "{image}": rpc error: code = NotFound desc = {why}'
            self._waiting(pod, "ErrImagePull", message)
            self.event(pod, "Warning", "Failed", message, "kubelet")
            self.event(pod, "Warning", "Failed", "Error: ErrImagePull", "kubelet")
            self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{image}"')
            self.event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet")
            self.event(pod, "Warning", "Failed", "Error: ImagePullBackOff", "kubelet")
            return True
        self.event(pod, "Normal", "Pulled", f'Container image "{image}" already present on machine', "kubelet")
        if not node.netns:
            message = (
                f"TEST DOUBLE: node {node.name} has no network namespace to run pods in (give NodeSpec.netns, or"
                " namespaces= for a joined node)"
            )
            self._waiting(pod, "ContainerCreating", "")
            self.event(pod, "Warning", "FailedCreatePodSandBox", message, "kubelet")
            return True
        return False

    def _waiting(self, pod: dict[str, Any], reason: str, message: str) -> None:
        container = pod["spec"]["containers"][0]
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": state,
            }
        ]
        self._update(self.resource("", "pods"), pod)

    def _run_pods(self, job: dict[str, Any], run: _JobRun) -> None:
        meta = job["metadata"]
        namespace = meta["namespace"]
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        image = self.images[container["image"]]
        claims = {}
        for volume in spec.get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                if claim not in self.claim_folders:
                    self.claim_folders[claim] = self.folder / "claims" / claim
                    self.claim_folders[claim].mkdir(parents=True, exist_ok=True)
                claims[claim] = self.claim_folders[claim]
        configmaps = {
            (v.get("configMap") or {})["name"]: dict(
                self.objects[("", "configmaps", namespace, v["configMap"]["name"])].get("data") or {}
            )
            for v in spec.get("volumes") or []
            if v.get("configMap")
        }
        standin = _Standin(
            job,
            [(n.netns, n.address) for n in run.nodes],
            image_paths=image.paths,
            image_path_env=image.path_env,
            claims=claims,
            configmaps=configmaps,
            workdir=self.folder / "pods" / meta["name"],
            master_delay_s=self.master_delay_s,
        )
        standin.node_names = {i: run.nodes[i].name for i in range(len(standin.pods))}
        standin.run_state = run
        for pod in standin.pods:
            pod.name = run.pods[pod.index]
        run.standin = standin
        run.thread = threading.Thread(target=standin.run, kwargs={"timeout": 3600}, daemon=True)
        run.thread.start()

    def _stop_run(self, run: _JobRun) -> None:
        run.stopped = True
        if run.standin is not None:
            run.standin.stop_all(grace=10)

    def _pod_running(self, pod: dict[str, Any]) -> bool:
        return pod["status"].get("phase") in ("Pending", "Running") and self._process_of(pod) is not None

    def _process_of(self, pod: dict[str, Any]) -> Any:
        run = self._run_of(pod)
        if run is None or run.standin is None:
            return None
        index = int((pod["metadata"].get("annotations") or {}).get(INDEX_KEY, "0"))
        standin_pod = run.standin.pods[index]
        return standin_pod if standin_pod.process is not None and standin_pod.process.poll() is None else None

    def _run_of(self, pod: dict[str, Any]) -> _JobRun | None:
        owner = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"), None)
        return self.runs.get(owner["uid"] if owner else pod["metadata"]["uid"])

    def _stop_pod(self, pod: dict[str, Any]) -> None:
        standin_pod = self._process_of(pod)
        if standin_pod is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(standin_pod.process.pid, signal.SIGTERM)

    def _pod_gone(self, pod: dict[str, Any]) -> None:
        run = self._run_of(pod)
        if run is not None and self._process_of(pod) is not None:
            self._stop_pod(pod)

    def _job_gone(self, job: dict[str, Any]) -> None:
        run = self.runs.get(job["metadata"]["uid"])
        if run is not None and not run.stopped:
            threading.Thread(target=self._stop_run, args=(run,), daemon=True).start()
        for workload in self._dependents(job["metadata"]["uid"]):
            if workload.get("kind") == "Workload":
                self._remove(self._res_of(workload), workload)
        self._admit_pending()

    # -- bootstrap tokens: the authenticator, kube-controller-manager's BootstrapSigner and TokenCleaner ---------

    def _token_fields(self, secret: dict[str, Any]) -> dict[str, str]:
        try:
            return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        except (ValueError, UnicodeDecodeError):
            return {}

    def _valid_tokens(self, usage: str) -> dict[str, str]:
        """token id -> secret of the well-formed, unexpired bootstrap token Secrets allowing `usage`
        (k8s.io/cluster-bootstrap/token/api: type bootstrap.kubernetes.io/token in kube-system, named
        bootstrap-token-<id>, usage-bootstrap-<usage>: "true", expiration in RFC 3339 not passed)."""
        found = {}
        for (group, plural, namespace, name), secret in self.objects.items():
            if (group, plural, namespace) != ("", "secrets", "kube-system") or secret.get("type") != BOOTSTRAP_TYPE:
                continue
            fields = self._token_fields(secret)
            token_id, token_secret = fields.get("token-id", ""), fields.get("token-secret", "")
            if name != f"bootstrap-token-{token_id}" or not BOOTSTRAP_TOKEN.fullmatch(f"{token_id}.{token_secret}"):
                continue
            if fields.get(f"usage-bootstrap-{usage}") != "true" or _expired(fields.get("expiration")):
                continue
            found[token_id] = token_secret
        return found

    def bootstrap_user(self, bearer: str) -> str | None:
        """The bootstrap token authenticator: system:bootstrap:<id> for a valid token, else None."""
        match = BOOTSTRAP_TOKEN.fullmatch(bearer)
        if not match:
            return None
        with self.lock:
            known = self._valid_tokens("authentication").get(match.group(1))
        if known is None or not secrets.compare_digest(known, match.group(2)):
            return None
        return f"system:bootstrap:{match.group(1)}"

    def _bootstrap_tokens(self) -> None:
        """TokenCleaner deletes expired token Secrets; BootstrapSigner keeps kube-public/cluster-info's
        jws-kubeconfig-<id> equal to the detached JWS of its kubeconfig for each signing token, and only those."""
        secret_res = self.resource("", "secrets")
        for key, secret in list(self.objects.items()):
            token = key[:3] == ("", "secrets", "kube-system") and secret.get("type") == BOOTSTRAP_TYPE
            if token and _expired(self._token_fields(secret).get("expiration")):
                self._remove(secret_res, secret)
        cm_res = self.resource("", "configmaps")
        info = self.objects.get(self._key(cm_res, "kube-public", "cluster-info"))
        if info is None:
            return
        data = info.get("data") or {}
        content = data.get("kubeconfig", "")
        wanted = {k: v for k, v in data.items() if not k.startswith(JWS_PREFIX)}
        if content:
            for token_id, token_secret in self._valid_tokens("signing").items():
                wanted[JWS_PREFIX + token_id] = kubeadm_rest.detached_signature(content, token_id, token_secret)
        if wanted != data:
            info["data"] = wanted
            self._update(cm_res, info)

    # -- the cluster model of the fake cluster, for nodes that joined through kubeadm ----------------------------

    def _cluster_model(self) -> None:
        """Nodes registered with their host's facts (kubeadm_rest.FACTS, what the kubelet knows about its host)
        get their status from the fake cluster's model (fake_cluster.Cluster, one source of truth): NotReady until
        flannel's DaemonSet runs as the pinned manifest runs it with net-conf's Network equal to kubeadm-config's
        podSubnet; nvidia.com/gpu only where the device plugin runs with the nvidia runtime (a RuntimeClass whose
        handler is a runtime of the node's `containerd config dump`, or nvidia as containerd's default); and the
        DaemonSets' pods and status follow. Nodes given as NodeSpec are left as they are."""
        built = self._model_view()
        if built is None:
            return
        view, joined = built
        node_res = self.resource("", "nodes")
        for name, node in joined.items():
            model = view.node_object(name)["status"]
            status = dict(node.get("status") or {})
            wanted = {
                **status,
                "allocatable": model["allocatable"],
                "capacity": model["capacity"],
                "conditions": model["conditions"],
                "addresses": status.get("addresses") or model["addresses"],
                "nodeInfo": {**NODE_INFO, **(status.get("nodeInfo") or {}), **model["nodeInfo"]},
            }
            if wanted != status:
                node["status"] = wanted
                self._update(node_res, node)
        claim_res = self.resource("", "persistentvolumeclaims")
        for key, claim in list(self.objects.items()):
            if key[:2] == ("", "persistentvolumeclaims"):
                phase = view.claim_object({**claim, "kind": "PersistentVolumeClaim"})["status"]
                if (claim.get("status") or {}).get("phase") != phase["phase"]:
                    claim["status"] = {**(claim.get("status") or {}), **phase}
                    self._update(claim_res, claim)
        self._daemonset_pods(view)

    def _model_view(self) -> tuple[Any, dict[str, dict[str, Any]]] | None:
        """A fake_cluster.Cluster over the store (never saved), and the joined Nodes; None while no node joined
        with its facts or kubeadm-config is missing."""
        joined = {
            key[3]: obj
            for key, obj in self.objects.items()
            if key[:2] == ("", "nodes") and kubeadm_rest.FACTS in (obj["metadata"].get("annotations") or {})
        }
        config = self.objects.get(self._key(self.resource("", "configmaps"), "kube-system", "kubeadm-config"))
        if not joined or config is None:
            return None
        cluster = yaml.safe_load((config.get("data") or {}).get("ClusterConfiguration") or "{}") or {}
        view = fake_cluster.Cluster(self.folder / "cluster-model-unsaved.json")  # never saved: a view of the store
        networking = cluster.get("networking") or {}
        view.data["cluster"] = {
            "podSubnet": networking.get("podSubnet", ""),
            "serviceSubnet": networking.get("serviceSubnet", "10.96.0.0/12"),
            "kubernetesVersion": cluster.get("kubernetesVersion", VERSION["gitVersion"]),
        }
        for name, node in joined.items():
            facts = json.loads(node["metadata"]["annotations"][kubeadm_rest.FACTS])
            view.data["nodes"][name] = {
                "labels": dict(node["metadata"].get("labels") or {}),
                "taints": list((node.get("spec") or {}).get("taints") or []),
                "gpus": int(facts.get("gpus", 0)),
                "nvidia_default_runtime": bool(facts.get("nvidia_default_runtime")),
                "address": facts.get("address", ""),
                "runtimes": dict(facts.get("runtimes") or {"runc": ""}),
                "default_runtime": facts.get("default_runtime") or "runc",
                "bridge_nf_call_iptables": bool(facts.get("bridge_nf_call_iptables", True)),
            }
        modelled = {
            ("apps", "daemonsets"),
            ("", "configmaps"),
            ("node.k8s.io", "runtimeclasses"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
        }
        for (group, plural, namespace, name), obj in self.objects.items():
            if (group, plural) in modelled:
                kind = self.resource(group, plural).kind
                view.data["objects"][f"{kind}/{namespace}/{name}"] = {**obj, "kind": kind}
        view.data["files"] = self.model_files
        return view, joined

    def _model_runs(self, pod: dict[str, Any]) -> bool:
        """A standalone pod for a joined node (or any node, when the double was given no NodeSpec) gets its fate
        from the model (fake_cluster.Cluster.run_pod: the verify phase's smoke, GPU, write and read pods), not from
        the kubelet stand-in: Failed without a pod network, where bridge-nf-call-iptables is off, or when a reader
        finds no file the other node wrote through the claim; Pending while the claim is not bound."""
        built = self._model_view()
        if built is None:
            return False
        view, _ = built
        node = pod["spec"].get("nodeName")
        if (node and node not in view.data["nodes"]) or (not node and self.nodes):
            return False
        fate = view.run_pod(copy.deepcopy(pod))
        pod["spec"]["nodeName"] = fate["spec"].get("nodeName") or node
        if pod["spec"]["nodeName"] is None:
            del pod["spec"]["nodeName"]
        pod["status"] = fate["status"]
        self._update(self.resource("", "pods"), pod)
        return True

    def _daemonset_pods(self, view: Any) -> None:
        ds_res, pod_res = self.resource("apps", "daemonsets"), self.resource("", "pods")
        for key, ds in list(self.objects.items()):
            if key[:2] != ("apps", "daemonsets"):
                continue
            model = view.daemonset_object({**ds, "kind": "DaemonSet"})["status"]
            if any((ds.get("status") or {}).get(k) != v for k, v in model.items()):
                ds["status"] = {**(ds.get("status") or {}), **model}
                self._update(ds_res, ds)
            owner = {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": ds["metadata"]["name"],
                "uid": ds["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
            wanted = {p["metadata"]["name"]: p for p in view.daemonset_pods(ds)}
            for pod_key, pod in list(self.objects.items()):
                refs = pod["metadata"].get("ownerReferences") or []
                owned = pod_key[:2] == ("", "pods") and any(r.get("uid") == owner["uid"] for r in refs)
                if owned and pod["metadata"]["name"] not in wanted:
                    self._remove(pod_res, pod)
            for name, pod in wanted.items():
                current = self.objects.get(self._key(pod_res, pod["metadata"]["namespace"], name))
                if current is None:
                    pod["metadata"]["ownerReferences"] = [owner]
                    self._put(pod_res, pod)
                elif current.get("status") != pod["status"] or current.get("spec") != pod["spec"]:
                    current["status"], current["spec"] = pod["status"], pod["spec"]
                    self._update(pod_res, current)

    def _controller_loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                try:
                    self._bootstrap_tokens()
                    self._cluster_model()
                    self._sync()
                except Exception as exc:  # a model bug must not kill the loop silently
                    self.warnings.append(f"controller error: {type(exc).__name__}: {exc}")
            self._stop.wait(0.2)

    def _sync(self) -> None:
        pod_res = self.resource("", "pods")
        for run in list(self.runs.values()):
            if run.standin is None:
                continue
            if run.thread is not None and not run.thread.is_alive() and run.standin.stopped_for is None:
                run.ended_own |= {p.index for p in run.standin.pods}  # every pod ended by itself
            job = self.objects.get(run.job_key)
            finished = run.thread is not None and not run.thread.is_alive()
            for standin_pod in run.standin.pods:
                pod = self._pod(run, standin_pod.index)
                if pod is None:
                    continue
                self._sync_pod(pod, standin_pod, run)
                if pod["metadata"].get("deletionTimestamp") and self._process_of(pod) is None:
                    self._remove(pod_res, pod)
            if (
                run.standalone
                or job is None
                or not finished
                or (job.get("status") or {}).get("completionTime")
                or _job_final(job)
            ):
                continue
            outcome = run.standin.outcome if not run.stopped else "failed"
            stamp = now()
            succeeded = [i for i, p in enumerate(run.standin.pods) if p.exit_code == 0]
            if outcome == "succeeded":
                conditions = [
                    {
                        "type": "SuccessCriteriaMet",
                        "status": "True",
                        "reason": "SuccessPolicy",
                        "message": "Matched rules at index 0",
                        "lastProbeTime": stamp,
                        "lastTransitionTime": stamp,
                    },
                    {
                        "type": "Complete",
                        "status": "True",
                        "reason": "SuccessPolicy",
                        "message": "Matched rules at index 0",
                        "lastProbeTime": stamp,
                        "lastTransitionTime": stamp,
                    },
                ]
                changes = {
                    "completionTime": stamp,
                    "succeeded": len(succeeded),
                    "completedIndexes": ",".join(map(str, succeeded)),
                }
            else:
                failing = next(
                    (p for p in run.standin.pods if p.index in run.ended_own and p.exit_code not in (0, None)), None
                )
                container = job["spec"]["template"]["spec"]["containers"][0]["name"]
                message = (
                    f"Container {container} for pod {job['metadata']['namespace']}/{failing.name} failed with exit code {_exit_code(failing.exit_code)} matching FailJob rule at index 0"
                    if failing is not None
                    else "Job was stopped"
                )
                conditions = [
                    {
                        "type": "FailureTarget",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": message,
                        "lastProbeTime": stamp,
                        "lastTransitionTime": stamp,
                    },
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "PodFailurePolicy",
                        "message": message,
                        "lastProbeTime": stamp,
                        "lastTransitionTime": stamp,
                    },
                ]
                changes = {
                    "failed": sum(
                        1 for p in run.standin.pods if p.index in run.ended_own and p.exit_code not in (0, None)
                    )
                }
            job["status"]["conditions"] = [
                *[c for c in job["status"].get("conditions", []) if c["type"] == "Suspended"],
                *conditions,
            ]
            self._job_status(job, active=0, ready=0, **changes)
            self._trainjob_follows(job, conditions)
            # The pods the controller stopped (not ended by themselves) are deleted, as the real one does.
            for standin_pod in run.standin.pods:
                pod = self._pod(run, standin_pod.index)
                if pod is not None and standin_pod.index not in run.ended_own:
                    self._remove(pod_res, pod)
            self._finish_workload(job, outcome == "succeeded")
        self._finish_foreground()

    def _sync_pod(self, pod: dict[str, Any], standin_pod: Any, run: _JobRun) -> None:
        container = pod["spec"]["containers"][0]
        status = copy.deepcopy(pod["status"])
        base = {
            "name": container["name"],
            "image": container["image"],
            "imageID": f"{container['image']}@sha256:{'0' * 64}",
            "restartCount": 0,
            "containerID": f"containerd://{standin_pod.name}",
        }
        if standin_pod.process is None:
            return
        node = run.nodes[standin_pod.index]
        status.update(podIP=node.address, podIPs=[{"ip": node.address}], hostIP=node.address)
        status.setdefault("startTime", now())
        if standin_pod.exit_code is None and standin_pod.process.poll() is None:
            status["phase"] = "Running"
            state = {"running": {"startedAt": status["startTime"]}}
            status["containerStatuses"] = [{**base, "ready": True, "started": True, "state": state}]
            ready = "True"
        else:
            code = standin_pod.exit_code if standin_pod.exit_code is not None else standin_pod.process.returncode
            code = _exit_code(code)
            status["phase"] = "Succeeded" if code == 0 else "Failed"
            state = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": status["startTime"],
                    "finishedAt": now(),
                }
            }
            previous = (pod["status"].get("containerStatuses") or [{}])[0].get("state", {})
            if "terminated" in previous:
                state["terminated"]["finishedAt"] = previous["terminated"]["finishedAt"]
            status["containerStatuses"] = [{**base, "ready": False, "started": False, "state": state}]
            ready = "False"
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        if status != pod["status"]:
            pod["status"] = status
            self._update(self.resource("", "pods"), pod)

    # -- logs ----------------------------------------------------------------------------------------

    def log_source(self, namespace: str, name: str, container: str | None) -> tuple[Path, Any]:
        """The log file of a pod's container and a callable that says whether it may still grow."""
        with self.lock:
            res = self.resource("", "pods")
            pod = self.read(res, namespace, name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            if container is None and len(names) > 1:
                raise ApiError(
                    400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: {names}"
                )
            container = container or names[0]
            if container not in names:
                raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
            run = self._run_of(pod)
            index = int((pod["metadata"].get("annotations") or {}).get(INDEX_KEY, "0"))
            standin_pod = run.standin.pods[index] if run is not None and run.standin is not None else None
            if standin_pod is None or standin_pod.process is None:
                waiting = ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason", "ContainerCreating")
                detail = (
                    "trying and failing to pull image" if reason in ("ErrImagePull", "ImagePullBackOff") else reason
                )
                raise ApiError(
                    400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {detail}'
                )

        def alive() -> bool:
            return standin_pod.process.poll() is None and not self._stop.is_set()

        return standin_pod.log_path, alive


def _expired(stamp: str | None) -> bool:
    """A bootstrap token's expiration (RFC 3339) has passed; one that does not parse counts as expired."""
    if not stamp:
        return False
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return True
    return when <= datetime.datetime.now(datetime.UTC)


def _drop(obj: Any, path: str) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for part in parts[:-1]:
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj.get(part)
        if obj is None:
            return
    last = parts[-1]
    if isinstance(obj, dict):
        obj.pop(last, None)


def _docker_ref(image: str) -> str:
    name = image
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return name if ":" in name.rsplit("/", 1)[-1] or "@" in name else f"{name}:latest"


def _exit_code(code: int | None) -> int:
    if code is None:
        return 137
    return 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as the runtime reports


def _job_final(job: dict[str, Any]) -> bool:
    return any(
        c["type"] in ("Complete", "Failed") and c["status"] == "True"
        for c in (job.get("status") or {}).get("conditions", [])
    )


# --- HTTP ---------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    api: ApiServerDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def handle(self) -> None:
        with contextlib.suppress(ssl.SSLError, ConnectionError, OSError):
            super().handle()

    # -- plumbing ------------------------------------------------------------------------------------

    def _send(
        self, code: int, body: Any, content_type: str = "application/json", warnings: list[str] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for warning in warnings or []:
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            if self.api.token and secrets.compare_digest(auth[7:], self.api.token):
                return "kubernetes-admin"
            user = self.api.bootstrap_user(auth[7:])
            if user is not None:
                return user
            raise ApiError(401, "Unauthorized", "Unauthorized")
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:
            subject = dict(item[0] for item in cert.get("subject", ()))
            return subject.get("commonName")
        return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = self._body() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        self.api.requests.append((method, url.path))
        try:
            user = self._user()
            self.api.audit.append((method, url.path, user))
            if url.path in ("/readyz", "/livez", "/healthz"):
                self._send(200, b"ok", "text/plain")
                return
            kind = "anonymous" if user is None else "bootstrap" if user.startswith("system:bootstrap:") else ""
            if kind and not any(k == kind and m == method and p.fullmatch(url.path) for k, m, p in _BOOTSTRAP_RULES):
                raise ApiError(
                    403,
                    "Forbidden",
                    f'forbidden: User "{user or "system:anonymous"}" cannot {method.lower()} path "{url.path}"',
                )
            self._route(method, url.path, query, body)
        except ApiError as exc:
            self._send(exc.code, exc.body())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:  # the double's own bug: a 500 with the reason, never a hung client
            self.api.warnings.append(f"server error: {type(exc).__name__}: {exc}")
            self._send(
                500, ApiError(500, "InternalError", f"TEST DOUBLE internal error: {type(exc).__name__}: {exc}").body()
            )

    # -- routes --------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["openapi", "v3"]:
            self._send(200, _openapi_v3("/".join(parts[2:])))
            return
        if parts == ["version"]:
            self._send(200, VERSION)
            return
        if parts == ["api"]:
            self._send(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.api.host}:6443"}
                    ],
                },
            )
            return
        if parts == ["apis"]:
            self._send(200, _group_list())
            return
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        elif len(parts) == 2 and parts[0] == "apis":
            found = next((g for g in _group_list()["groups"] if g["name"] == parts[1]), None)
            if found is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            self._send(200, {"kind": "APIGroup", "apiVersion": "v1", **found})
            return
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            self._send(200, _resource_list(group, version))
            return
        if rest[0] == "watch":  # the deprecated /watch/ paths
            rest, query = rest[1:], {**query, "watch": "true"}
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        with self.api.lock:
            res = self.api.resource(group, rest[0], version)
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else ""
        if res.namespaced and namespace is None and name is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if subresource and subresource not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and name is None and query.get("watch") in ("true", "1"):
            self._watch(res, version, namespace, query)
            return
        if method == "GET" and subresource == "log":
            self._log(namespace or "default", name or "", query)
            return
        self._verb(method, res, version, namespace, name, subresource, query, body)

    def _verb(
        self,
        method: str,
        res: Resource,
        version: str,
        namespace: str | None,
        name: str | None,
        subresource: str,
        query: dict[str, str],
        body: bytes,
    ) -> None:
        api = self.api
        ns = namespace or ""
        with api.lock:
            table = "as=Table" in (self.headers.get("Accept") or "")
            if method == "GET" and name is None:
                listing = self._listing(res, version, namespace, query)
                self._send(200, _table(res, listing["items"], listing["metadata"]) if table else listing)
                return
            if method == "GET":
                obj = _as_version(api.read(res, ns, name), res, version)
                self._send(
                    200, _table(res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}) if table else obj
                )
                return
            if method == "POST" and name is None:
                obj, warnings = api.create(res, ns, _parse(body, res), query)
                api.warnings += warnings
                self._send(201, _as_version(obj, res, version), warnings=warnings)
                return
            if method == "PUT" and name is not None:
                obj, warnings = api.replace(res, ns, name, _parse(body, res), query, subresource)
                api.warnings += warnings
                self._send(200, _as_version(obj, res, version), warnings=warnings)
                return
            if method == "PATCH" and name is not None:
                created = api.objects.get(api._key(res, ns, name)) is None
                obj, warnings = api.patch(
                    res, ns, name, body, self.headers.get("Content-Type") or "", query, subresource
                )
                api.warnings += warnings
                self._send(201 if created else 200, _as_version(obj, res, version), warnings=warnings)
                return
            if method == "DELETE" and name is not None:
                options = json.loads(body) if body else {}
                if "propagationPolicy" in query:
                    options["propagationPolicy"] = query["propagationPolicy"]
                code, obj = api.delete(res, ns, name, options)
                self._send(code, _as_version(obj, res, version) if obj.get("kind") != "Status" else obj)
                return
        raise ApiError(
            405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
        )

    def _listing(self, res: Resource, version: str, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        api = self.api
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(query.get("fieldSelector", ""))
        items = [
            _as_version(o, res, version)
            for (g, p, ns, _), o in sorted(api.objects.items())
            if (g, p) == (res.group, res.plural)
            and (namespace is None or ns == namespace)
            and labels(o["metadata"].get("labels") or {})
            and fields(o)
        ]
        return {
            "kind": f"{res.kind}List",
            "apiVersion": f"{res.group}/{version}" if res.group else version,
            "metadata": {"resourceVersion": str(api.rv)},
            "items": items,
        }

    def _watch(self, res: Resource, version: str, namespace: str | None, query: dict[str, str]) -> None:
        api = self.api
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(query.get("fieldSelector", ""))
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)

        def wanted(obj: dict[str, Any]) -> bool:
            ns = obj["metadata"].get("namespace", "")
            return (
                (namespace is None or ns == namespace) and labels(obj["metadata"].get("labels") or {}) and fields(obj)
            )

        with api.lock:
            since = query.get("resourceVersion")
            pending: list[dict[str, Any]] = []
            if not since or since == "0":
                pending = [
                    {"type": "ADDED", "object": _as_version(o, res, version)}
                    for (g, p, _, _), o in sorted(api.objects.items())
                    if (g, p) == (res.group, res.plural) and wanted(o)
                ]
                cursor = api.rv
            else:
                cursor = int(since)
                oldest = api.history[0][0] if api.history else api.rv
                if cursor < oldest - 1:
                    expired = ApiError(410, "Expired", f"too old resource version: {cursor} ({oldest - 1})").body()
                    pending = [{"type": "ERROR", "object": expired}]
                    cursor = -1
        self._start_chunked("application/json")
        try:
            for event in pending:
                self._chunk(json.dumps(event).encode() + b"\n")
            while cursor >= 0 and time.monotonic() < deadline and not api._stop.is_set():
                with api.changed:
                    events = [
                        (rv, kind, obj)
                        for rv, kind, key, obj in api.history
                        if rv > cursor and key == (res.group, res.plural)
                    ]
                    if not events:
                        api.changed.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                        events = [
                            (rv, kind, obj)
                            for rv, kind, key, obj in api.history
                            if rv > cursor and key == (res.group, res.plural)
                        ]
                    if api.history:
                        cursor = max(cursor, api.history[-1][0])
                for _, kind, obj in events:
                    if wanted(obj):
                        self._chunk(
                            json.dumps({"type": kind, "object": _as_version(obj, res, version)}).encode() + b"\n"
                        )
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        path, alive = self.api.log_source(namespace, name, query.get("container"))
        follow = query.get("follow") in ("true", "1")
        tail = int(query["tailLines"]) if "tailLines" in query else None
        if not follow:
            data = path.read_bytes() if path.exists() else b""
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
            self._send(200, data, "text/plain")
            return
        self._start_chunked("text/plain")
        try:
            position = 0
            while True:
                running = alive()
                data = path.read_bytes()[position:] if path.exists() else b""
                if data:
                    self._chunk(data)
                    position += len(data)
                elif not running:
                    break
                else:
                    time.sleep(0.1)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True


def _parse(body: bytes, res: Resource) -> dict[str, Any]:
    try:
        obj = yaml.safe_load(body) if body else None
    except yaml.YAMLError as exc:
        raise ApiError(400, "BadRequest", f"the body of the request cannot be decoded: {exc}") from exc
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", f"Object '{res.kind}' is missing in 'null'")
    return obj


def _as_version(obj: dict[str, Any], res: Resource, version: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    if res.group and version != res.version:
        out["apiVersion"] = f"{res.group}/{version}"
    return out


def _age(stamp: str | None) -> str:
    """kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration) of the time since `stamp`."""
    if not stamp:
        return "<unknown>"
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _cells(res: Resource, obj: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """The columns and cells the API server's table printers give (pkg/printers/internalversion)."""
    meta, status = obj["metadata"], obj.get("status") or {}
    age = _age(meta.get("creationTimestamp"))
    if res.kind == "Node":
        ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "Unknown")
        roles = (
            ",".join(
                sorted(k.split("/", 1)[1] for k in meta.get("labels", {}) if k.startswith("node-role.kubernetes.io/"))
            )
            or "<none>"
        )
        cells = [
            meta["name"],
            "Ready" if ready == "True" else "NotReady",
            roles,
            age,
            status.get("nodeInfo", {}).get("kubeletVersion", ""),
        ]
        return ["Name", "Status", "Roles", "Age", "Version"], cells
    if res.kind == "Pod":
        containers = status.get("containerStatuses") or []
        ready = f"{sum(1 for c in containers if c.get('ready'))}/{len(obj['spec']['containers'])}"
        waiting = next((c["state"]["waiting"]["reason"] for c in containers if "waiting" in c.get("state", {})), None)
        terminated = next(
            (c["state"]["terminated"]["reason"] for c in containers if "terminated" in c.get("state", {})), None
        )
        return ["Name", "Ready", "Status", "Restarts", "Age"], [
            meta["name"],
            ready,
            waiting or terminated or status.get("phase", ""),
            0,
            age,
        ]
    if res.kind == "Job":
        conditions = {c["type"] for c in status.get("conditions", []) if c["status"] == "True"}
        state = (
            "Complete"
            if "Complete" in conditions
            else "Failed"
            if "Failed" in conditions
            else "Suspended"
            if obj["spec"].get("suspend")
            else "Running"
        )
        completions = f"{status.get('succeeded', 0)}/{obj['spec'].get('completions', 1)}"
        return ["Name", "Status", "Completions", "Age"], [meta["name"], state, completions, age]
    return ["Name", "Age"], [meta["name"], age]


def _table(res: Resource, items: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table (server-side printing, what kubectl get asks for)."""
    columns = _cells(res, {"metadata": {"name": ""}, "spec": {"containers": []}})[0]
    rows = []
    for obj in items:
        columns, cells = _cells(res, obj)
        partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        rows.append({"cells": cells, "object": partial})
    definitions = [
        {
            "name": c,
            "type": "integer" if c == "Restarts" else "string",
            "format": "name" if c == "Name" else "",
            "description": "",
            "priority": 0,
        }
        for c in columns
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    }


def _openapi_v3(group_version: str) -> dict[str, Any]:
    """/openapi/v3: the index of group-versions, and per group-version the PATCH operations with the
    fieldValidation parameter, which is what kubectl reads to send fieldValidation=Strict instead of
    validating on the client. The schemas themselves are not served (the double validates)."""
    versions = {
        ("api/v1" if not r.group else f"apis/{r.group}/{v}"): (r.group, v)
        for r in RESOURCES
        for v in (r.version, *r.served_versions)
    }
    if not group_version:
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=0"} for gv in versions}}
    if group_version not in versions:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    group, version = versions[group_version]
    paths = {}
    for res in RESOURCES:
        if res.group != group or version not in (res.version, *res.served_versions):
            continue
        where = (
            f"/{group_version}/namespaces/{{namespace}}/{res.plural}"
            if res.namespaced
            else f"/{group_version}/{res.plural}"
        )
        gvk = {"group": res.group, "version": version, "kind": res.kind}
        parameters = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": True}]
        operation = {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": parameters,
            "responses": {"200": {"description": "OK"}},
        }
        paths[f"{where}/{{name}}"] = {"patch": operation, "put": operation}
        paths[where] = {"post": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": {}},
    }


def _group_list() -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for res in RESOURCES:
        if res.group:
            versions = groups.setdefault(res.group, [])
            for version in (res.version, *res.served_versions):
                if version not in versions:
                    versions.append(version)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
            }
            for name, versions in groups.items()
        ],
    }


def _resource_list(group: str, version: str) -> dict[str, Any]:
    found = [r for r in RESOURCES if r.group == group and version in (r.version, *r.served_versions)]
    if not found:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    resources = []
    for res in found:
        resources.append(
            {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": list(res.verbs),
                **({"shortNames": list(res.short)} if res.short else {}),
            }
        )
        for sub in res.subresources:
            resources.append(
                {
                    "name": f"{res.plural}/{sub}",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind if sub != "log" else "Pod",
                    "verbs": ["get", "patch", "update"] if sub != "log" else ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def lines_of(stream: Iterator[bytes]) -> Iterator[str]:
    """Split a chunked byte stream into lines (for tests reading a followed log)."""
    buffer = b""
    for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode(errors="replace")
    if buffer:
        yield buffer.decode(errors="replace")

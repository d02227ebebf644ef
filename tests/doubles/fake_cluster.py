#!/usr/bin/env python3
"""TEST DOUBLE - a stand-in for a Kubernetes control plane and its kubelets, for pyctl's lab tests only.

The kubeadm double starts it on the control plane host (`kubeadm init`); the kubeadm double on workers
talks to it to join (the token and CA hash are checked the way the real API server and kubeadm would),
and the kubectl double forwards every command line to it. It keeps a small model of a cluster and
derives status the way the real components would, so pyctl's phases meet realistic states:

- a node is NotReady ("cni plugin not initialized") until flannel's DaemonSet is applied with a
  net-conf Network equal to the cluster's podSubnet (FIELD_NOTES #7);
- a node advertises nvidia.com/gpu (as many as its nvidia-smi double lists) only when the device plugin
  DaemonSet selects it and its pods run with the nvidia runtime (runtimeClassName nvidia and a
  RuntimeClass of that name, or nvidia as the node's default runtime); otherwise the plugin's pod
  crash-loops the way the real one does without NVML (FIELD_NOTES #5);
- a claim is Bound when a volume is pre-bound to it; pods mounting it write and read a shared file store;
- tokens expire after their TTL and are checked at join time, with the CA hash;
- every applied object passes the API server's strict field validation against the pinned Kubernetes
  OpenAPI schema (openapi_strict.py: unknown fields, wrong types, missing required fields are refused
  with the API server's messages, as `kubectl apply` with fieldValidation=Strict gets them);
- a pod's RuntimeClass must exist (admission: `pod rejected: RuntimeClass "x" not found`) and its
  `handler` must be a runtime of the node's real containerd configuration (what the kubeadm double read
  from `containerd config dump` on that host when it joined: version 2 tables
  plugins."io.containerd.grpc.v1.cri".containerd.runtimes for containerd 1.6/1.7, version 3
  plugins."io.containerd.cri.v1.runtime".containerd.runtimes for 2.x); otherwise the sandbox fails as
  containerd's CRI plugin fails it: `no runtime for "x" is configured`;
- flannel runs only as the pinned upstream manifest runs it (FLANNEL below: flannel v0.28.9's
  Documentation/kube-flannel.yml): its image, command and args, the ConfigMap it mounts and a
  net-conf.json whose Network parses and whose Backend type flannel knows; else its pod crash-loops and
  the nodes stay NotReady;
- pods on a node whose host has net.bridge.bridge-nf-call-iptables != 1 cannot reach Services (bridged
  pod traffic bypasses kube-proxy's iptables rules): the smoke pods there fail.

Upstream versions: Kubernetes 1.36 (API server, kubelet, EndpointSlice), containerd 1.6/1.7/2.x CRI
plugin, flannel v0.28.9, NVIDIA device plugin (crash-loops without NVML). It is a model, not Kubernetes:
nothing here runs containers. Standard library plus PyYAML only. Its process is named kube-apiserver (the
name `ss -p` shows for the real API server's process), so a re-run's preflight knows port 6443 as the cluster's own.
Its model (Cluster) also runs inside the HTTPS API double (fake_apiserver.py) for nodes that join through kubeadm's
REST flow (kubeadm_rest.py), over the objects stored there: one model for both doubles. The plain-HTTP server here is
what the kubeadm double runs when no API double is named (no lab test does any more): tests/k8s/test_lab_phases.py's,
test_kubeadm_rest_lab's and the full bootstrap's (tests/k8s/full_lab.py) labs bootstrap against the API double (the
kubeadm double's REST mode).
    fake_cluster.py serve --state FILE --listen ADDR:PORT
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import hashlib
import json
import re
import secrets
import shlex
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

try:  # on lab hosts the doubles' folder is on sys.path; in-process tests import the package
    import openapi_strict
except ImportError:  # pragma: no cover - depends on how the module is loaded
    from tests.doubles import openapi_strict

SCHEMA_FILE = Path(__file__).resolve().with_name("openapi.json")
GPU = "nvidia.com/gpu"
NVIDIA_BINARY = "nvidia-container-runtime"
# flannel v0.28.9, Documentation/kube-flannel.yml (sha256 e875824be2f552b45711dbda91af81b17eb961d00025d914d9fef18fad8f09c0):
# the facts its DaemonSet runs on. Extra flanneld flags pyctl may add: --iface (flanneld's own flag).
FLANNEL = {
    "version": "v0.28.9",
    "namespace": "kube-flannel",
    "configmap": "kube-flannel-cfg",
    "containers": {
        "kube-flannel": {
            "image": "ghcr.io/flannel-io/flannel:v0.28.9",
            "command": ["/opt/bin/flanneld"],
            "args": ["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"],
        }
    },
    "init_containers": {
        "install-cni-plugin": {
            "image": "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3",
            "command": ["cp"],
            "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
        },
        "install-cni": {
            "image": "ghcr.io/flannel-io/flannel:v0.28.9",
            "command": ["/opt/bin/install-conf"],
            "args": ["/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
        },
    },
    "extra_args": ("--iface=", "--iface-regex=", "--iface-can-reach="),
    "config_mount": "/etc/kube-flannel/",
    "backends": ("vxlan", "host-gw", "wireguard", "udp", "ipip", "ipsec", "alloc", "extension"),
}
CP_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
NOT_READY = (
    "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:Network plugin returns error: cni plugin not initialized"
)
# kind -> (plural used on the command line, group suffix kubectl prints, namespaced)
KINDS = {
    "Namespace": ("namespaces", "", False),
    "ServiceAccount": ("serviceaccounts", "", True),
    "ConfigMap": ("configmaps", "", True),
    "Pod": ("pods", "", True),
    "PersistentVolume": ("persistentvolumes", "", False),
    "PersistentVolumeClaim": ("persistentvolumeclaims", "", True),
    "DaemonSet": ("daemonsets", ".apps", True),
    "ClusterRole": ("clusterroles", ".rbac.authorization.k8s.io", False),
    "ClusterRoleBinding": ("clusterrolebindings", ".rbac.authorization.k8s.io", False),
    "RuntimeClass": ("runtimeclasses", ".node.k8s.io", False),
}
PLURALS = {v[0]: k for k, v in KINDS.items()} | {"pvc": "PersistentVolumeClaim", "node": "Node", "nodes": "Node"}
PLURALS |= {k.lower(): k for k in KINDS} | {v[0].rstrip("s"): k for k, v in KINDS.items()}


def duration_seconds(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(h|m|s|ms)", str(text)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


class Cluster:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self.data.setdefault("tokens", {})
        self.data.setdefault("minted", [])
        self.data.setdefault("nodes", {})
        self.data.setdefault("objects", {})
        self.data.setdefault("files", {})
        self.data.setdefault("log", [])
        self._schema: dict[str, Any] | None = None

    def schema(self) -> dict[str, Any]:
        """The pinned Kubernetes OpenAPI schema: the file install.py ships, or compiled here (in-process)."""
        if self._schema is None:
            if SCHEMA_FILE.is_file():
                self._schema = json.loads(SCHEMA_FILE.read_text())
            else:
                self._schema = openapi_strict.compile_schema("1.36.0")
        return self._schema

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.replace(self.path)

    # --- set-up: kubeadm init, tokens, joins --------------------------------------------------

    def init(self, request: dict[str, Any]) -> dict[str, Any]:
        self.data["cluster"] = request["cluster"]
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.data["objects"][f"Namespace//{namespace}"] = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace},
            }
        self.data["ca_hash"] = request["ca_hash"]
        self.register(request["node"])
        return {"ok": True}

    def mint(self, ttl: str, description: str) -> str:
        token = f"{secrets.token_hex(3)}.{secrets.token_hex(8)}"
        token_id, secret = token.split(".")
        self.data["tokens"][token_id] = {
            "secret": secret,
            "expires": time.time() + (duration_seconds(ttl) or 86400),
            "description": description,
        }
        self.data["minted"].append(token)
        return token

    def token_create(self, request: dict[str, Any]) -> dict[str, Any]:
        token = self.mint(request.get("ttl") or "24h0m0s", request.get("description", ""))
        endpoint = self.data["cluster"]["controlPlaneEndpoint"]
        return {
            "join": f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {self.data['ca_hash']} "
        }

    def token_delete(self, request: dict[str, Any]) -> dict[str, Any]:
        found = self.data["tokens"].pop(request["id"], None)
        return {"deleted": found is not None}

    def join(self, request: dict[str, Any]) -> dict[str, Any]:
        token_id, _, secret = str(request.get("token", "")).partition(".")
        known = self.data["tokens"].get(token_id)
        if known is None or known["secret"] != secret:
            return {"error": f'couldn\'t validate the identity of the API Server: token id "{token_id}" is invalid'}
        if known["expires"] < time.time():
            return {"error": f'token id "{token_id}" has expired'}
        if self.data.get("ca_hash") not in (request.get("ca_hashes") or []):
            return {"error": "cluster CA found in cluster-info ConfigMap is not pinned by any of the caCertHashes"}
        name = request["node"]["name"]
        if name in self.data["nodes"]:
            return {"error": f'a Node with name "{name}" and status "Ready" already exists in the cluster'}
        self.register(request["node"])
        return {"ok": True}

    def register(self, node: dict[str, Any]) -> None:
        labels = {"kubernetes.io/hostname": node["name"], "kubernetes.io/os": "linux"}
        labels.update(node.get("labels") or {})
        if node.get("control_plane"):
            labels["node-role.kubernetes.io/control-plane"] = ""
        taints = node.get("taints")
        if taints is None:
            taints = [CP_TAINT] if node.get("control_plane") else []
        self.data["nodes"][node["name"]] = {
            "labels": labels,
            "taints": taints,
            "gpus": int(node.get("gpus", 0)),
            "nvidia_default_runtime": bool(node.get("nvidia_default_runtime")),
            "address": node.get("address", ""),
            # containerd's CRI runtimes on the host (name -> BinaryName) and its default runtime; a node
            # registered without them has containerd's defaults (one runtime, runc)
            "runtimes": dict(node.get("runtimes") or {"runc": ""}),
            "default_runtime": node.get("default_runtime") or "runc",
            "bridge_nf_call_iptables": bool(node.get("bridge_nf_call_iptables", True)),
        }

    # --- derived status -----------------------------------------------------------------------

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.data["objects"].values() if o["kind"] == kind]

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        for obj in self.objects(kind):
            meta = obj["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace", "default") == namespace):
                return obj
        return None

    def network_ready(self) -> bool:
        config = self.find("ConfigMap", "kube-flannel-cfg", "kube-flannel")
        if self.find("DaemonSet", "kube-flannel-ds", "kube-flannel") is None or config is None:
            return False
        if self.flannel_problems():
            return False
        network = json.loads(config["data"]["net-conf.json"]).get("Network")
        return network == self.data["cluster"]["podSubnet"]

    def flannel_problems(self) -> list[str]:
        """Why flannel's pods would not run as the pinned upstream manifest runs them ([] when they would)."""
        ds = self.find("DaemonSet", "kube-flannel-ds", FLANNEL["namespace"])
        config = self.find("ConfigMap", FLANNEL["configmap"], FLANNEL["namespace"])
        if ds is None or config is None:
            return []
        problems = []
        spec = ds["spec"]["template"]["spec"]
        for field, expected in (("containers", FLANNEL["containers"]), ("initContainers", FLANNEL["init_containers"])):
            have = {c["name"]: c for c in spec.get(field) or []}
            for name, upstream in expected.items():
                container = have.get(name)
                if container is None:
                    problems.append(f"{field} {name} is missing (flannel {FLANNEL['version']} runs it)")
                    continue
                if container.get("image") != upstream["image"]:
                    problems.append(f"{name}: image {container.get('image')} is not flannel's {upstream['image']}")
                if container.get("command") != upstream["command"]:
                    problems.append(f"{name}: command {container.get('command')} is not {upstream['command']}")
                args = list(container.get("args") or [])
                extra = args[len(upstream["args"]) :]
                if args[: len(upstream["args"])] != upstream["args"] or any(
                    not a.startswith(FLANNEL["extra_args"]) for a in extra
                ):
                    problems.append(f"{name}: args {args} are not flannel's {upstream['args']} (+ --iface=...)")
        flanneld = next((c for c in spec.get("containers") or [] if c["name"] == "kube-flannel"), {})
        mounts = {m["name"]: m["mountPath"] for m in flanneld.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        if not any(
            (volumes.get(n, {}).get("configMap") or {}).get("name") == FLANNEL["configmap"]
            and path.rstrip("/") == FLANNEL["config_mount"].rstrip("/")
            for n, path in mounts.items()
        ):
            problems.append(
                f"kube-flannel does not mount ConfigMap {FLANNEL['configmap']} at {FLANNEL['config_mount']}"
            )
        try:
            conf = json.loads(config["data"]["net-conf.json"])
            import ipaddress

            ipaddress.ip_network(conf.get("Network", ""))
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(f"failed to read net-conf.json: {exc}")
            conf = {}
        backend = (conf.get("Backend") or {}).get("Type", "udp")
        if conf and backend not in FLANNEL["backends"]:
            problems.append(f"net-conf.json: unknown backend type: {backend}")
        return problems

    @staticmethod
    def tolerates(pod_spec: dict[str, Any], taints: list[dict[str, Any]]) -> bool:
        for taint in taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            ok = any(
                t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint["key"])
                for t in pod_spec.get("tolerations") or []
            )
            if not ok:
                return False
        return True

    def selects(self, ds: dict[str, Any], name: str) -> bool:
        node = self.data["nodes"][name]
        spec = ds["spec"]["template"]["spec"]
        if any(node["labels"].get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return False
        return self.tolerates(spec, node["taints"])

    def sandbox_runtime(self, pod_spec: dict[str, Any], name: str) -> tuple[str | None, str]:
        """(the containerd runtime a pod's sandbox gets on node `name`, "") or (None, the error the pod meets)."""
        node = self.data["nodes"][name]
        wanted = pod_spec.get("runtimeClassName")
        if not wanted:
            return node["default_runtime"], ""
        runtime_class = self.find("RuntimeClass", wanted)
        if runtime_class is None:
            return None, f'pod rejected: RuntimeClass "{wanted}" not found'
        handler = runtime_class.get("handler", "")
        if handler not in node["runtimes"]:
            return None, (
                "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: "
                f'no runtime for "{handler}" is configured'
            )
        return handler, ""

    def nvidia_runtime(self, pod_spec: dict[str, Any], name: str) -> bool:
        node = self.data["nodes"][name]
        runtime, _ = self.sandbox_runtime(pod_spec, name)
        if runtime is None:
            return False
        if node["nvidia_default_runtime"] and not pod_spec.get("runtimeClassName"):
            return True
        return node["runtimes"].get(runtime, "").endswith(NVIDIA_BINARY)

    def plugin_serves(self, name: str) -> bool:
        ds = self.find("DaemonSet", "nvidia-device-plugin-daemonset", "kube-system")
        return bool(ds and self.selects(ds, name) and self.nvidia_runtime(ds["spec"]["template"]["spec"], name))

    def node_object(self, name: str) -> dict[str, Any]:
        node = self.data["nodes"][name]
        ready = self.network_ready()
        allocatable = {"cpu": "2", "memory": "4Gi", "pods": "110"}
        if node["gpus"] and self.plugin_serves(name):
            allocatable[GPU] = str(node["gpus"])
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }
        if not ready:
            condition = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": NOT_READY}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": dict(node["labels"])},
            "spec": {"taints": node["taints"]} if node["taints"] else {},
            "status": {
                "allocatable": allocatable,
                "capacity": dict(allocatable),
                "conditions": [{"type": "MemoryPressure", "status": "False"}, condition],
                "nodeInfo": {"kubeletVersion": self.data["cluster"]["kubernetesVersion"]},
                "addresses": [{"type": "InternalIP", "address": node["address"]}],
            },
        }

    def daemonset_pods(self, ds: dict[str, Any]) -> list[dict[str, Any]]:
        pods = []
        spec = ds["spec"]["template"]["spec"]
        for name in sorted(self.data["nodes"]):
            if not self.selects(ds, name):
                continue
            pod_name = f"{ds['metadata']['name']}-{hashlib.sha1(name.encode()).hexdigest()[:5]}"
            status: dict[str, Any] = {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "ready": True, "restartCount": 0, "state": {"running": {}}}
                    for c in spec["containers"]
                ],
            }
            plugin = ds["metadata"]["name"] == "nvidia-device-plugin-daemonset"
            _, sandbox_error = self.sandbox_runtime(spec, name)
            flannel = self.flannel_problems() if ds["metadata"]["name"] == "kube-flannel-ds" else []
            if sandbox_error.startswith("pod rejected"):
                continue  # admission refuses the DaemonSet controller's pod: none exists (event FailedCreate)
            if sandbox_error:
                status = {
                    "phase": "Pending",
                    "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c["image"],
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": "ContainerCreating", "message": sandbox_error}},
                        }
                        for c in spec["containers"]
                    ],
                }
            elif flannel:
                status["conditions"] = [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]
                status["containerStatuses"][0].update(
                    ready=False,
                    restartCount=6,
                    state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting"}},
                    lastState={"terminated": {"exitCode": 1, "reason": "Error", "message": "; ".join(flannel)}},
                )
            elif plugin and not self.nvidia_runtime(spec, name):
                status["conditions"] = [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]
                status["containerStatuses"][0].update(
                    ready=False,
                    restartCount=6,
                    state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting"}},
                    lastState={
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "failed to initialize NVML: could not load NVML library",
                        }
                    },
                )
            if not self.network_ready() and not spec.get("hostNetwork"):
                status = {"phase": "Pending", "reason": "ContainerCreating", "conditions": []}
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": pod_name,
                        "namespace": ds["metadata"]["namespace"],
                        "labels": dict(ds["spec"]["template"]["metadata"]["labels"]),
                    },
                    "spec": {"nodeName": name, **copy.deepcopy(spec)},
                    "status": status,
                }
            )
        return pods

    def daemonset_object(self, ds: dict[str, Any]) -> dict[str, Any]:
        pods = self.daemonset_pods(ds)
        ready = sum(1 for p in pods if any(c.get("status") == "True" for c in p["status"].get("conditions", [])))
        out = copy.deepcopy(ds)
        out["status"] = {
            "desiredNumberScheduled": len(pods),
            "currentNumberScheduled": len(pods),
            "numberReady": ready,
            "numberMisscheduled": 0,
        }
        return out

    def claim_object(self, claim: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(claim)
        namespace, name = claim["metadata"].get("namespace", "default"), claim["metadata"]["name"]
        bound = any(
            (pv["spec"].get("claimRef") or {}).get("name") == name
            and (pv["spec"].get("claimRef") or {}).get("namespace") == namespace
            and pv["metadata"]["name"] == claim["spec"].get("volumeName", pv["metadata"]["name"])
            for pv in self.objects("PersistentVolume")
        )
        out["status"] = {"phase": "Bound" if bound else "Pending"}
        if bound:
            out["status"]["capacity"] = claim["spec"]["resources"]["requests"]
        return out

    def run_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Give a standalone pod its fate when it is created (the pods pyctl's verify phase starts)."""
        spec = pod["spec"]
        namespace = pod["metadata"].get("namespace", "default")
        node = spec.get("nodeName")
        if node is None:
            for name in sorted(self.data["nodes"]):
                if self.tolerates(spec, self.data["nodes"][name]["taints"]):
                    node = name
                    break
        pod["status"] = {"phase": "Succeeded", "containerStatuses": []}
        if node is None or node not in self.data["nodes"]:
            pod["status"] = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "message": f"0/{len(self.data['nodes'])} nodes are available",
                    }
                ],
            }
            return pod
        pod["spec"]["nodeName"] = node

        def fail(code: int, message: str) -> dict[str, Any]:
            pod["status"] = {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": spec["containers"][0]["name"],
                        "state": {"terminated": {"exitCode": code, "reason": "Error", "message": message}},
                    }
                ],
            }
            return pod

        if not self.network_ready():
            return fail(1, "network not ready")
        _, sandbox_error = self.sandbox_runtime(spec, node)
        if sandbox_error:
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": spec["containers"][0]["name"],
                        "state": {"waiting": {"reason": "ContainerCreating", "message": sandbox_error}},
                    }
                ],
            }
            return pod
        if not self.data["nodes"][node]["bridge_nf_call_iptables"]:
            service = self.data["cluster"].get("serviceSubnet", "10.96.0.0/12").split("/")[0][:-1] + "1"
            return fail(
                1,
                f"dial tcp {service}:443: i/o timeout (TEST DOUBLE: net.bridge.bridge-nf-call-iptables is not 1 on "
                f"{node}: bridged pod traffic bypasses kube-proxy's iptables rules)",
            )
        for volume in spec.get("volumes") or []:
            claim_name = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            claim = self.find("PersistentVolumeClaim", claim_name, namespace) if claim_name else None
            if claim_name and (claim is None or self.claim_object(claim)["status"]["phase"] != "Bound"):
                pod["status"] = {
                    "phase": "Pending",
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "message": f'persistentvolumeclaim "{claim_name}" not bound',
                        }
                    ],
                }
                return pod
        container = spec["containers"][0]
        wanted_gpus = int(((container.get("resources") or {}).get("limits") or {}).get(GPU, 0))
        if wanted_gpus:
            have = int(self.node_object(node)["status"]["allocatable"].get(GPU, 0))
            if have < wanted_gpus:
                return fail(128, f"UnexpectedAdmissionError: requested {wanted_gpus} {GPU}, node has {have}")
            if not self.nvidia_runtime(spec, node):
                return fail(127, "libcuda.so.1: cannot open shared object file")
        command = " ".join(container.get("command") or [])
        written = re.search(r'echo "([^"]*)\$NODE_NAME" > (\S+)', command)
        if written:
            self.data["files"][written.group(2)] = written.group(1) + node
        read = container.get("command") or []
        if read[:2] == ["grep", "-qx"] and self.data["files"].get(read[3]) != read[2]:
            return fail(1, "")
        return pod

    # --- kubectl ------------------------------------------------------------------------------

    def kubectl(self, argv: list[str], files: dict[str, str]) -> tuple[int, str, str]:
        args = [a for a in argv if a]
        if "--kubeconfig" in args:
            index = args.index("--kubeconfig")
            del args[index : index + 2]
        namespace = None
        for flag in ("-n", "--namespace"):
            if flag in args:
                index = args.index(flag)
                namespace = args[index + 1]
                del args[index : index + 2]
        selector = None
        if "-l" in args:
            index = args.index("-l")
            selector = dict(kv.split("=", 1) for kv in args[index + 1].split(","))
            del args[index : index + 2]
        verb = args[0] if args else ""
        if args[:3] == ["get", "--raw", "/readyz"]:
            return 0, "ok", ""
        if verb == "apply" and "-f" in args:
            source = args[args.index("-f") + 1]
            return self.apply(files[source], source)
        if verb == "label" and len(args) >= 4 and args[1] == "node":
            return self.label(args[2], args[3])
        if verb == "get" and "-o" in args and args[args.index("-o") + 1] == "json":
            kinds = [PLURALS[k] for k in args[1].split(",")]
            everywhere = "--all-namespaces" in args or "-A" in args
            items = [
                i
                for i in self.listing(kinds)
                if everywhere
                or i["kind"]
                in ("Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "RuntimeClass", "Namespace")
                or i["metadata"].get("namespace", "default") == (namespace or "default")
            ]
            if selector:
                items = [
                    i for i in items if all(i["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
                ]
            return 0, json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), ""
        if verb == "delete" and len(args) > 1:
            return self.delete(
                PLURALS[args[1]],
                args[2] if len(args) > 2 and not args[2].startswith("-") else None,
                namespace or "default",
                selector,
            )
        return 1, "", f"error: the kubectl test double does not know: kubectl {shlex.join(argv)}"

    def listing(self, kinds: list[str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for kind in kinds:
            if kind == "Node":
                items += [self.node_object(n) for n in sorted(self.data["nodes"])]
            elif kind == "DaemonSet":
                items += [self.daemonset_object(d) for d in self.objects("DaemonSet")]
            elif kind == "PersistentVolumeClaim":
                items += [self.claim_object(c) for c in self.objects("PersistentVolumeClaim")]
            elif kind == "Pod":
                items += copy.deepcopy(self.objects("Pod"))
                for ds in self.objects("DaemonSet"):
                    items += self.daemonset_pods(ds)
            else:
                items += copy.deepcopy(self.objects(kind))
        return items

    def apply(self, text: str, source: str = "-") -> tuple[int, str, str]:
        lines: list[str] = []
        errors: list[str] = []  # objects refused while the others are applied, as kubectl reports them
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kind = doc.get("kind")
            meta = doc.get("metadata") or {}
            key = f"{kind}/{meta.get('namespace', 'default' if KINDS.get(kind, ('', '', False))[2] else '')}"
            refused = openapi_strict.problems(
                doc, self.schema(), source, creating=f"{key}/{meta.get('name')}" not in self.data["objects"]
            )
            if refused:
                return 1, "\n".join(lines), refused
            if kind not in KINDS or not (doc.get("metadata") or {}).get("name"):
                return 1, "\n".join(lines), f"error: the kubectl test double cannot apply {kind}"
            _, group, namespaced = KINDS[kind]
            meta = doc["metadata"]
            if namespaced:
                meta.setdefault("namespace", "default")
                if self.find("Namespace", meta["namespace"]) is None:
                    return (
                        1,
                        "\n".join(lines),
                        f'Error from server (NotFound): namespaces "{meta["namespace"]}" not found',
                    )
            key = f"{kind}/{meta.get('namespace', '')}/{meta['name']}"
            old = self.data["objects"].get(key)
            shown = f"{kind.lower()}{group}/{meta['name']}"
            if kind == "Pod":
                _, rejected = self.sandbox_runtime(doc["spec"], next(iter(self.data["nodes"])))
                if rejected.startswith("pod rejected"):
                    errors.append(
                        f'Error from server (Forbidden): error when creating "{source}": pods "{meta["name"]}" is '
                        f"forbidden: {rejected}"
                    )
                    continue
                if old is not None:
                    return 1, "\n".join(lines), f'The Pod "{meta["name"]}" is invalid: spec: Forbidden: pod updates'
                self.run_pod(doc)
            if old is None:
                lines.append(f"{shown} created")
            elif {k: v for k, v in old.items() if k != "status"} == {k: v for k, v in doc.items() if k != "status"}:
                lines.append(f"{shown} unchanged")
            else:
                lines.append(f"{shown} configured")
            self.data["objects"][key] = doc
        return (1 if errors else 0), "\n".join(lines), "\n".join(errors)

    def label(self, node: str, assignment: str) -> tuple[int, str, str]:
        if node not in self.data["nodes"]:
            return 1, "", f'Error from server (NotFound): nodes "{node}" not found'
        labels = self.data["nodes"][node]["labels"]
        if assignment.endswith("-"):
            found = labels.pop(assignment[:-1], None)
            return 0, f"node/{node} {'unlabeled' if found is not None else 'not labeled'}", ""
        key, _, value = assignment.partition("=")
        if labels.get(key) == value:
            return 0, f"node/{node} not labeled", ""
        labels[key] = value
        return 0, f"node/{node} labeled", ""

    def delete(self, kind: str, name: str | None, namespace: str, selector: dict | None) -> tuple[int, str, str]:
        if kind == "Node":
            if self.data["nodes"].pop(name, None) is None:
                return 1, "", f'Error from server (NotFound): nodes "{name}" not found'
            return 0, f'node "{name}" deleted', ""
        lines = []
        for key, obj in list(self.data["objects"].items()):
            meta = obj["metadata"]
            if obj["kind"] != kind or (KINDS[kind][2] and meta.get("namespace") != namespace):
                continue
            if name and meta["name"] != name:
                continue
            if selector and any((meta.get("labels") or {}).get(k) != v for k, v in selector.items()):
                continue
            del self.data["objects"][key]
            lines.append(f'{kind.lower()} "{meta["name"]}" deleted')
        return 0, "\n".join(lines), ""


PROCESS_NAME = b"kube-apiserver"  # what the real API server's process is called (its comm, as ss -p shows it)


def name_process(name: bytes = PROCESS_NAME) -> None:
    """Set this process's comm (prctl PR_SET_NAME), as the static pod's kube-apiserver process has it."""
    ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)


def serve(state: Path, listen: str) -> None:
    name_process()
    cluster = Cluster(state)
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with cluster.lock:
                self.reply(cluster.data if self.path == "/state" else {"ok": True})

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with cluster.lock:
                if self.path == "/kubectl":
                    rc, out, err = cluster.kubectl(request["argv"], request.get("files") or {})
                    body: dict[str, Any] = {"rc": rc, "stdout": out, "stderr": err}
                    cluster.data["log"].append({"kubectl": request["argv"], "rc": rc})
                else:
                    handler = {
                        "/init": cluster.init,
                        "/token/create": cluster.token_create,
                        "/token/delete": cluster.token_delete,
                        "/join": cluster.join,
                    }[self.path]
                    body = handler(request)
                cluster.save()
            self.reply(body)

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--listen", required=True)
    args = parser.parse_args()
    serve(args.state, args.listen)


if __name__ == "__main__":
    main()

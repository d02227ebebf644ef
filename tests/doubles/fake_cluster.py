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
- tokens expire after their TTL and are checked at join time, with the CA hash.

It is a model, not Kubernetes: nothing here runs containers. Standard library plus PyYAML only.
    fake_cluster.py serve --state FILE --listen ADDR:PORT
"""

from __future__ import annotations

import argparse
import copy
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

GPU = "nvidia.com/gpu"
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
        network = json.loads(config["data"]["net-conf.json"]).get("Network")
        return network == self.data["cluster"]["podSubnet"]

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

    def nvidia_runtime(self, pod_spec: dict[str, Any], name: str) -> bool:
        if self.data["nodes"][name]["nvidia_default_runtime"]:
            return True
        wanted = pod_spec.get("runtimeClassName")
        return wanted == "nvidia" and self.find("RuntimeClass", "nvidia") is not None

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
            if plugin and not self.nvidia_runtime(spec, name):
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
            return self.apply(files[args[args.index("-f") + 1]])
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

    def apply(self, text: str) -> tuple[int, str, str]:
        lines = []
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kind = doc.get("kind")
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
        return 0, "\n".join(lines), ""

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


def serve(state: Path, listen: str) -> None:
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

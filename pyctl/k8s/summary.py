"""A plain summary of a cluster for `pyctl status` and `pyctl doctor`: nodes, GPUs, add-ons, storage."""

from __future__ import annotations

from typing import Any

from pyctl.k8s import names
from pyctl.k8s.health import Snapshot


def _ready(node: dict[str, Any]) -> str:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return {"True": "Ready", "False": "NotReady"}.get(condition.get("status"), "Unknown")
    return "Unknown"


def _roles(node: dict[str, Any]) -> list[str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    return roles or ["worker"]


def summarize(snapshot: Snapshot, claim: tuple[str, str] | None = None) -> dict[str, Any]:
    nodes = []
    for node in sorted(snapshot.nodes, key=lambda n: (n.get("metadata") or {}).get("name", "")):
        status = node.get("status") or {}
        allocatable = (status.get("allocatable") or {}).get(names.GPU_RESOURCE, "0")
        nodes.append(
            {
                "name": (node.get("metadata") or {}).get("name", "?"),
                "status": _ready(node),
                "roles": _roles(node),
                "version": (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
                "gpus": int(allocatable) if str(allocatable).isdigit() else 0,
            }
        )
    addons = []
    for addon in (names.FLANNEL, names.DEVICE_PLUGIN):
        ds = next(
            (
                d
                for d in snapshot.daemonsets
                if (d.get("metadata") or {}).get("name") == addon.daemonset
                and (d.get("metadata") or {}).get("namespace") == addon.namespace
            ),
            None,
        )
        status = (ds or {}).get("status") or {}
        addons.append(
            {
                "name": addon.title,
                "daemonset": f"{addon.namespace}/{addon.daemonset}",
                "present": ds is not None,
                "desired": int(status.get("desiredNumberScheduled") or 0),
                "ready": int(status.get("numberReady") or 0),
            }
        )
    storage = None
    if claim is not None:
        namespace, name = claim
        found = next(
            (
                c
                for c in snapshot.claims
                if (c.get("metadata") or {}).get("name") == name
                and (c.get("metadata") or {}).get("namespace") == namespace
            ),
            None,
        )
        storage = {
            "claim": f"{namespace}/{name}",
            "phase": ((found or {}).get("status") or {}).get("phase", "missing") if found else "missing",
            "volume": ((found or {}).get("spec") or {}).get("volumeName", ""),
            "capacity": (((found or {}).get("status") or {}).get("capacity") or {}).get("storage", ""),
        }
    return {
        "nodes": nodes,
        "ready_nodes": sum(1 for n in nodes if n["status"] == "Ready"),
        "gpus": sum(n["gpus"] for n in nodes),
        "addons": addons,
        "storage": storage,
    }


def one_line(summary: dict[str, Any]) -> str:
    """'4/4 nodes Ready, 10 GPUs, flannel 4/4, NVIDIA device plugin 2/2, claim default/pyctl-shared Bound'"""
    parts = [f"{summary['ready_nodes']}/{len(summary['nodes'])} nodes Ready", f"{summary['gpus']} GPUs"]
    for addon in summary["addons"]:
        if addon["present"]:
            parts.append(f"{addon['name']} {addon['ready']}/{addon['desired']} ready")
    if summary["storage"]:
        parts.append(f"claim {summary['storage']['claim']} {summary['storage']['phase']}")
    return ", ".join(parts)

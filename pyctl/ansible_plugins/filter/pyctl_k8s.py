"""Filters the verify phase uses to judge the cluster with pyctl's own code (pyctl.k8s.health).

    {{ kubectl_json | pyctl_cluster_problems(expectations) }}      list of {subject, message, severity}
    {{ kubectl_json | pyctl_verify_pod_problems(pod_names) }}      list of {subject, message, severity}
    {{ nvidia_smi_l_stdout | pyctl_gpu_count }}                    int

`kubectl_json` is the output of `kubectl get ... -o json` (text or parsed). The expectations are
{nodes: {node: host}, gpus: {node: count}, claim: {namespace, name} or null}.
"""

from __future__ import annotations

import json
from typing import Any

DOCUMENTATION = """
name: pyctl_cluster_problems
short_description: Judge a cluster snapshot against the inventory's expectations (pyctl.k8s.health).
"""


def _plain(value: Any) -> Any:
    """Ansible hands tagged and lazy containers; the judgement wants plain JSON-like data."""
    if isinstance(value, (str, bytes, bytearray)):
        return json.loads(value) if value else {}
    return json.loads(json.dumps(value, default=str))


def _items(kubectl_json: Any) -> list[dict[str, Any]]:
    data = _plain(kubectl_json)
    if isinstance(data, dict) and "items" in data:
        return list(data.get("items") or [])
    if isinstance(data, list):
        return data
    return [data] if isinstance(data, dict) and data else []


def cluster_problems(kubectl_json: Any, expectations: Any) -> list[dict[str, str]]:
    from pyctl.k8s import health

    snapshot = health.Snapshot.from_items(_items(kubectl_json))
    expect = health.Expectations.from_dict(_plain(expectations))
    return [p.to_dict() for p in health.judge(snapshot, expect)]


def verify_pod_problems(kubectl_json: Any, expected: Any) -> list[dict[str, str]]:
    from pyctl.k8s import health

    pods = [i for i in _items(kubectl_json) if i.get("kind", "Pod") == "Pod"]
    return [p.to_dict() for p in health.verify_pod_problems(pods, [str(n) for n in _plain(expected)])]


def gpu_count(nvidia_smi_l: Any) -> int:
    from pyctl.k8s import gpus

    return gpus.count(str(nvidia_smi_l or ""))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "pyctl_cluster_problems": cluster_problems,
            "pyctl_verify_pod_problems": verify_pod_problems,
            "pyctl_gpu_count": gpu_count,
        }

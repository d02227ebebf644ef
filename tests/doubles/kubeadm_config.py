"""Validate kubeadm configuration files the way kubeadm v1.36 would, as far as pyctl's tests need (upstream
source: kubeadm.k8s.io/v1beta4 and kubelet.config.k8s.io/v1beta1 Go types, commits in kubeadm_types.yaml).

Used by the controller-side tests (tests/k8s/test_kubeadm_config.py, checked against the `jsonschema`
package there) and by the kubeadm test double on lab hosts (tests/doubles/fake_kubeadm.py), where only
the standard library and a pure-Python PyYAML are available. Two layers:

- structure: a strict JSON Schema built from kubeadm_types.yaml (the field tables of kubeadm.k8s.io/v1beta4
  and kubelet.config.k8s.io/v1beta1 derived from the Go types): unknown fields, wrong types, bad enum
  values are errors, as kubeadm's strict decoding makes them;
- meaning: the checks kubeadm's validation does on what pyctl sets (CIDRs, addresses, the version, the
  bootstrap token and CA pins of a JoinConfiguration).
"""

from __future__ import annotations

import ipaddress
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TYPES_FILE = Path(__file__).resolve().parent / "kubeadm_types.yaml"
TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
CA_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
DURATION = r"^(0|-?([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+)$"
TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
QUANTITY = {
    "anyOf": [{"type": "string", "pattern": r"^[+-]?[0-9.]+([eE][+-]?[0-9]+|[numkKMGTPE]i?)?$"}, {"type": "number"}]
}


@cache
def _types(path: str = str(TYPES_FILE)) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _field_schema(spec: str) -> dict[str, Any]:
    spec = spec.strip()
    if spec.startswith("[]"):
        return {"type": "array", "items": _field_schema(spec[2:])}
    if spec.startswith("map[") and spec.endswith("]"):
        return {"type": "object", "additionalProperties": _field_schema(spec[4:-1])}
    if spec.startswith("enum:"):
        return {"type": "string", "enum": spec[5:].split("|")}
    simple = {
        "string": {"type": "string"},
        "bool": {"type": "boolean"},
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "duration": {"type": "string", "pattern": DURATION},
        "time": {"type": "string", "pattern": TIME},
        "quantity": QUANTITY,
        "any": {},
    }
    if spec in simple:
        return dict(simple[spec])
    return {"$ref": f"#/$defs/{spec}"}


def schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict JSON Schema (draft 2020-12) of one document kind."""
    data = _types()
    if kind not in data["documents"].get(api_version, []):
        raise KeyError(f"{api_version} {kind}")
    defs = {}
    for name, fields in data["types"].items():
        defs[name] = {
            "type": "object",
            "properties": {field: _field_schema(str(spec)) for field, spec in fields.items()},
            "additionalProperties": False,
        }
    top = dict(defs[kind])
    top["properties"] = {
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        **top["properties"],
    }
    top["required"] = ["apiVersion", "kind"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **top, "$defs": defs}


# --- a small validator for the subset of JSON Schema `schema()` uses (no jsonschema on lab hosts) ----


def schema_problems(instance: Any, node: dict[str, Any], root: dict[str, Any], where: str = "") -> list[str]:
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:
        options = [schema_problems(instance, option, root, where) for option in node["anyOf"]]
        return (
            [] if any(not o for o in options) else [f"{where or '.'}: {instance!r} matches none of the allowed forms"]
        )
    problems: list[str] = []
    label = where or "."
    if "const" in node and instance != node["const"]:
        return [f"{label}: must be {node['const']!r}, not {instance!r}"]
    kind = node.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    if kind and not checks[kind](instance):
        return [f"{label}: must be a {kind}, not {type(instance).__name__} {instance!r}"]
    if "enum" in node and instance not in node["enum"]:
        return [f"{label}: {instance!r} is not one of {', '.join(map(repr, node['enum']))}"]
    if "pattern" in node and isinstance(instance, str) and not re.search(node["pattern"], instance):
        return [f"{label}: {instance!r} is not in the expected form"]
    if kind == "object":
        props = node.get("properties", {})
        for required in node.get("required", []):
            if required not in instance:
                problems.append(f"{label}: {required} is missing")
        extra = node.get("additionalProperties", True)
        for key, value in instance.items():
            path = f"{where}.{key}"
            if key in props:
                problems += schema_problems(value, props[key], root, path)
            elif extra is False:
                problems.append(f"{path}: unknown field")
            elif isinstance(extra, dict):
                problems += schema_problems(value, extra, root, path)
    if kind == "array" and "items" in node:
        for index, item in enumerate(instance):
            problems += schema_problems(item, node["items"], root, f"{where}[{index}]")
    return problems


# --- kubeadm's meaning checks on what pyctl sets -------------------------------------------------


def _cidr(value: Any, label: str) -> tuple[Any, list[str]]:
    try:
        return ipaddress.ip_network(str(value), strict=True), []
    except ValueError:
        return None, [f"{label}: {value!r} is not a valid CIDR"]


def meaning_problems(doc: dict[str, Any]) -> list[str]:
    kind = doc.get("kind")
    problems: list[str] = []
    if kind == "ClusterConfiguration":
        networking = doc.get("networking") or {}
        pod, p1 = (
            _cidr(networking.get("podSubnet"), ".networking.podSubnet") if networking.get("podSubnet") else (None, [])
        )
        svc, p2 = (
            _cidr(networking.get("serviceSubnet"), ".networking.serviceSubnet")
            if networking.get("serviceSubnet")
            else (None, [])
        )
        problems += p1 + p2
        if pod is not None and svc is not None and pod.version == svc.version and pod.overlaps(svc):
            problems.append(f".networking: podSubnet {pod} overlaps serviceSubnet {svc}")
        version = doc.get("kubernetesVersion")
        if version is not None and not re.match(r"^v\d+\.\d+\.\d+$", str(version)):
            problems.append(f".kubernetesVersion: {version!r} is not a version like v1.36.1")
    if kind == "InitConfiguration":
        address = (doc.get("localAPIEndpoint") or {}).get("advertiseAddress")
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(f".localAPIEndpoint.advertiseAddress: {address!r} is not an IP address")
        for index, token in enumerate(doc.get("bootstrapTokens") or []):
            if "token" in token and not TOKEN.match(str(token["token"])):
                problems.append(
                    f".bootstrapTokens[{index}].token: not a bootstrap token ([a-z0-9]{{6}}.[a-z0-9]{{16}})"
                )
    if kind == "JoinConfiguration":
        discovery = doc.get("discovery") or {}
        bootstrap = discovery.get("bootstrapToken")
        if not bootstrap and not discovery.get("file"):
            problems.append(".discovery: neither bootstrapToken nor file is set")
        if bootstrap:
            if not TOKEN.match(str(bootstrap.get("token", ""))):
                problems.append(".discovery.bootstrapToken.token: not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})")
            if bootstrap.get("unsafeSkipCAVerification"):
                problems.append(".discovery.bootstrapToken.unsafeSkipCAVerification: pyctl never skips CA pinning")
            hashes = bootstrap.get("caCertHashes") or []
            if not hashes:
                problems.append(".discovery.bootstrapToken.caCertHashes: empty (the CA would not be pinned)")
            for index, value in enumerate(hashes):
                if not CA_HASH.match(str(value)):
                    problems.append(
                        f".discovery.bootstrapToken.caCertHashes[{index}]: {value!r} is not sha256:<64 hex>"
                    )
            endpoint = str(bootstrap.get("apiServerEndpoint", ""))
            if not re.match(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$", endpoint):
                problems.append(f".discovery.bootstrapToken.apiServerEndpoint: {endpoint!r} is not host:port")
    return problems


def problems(text: str, kinds: tuple[str, ...] | None = None) -> list[str]:
    """Every problem of a kubeadm configuration file; `kinds` lists the kinds it must hold (in any order)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    found: list[str] = []
    seen = []
    for number, doc in enumerate(docs, start=1):
        prefix = f"document {number}"
        if not isinstance(doc, dict):
            found.append(f"{prefix}: not a mapping")
            continue
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        try:
            spec = schema(str(api_version), str(kind))
        except KeyError:
            found.append(f"{prefix}: unknown kind {api_version} {kind}")
            continue
        seen.append(kind)
        found += [f"{prefix} ({kind}): {p}" for p in schema_problems(doc, spec, spec) + meaning_problems(doc)]
    for kind in kinds or ():
        if kind not in seen:
            found.append(f"no {kind} document")
    duplicates = sorted({k for k in seen if seen.count(k) > 1})
    if duplicates:
        found.append(f"more than one {', '.join(duplicates)} document")
    return found

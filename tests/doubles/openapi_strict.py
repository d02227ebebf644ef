"""TEST DOUBLE support: the Kubernetes API server's strict field validation, for the kubectl double's fake
cluster (fake_cluster.py) on lab hosts, where only the standard library is available.

Upstream contract reproduced (Kubernetes 1.36): `kubectl apply` sends `fieldValidation=Strict` (the
default since kubectl 1.27, KEP-2885 "Server Side Unknown Field Validation", GA in 1.27), so the API
server refuses an object that has a field its OpenAPI schema does not know, or a value of the wrong
type, with

    Error from server (BadRequest): error when creating "FILE": DaemonSet in version "v1" cannot be
    handled as a DaemonSet: strict decoding error: unknown field "spec.template.spec.foo"

(staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json strict decoding, wrapped by
staging/src/k8s.io/apiserver/pkg/endpoints/handlers; field paths as in the issues kubernetes/website#52675
and cloud-ark/kubeplus#1381 show them). Missing required fields and values outside an enum are
`The DaemonSet "x" is invalid: spec.selector: Required value` (field.ErrorList from validation).

The schema is the pinned Kubernetes OpenAPI schema as kubernetes-validate ships it (v<version>-local-strict,
generated from the upstream swagger.json): `compile_schema()` runs on the controller, where that package
is installed, and keeps only the definitions the top-level kinds reach, without descriptions; the
result travels to the lab host as JSON and `problems()` walks it there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_KEEP = ("$ref", "type", "properties", "additionalProperties", "items", "required", "enum", "oneOf")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strip(v) for k, v in node.items() if k in _KEEP}
        if "properties" in node:
            out["properties"] = {k: _strip(v) for k, v in node["properties"].items()}
        return out
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def compile_schema(version: str) -> dict[str, Any]:
    """{"version", "kinds": {"<apiVersion>/<kind>": definition}, "defs": {...}} for Kubernetes `version`
    ("1.36.0"), from kubernetes-validate's strict schema of that version (controller side only)."""
    import kubernetes_validate

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    defs = json.loads((folder / "_definitions.json").read_text())["$defs"]
    kinds: dict[str, str] = {}
    for name, node in defs.items():
        for gvk in node.get("x-kubernetes-group-version-kind", []):
            group = f"{gvk['group']}/" if gvk["group"] else ""
            kinds.setdefault(f"{group}{gvk['version']}/{gvk['kind']}", name)
    return {"version": version, "kinds": kinds, "defs": {k: _strip(v) for k, v in defs.items()}}


def write_schema(version: str, path: Path) -> Path:
    path.write_text(json.dumps(compile_schema(version), separators=(",", ":")))
    return path


_GO_TYPES = {"object": "map[string]interface {}", "array": "[]interface {}", "string": "string"}
_GO_TYPES |= {"integer": "int64", "number": "float64", "boolean": "bool"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_ok(value: Any, types: Any) -> bool:
    allowed = types if isinstance(types, list) else [types]
    found = _json_type(value)
    return found in allowed or (found == "integer" and "number" in allowed)


class _Walk:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.unknown: list[str] = []
        self.decode: list[str] = []
        self.invalid: list[str] = []

    def node(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def walk(self, value: Any, schema: dict[str, Any], path: str) -> None:
        schema = self.node(schema)
        if "oneOf" in schema:  # IntOrString, Quantity: any one form is fine
            if not any(_type_ok(value, self.node(o).get("type", [])) for o in schema["oneOf"]):
                self.decode.append(f"json: cannot unmarshal {_json_type(value)} into Go struct field {path or '.'}")
            return
        if "type" in schema and not _type_ok(value, schema["type"]):
            wanted = [t for t in (schema["type"] if isinstance(schema["type"], list) else [schema["type"]])]
            wanted = [t for t in wanted if t != "null"] or ["null"]
            self.decode.append(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field {path or '.'} "
                f"of type {_GO_TYPES.get(wanted[0], wanted[0])}"
            )
            return
        if value is None:
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(f'"{v}"' for v in schema["enum"])
            self.invalid.append(f'{path}: Unsupported value: "{value}": supported values: {allowed}')
        if isinstance(value, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            for required in schema.get("required", []):
                if required not in value:
                    self.invalid.append(f"{path + '.' if path else ''}{required}: Required value")
            for key, item in value.items():
                where = f"{path}.{key}" if path else key
                if props is not None and key in props:
                    self.walk(item, props[key], where)
                elif isinstance(extra, dict):
                    self.walk(item, extra, where)
                elif props is not None or extra is False:
                    self.unknown.append(f'unknown field "{where}"')
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                self.walk(item, schema["items"], f"{path}[{index}]")


def problems(document: dict[str, Any], schema: dict[str, Any], source: str = "-", creating: bool = True) -> str:
    """The API server's answer to applying `document` with fieldValidation=Strict: "" when accepted,
    otherwise kubectl's error line for it."""
    api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
    name = (document.get("metadata") or {}).get("name", "")
    definition = schema["kinds"].get(f"{api_version}/{kind}")
    verb = "creating" if creating else "patching"
    if definition is None:
        return (
            f'error: resource mapping not found for name: "{name}" namespace: "" from "{source}": no matches for '
            f'kind "{kind}" in version "{api_version}"\nensure CRDs are installed first'
        )
    walk = _Walk(schema["defs"])
    walk.walk(document, {"$ref": f"#/$defs/{definition}"}, "")
    version = api_version.rsplit("/", 1)[-1]
    if walk.decode or walk.unknown:
        cause = walk.decode[0] if walk.decode else "strict decoding error: " + ", ".join(walk.unknown)
        return (
            f'Error from server (BadRequest): error when {verb} "{source}": {kind} in version "{version}" cannot be '
            f"handled as a {kind}: {cause}"
        )
    if walk.invalid:
        return f'The {kind} "{name}" is invalid: ' + (
            f"{walk.invalid[0]}" if len(walk.invalid) == 1 else "[" + ", ".join(walk.invalid) + "]"
        )
    return ""

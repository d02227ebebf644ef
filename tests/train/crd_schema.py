"""Validate a custom resource against a pinned CRD's openAPIV3Schema, the way the API server would on create.

The schemas are in tests/fixtures/crds/<project>-<version>/ (see the README there). What is checked:
- the structural schema with jsonschema, strict: an object schema with `properties` and no
  `additionalProperties` gets `additionalProperties: false` (the API server's fieldValidation=Strict,
  which pyctl's client sends, refuses unknown fields instead of pruning them);
- `x-kubernetes-list-type: map` lists: no two items with the same keys;
- the CEL rules (`x-kubernetes-validations`) that apply on create, each written below in Python;
  transition rules (they read `oldSelf`) apply only on update and are skipped. A rule this file does
  not know fails the validation, so a newer schema cannot skip one silently.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "crds"
TRAINER = "kubeflow-trainer-v2.3.0"

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# rule text -> check(value) -> bool, for the create-time rules of the pinned schemas
RULES = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')": lambda v: bool(
        _DNS_1035.match(v["metadata"]["name"])
    ),
    "size(self.metadata.name) <= 63": lambda v: len(v["metadata"]["name"]) <= 63,
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')": lambda v: (
        v == "" or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$", v))
    ),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']": lambda v: (
        v in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue")
    ),
    "has(self.lastUpdatedTime)": lambda v: "lastUpdatedTime" in v,
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)].filter(x, x).size() <= 1": (
        lambda v: sum(k in v for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1
    ),
    "self >= 1": lambda v: v >= 1,
    "!self.exists(c, c == 'node')": lambda v: "node" not in v,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))": lambda v: (
        not (
            (v.get("startupPolicy") or {}).get("startupPolicyOrder") == "InOrder"
            and any("dependsOn" in x for x in v.get("replicatedJobs", []))
        )
    ),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)": lambda v: all(
        not (t.get("metadata") or {}).get("namespace") for t in v.get("templates", [])
    ),
}


@cache
def _load(project: str, plural: str) -> dict[str, Any]:
    return json.loads((CRDS / project / f"{plural}.schema.json").read_text(encoding="utf-8"))


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {k: (v if k == "properties" else _strict(v)) for k, v in schema.items()}
        if "properties" in out:
            out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _walk(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """The list-map and CEL checks, following the value down the schema."""
    for rule in schema.get("x-kubernetes-validations") or []:
        text = " ".join(rule["rule"].split())
        if "oldSelf" in text:
            continue
        check = RULES.get(text)
        if check is None:
            errors.append(f"{path}: no Python for the CEL rule {text!r} (add it to RULES)")
        elif not check(value):
            errors.append(f"{path}: {rule.get('message') or text}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                _walk(sub, value[key], f"{path}.{key}", errors)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                _walk(extra, item, f"{path}.{key}", errors)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = [tuple(item.get(k) for k in keys) for item in value]
            if len(seen) != len(set(seen)):
                errors.append(f"{path}: duplicate items by {keys}")
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", errors)


def validate(document: dict[str, Any], plural: str, project: str = TRAINER) -> None:
    """Raise AssertionError naming every problem of `document` against the pinned CRD `plural`."""
    pinned = _load(project, plural)
    assert document.get("apiVersion") == f"{pinned['group']}/{pinned['version']}", document.get("apiVersion")
    assert document.get("kind") == pinned["kind"], document.get("kind")
    schema = pinned["openAPIV3Schema"]
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft7Validator(_strict(schema)).iter_errors(document)
    ]
    _walk(schema, document, "", errors)
    assert not errors, f"{pinned['kind']} invalid against {project}:\n" + "\n".join(errors)

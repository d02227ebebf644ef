"""Every package, image and manifest a bootstrap pulls, for sites without internet.

One source: each role that downloads something lists it in its vars/main.yml as `_<role>_artifacts`
(a list of {kind, name, version?, source?, checksum?}) written from the role's own variables. This
module renders those lists with Ansible's templating and the same precedence a play uses (the defaults of
the role's dependencies, then its own < inventory variables < role vars), so an inventory that points
images at a mirror lists the mirror.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pyctl.errors import UsageError

KIND_ORDER = ("apt-repository", "package", "image", "manifest", "file")


@dataclass(frozen=True)
class Artifact:
    kind: str
    name: str
    role: str
    version: str = ""
    source: str = ""
    checksum: str = ""

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v}


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from exc


def _trusted(value: Any) -> Any:
    """Ansible 2.19 templates only trusted strings; these come from pyctl's own roles and the inventory."""
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value


def _dependency_defaults(role: Path) -> dict[str, Any]:
    """The defaults of the roles `role` lists in meta/main.yml (the version table comes in this way)."""
    merged: dict[str, Any] = {}
    for dependency in _load(role / "meta" / "main.yml").get("dependencies") or []:
        name = dependency.get("role") if isinstance(dependency, dict) else dependency
        merged.update(_load(role.parent / str(name) / "defaults" / "main.yml"))
    return merged


def collect(roles_dir: Path, inventory_vars: dict[str, Any] | None = None) -> list[Artifact]:
    """The artifacts of every role under `roles_dir`, in kind order, without repeats."""
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    found: list[Artifact] = []
    for role in sorted(p for p in roles_dir.iterdir() if p.is_dir()):
        role_vars = _load(role / "vars" / "main.yml")
        key = f"_{role.name}_artifacts"
        if key not in role_vars:
            continue
        variables = {
            **_dependency_defaults(role),
            **_load(role / "defaults" / "main.yml"),
            **(inventory_vars or {}),
            **role_vars,
        }
        templar = Templar(loader=DataLoader(), variables=_trusted(variables))
        try:
            items = templar.template(_trusted(role_vars[key]))
        except AnsibleError as exc:
            raise UsageError(f"the artifact list of role {role.name} cannot be rendered: {exc.message}") from exc
        for item in items:
            found.append(
                Artifact(
                    kind=str(item["kind"]),
                    name=str(item["name"]),
                    role=role.name,
                    version=str(item.get("version", "")),
                    source=str(item.get("source", "")),
                    checksum=str(item.get("checksum", "")),
                )
            )
    unique = list({(a.kind, a.name, a.version): a for a in found}.values())
    rank = {kind: index for index, kind in enumerate(KIND_ORDER)}
    return sorted(unique, key=lambda a: rank.get(a.kind, len(rank)))


def lines(artifacts: list[Artifact]) -> list[str]:
    """One line per artifact: kind, what to fetch, where it comes from, how to check it."""
    out = []
    for a in artifacts:
        what = f"{a.name}={a.version}" if a.kind == "package" and a.version[:1].isdigit() else a.name
        extra = [] if what != a.name or not a.version else [a.version]
        details = "; ".join(x for x in [*extra, a.source, a.checksum] if x)
        out.append(f"{a.kind:<15} {what}" + (f"  ({details})" if details else ""))
    return out

"""Every package, image and manifest a bootstrap pulls, for sites without internet.

One source: each role that downloads something lists it in its vars/main.yml as `_<role>_artifacts`
(a list of {kind, name, version?, source?, checksum?}) written from the role's own variables. This
module renders those lists with Ansible's templating and the same precedence a play uses (the defaults of
the role's dependencies, then its own < inventory variables < role vars), so an inventory that points
images at a mirror lists the mirror.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
    # What --json adds: an apt repository's deb822 fields (apt) and mirrors_repositories key (mirror_key), the
    # repository a package comes from (repository).
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v and k != "extra"}


def _load(path: Path) -> Any:
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
    """The defaults of the roles `role` lists in meta/main.yml or imports in tasks/main.yml (the version table comes
    in one of these ways)."""
    names = []
    for dependency in _load(role / "meta" / "main.yml").get("dependencies") or []:
        names.append(dependency.get("role") if isinstance(dependency, dict) else dependency)
    for task in _load(role / "tasks" / "main.yml") or []:
        imported = task.get("ansible.builtin.import_role") or task.get("import_role")
        if isinstance(imported, dict) and imported.get("name"):
            names.append(imported["name"])
    merged: dict[str, Any] = {}
    for name in names:
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
                    extra={k: _plain(item[k]) for k in ("apt", "mirror_key", "repository") if k in item},
                )
            )
    unique = list({(a.kind, a.name, a.version): a for a in found}.values())
    rank = {kind: index for index, kind in enumerate(KIND_ORDER)}
    return sorted(unique, key=lambda a: rank.get(a.kind, len(rank)))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def lines(artifacts: list[Artifact]) -> list[str]:
    """One line per artifact: kind, what to fetch, where it comes from, how to check it."""
    out = []
    for a in artifacts:
        what = f"{a.name}={a.version}" if a.kind == "package" and a.version[:1].isdigit() else a.name
        extra = [] if what != a.name or not a.version else [a.version]
        details = "; ".join(x for x in [*extra, a.source, a.checksum] if x)
        out.append(f"{a.kind:<15} {what}" + (f"  ({details})" if details else ""))
    return out


# --- pyctl bootstrap --list-artifacts --json ----------------------------------------------------------------------

SCHEMA_VERSION = 1
MIRROR_VARS = ("mirrors_repositories", "mirrors_registries", "containerd_registry_mirrors")
_ARCHES = ("amd64", "arm64")


def listing(roles_dir: Path, inventory_vars: dict[str, Any] | None = None, settings_from: str = "") -> dict[str, Any]:
    """Everything a mirroring tool needs, as one JSON-ready document (schema in the README, "Mirrors").

    Each apt repository and image names where the hosts get it (the mirror when the inventory sets one) and
    where it comes from upstream (the same settings without mirrors_repositories / mirrors_registries).
    """
    from pyctl import mirrors

    variables = dict(inventory_vars or {})
    configured = collect(roles_dir, variables)
    upstream_vars = {k: v for k, v in variables.items() if k not in MIRROR_VARS}
    upstream = {(a.kind, a.name): a for a in collect(roles_dir, upstream_vars)}
    registry_setting = variables.get("containerd_registry_mirrors", variables.get("mirrors_registries"))
    try:
        registry_mirrors = mirrors.registry_mirrors(registry_setting)
    except ValueError as exc:
        raise UsageError(f"the registry mirrors are not valid: {exc}", hint="run pyctl inventory check") from exc

    repositories = []
    by_repository: dict[str, dict[str, Any]] = {}
    for a in configured:
        if a.kind != "apt-repository":
            continue
        apt = a.extra.get("apt", {})
        up = upstream.get((a.kind, a.name), a).extra.get("apt", apt)
        entry = {
            "name": a.name,
            "role": a.role,
            "hosts": "gpu" if "GPU" in a.version else "all",
            "mirror_key": a.extra.get("mirror_key", ""),
            "uri": apt.get("uri", a.source),
            "suite": apt.get("suite", ""),
            "components": list(apt.get("components", [])),
            "key_url": apt.get("key_url", ""),
            "fingerprint": mirrors.normalize_fingerprint(apt.get("fingerprint", "")),
            "mirrored": apt.get("uri") != up.get("uri") or apt.get("key_url") != up.get("key_url"),
            "upstream": {
                "uri": up.get("uri", ""),
                "key_url": up.get("key_url", ""),
                "fingerprint": mirrors.normalize_fingerprint(up.get("fingerprint", "")),
            },
            "packages": [],
        }
        repositories.append(entry)
        by_repository[a.name] = entry

    distribution_packages = []
    images = []
    files = []
    for a in configured:
        if a.kind == "package":
            version = a.version if a.version[:1].isdigit() else None
            package = {"name": a.name, "version": version}
            if version is None:
                package["note"] = a.version
            repository = by_repository.get(a.extra.get("repository") or a.source)
            if repository is not None:
                repository["packages"].append(package)
            else:
                distribution_packages.append({"name": a.name, "role": a.role})
        elif a.kind == "image":
            for name in (n.strip() for n in a.name.split(",")):
                registry, repository, tag, digest = mirrors.split_image(name)
                mirror = registry_mirrors.get(registry) or registry_mirrors.get("_default")
                image: dict[str, Any] = {
                    "image": name,
                    "registry": registry,
                    "repository": repository,
                    "tag": tag or None,
                    "digest": digest or None,
                    "role": a.role,
                    "used_by": a.source,
                    "mirror": None
                    if mirror is None
                    else {"url": mirror.url, "reference": mirror.reference(repository, tag)},
                }
                if not tag and not digest:
                    image["note"] = a.version
                images.append(image)
        elif a.kind == "manifest":
            files.append(
                {
                    "kind": "manifest",
                    "name": a.name.split()[0],
                    "role": a.role,
                    "url": a.source,
                    "checksum": a.checksum.split()[0] if a.checksum else "",
                    "downloaded": "not downloaded" not in a.name,
                }
            )
    for repository in repositories:
        files.append(
            {
                "kind": "apt-key",
                "name": f"{repository['name']} signing key",
                "role": repository["role"],
                "url": repository["key_url"],
                "checksum": f"gpg-fingerprint:{repository['fingerprint']}",
                "downloaded": True,
            }
        )
    return {
        "schema": SCHEMA_VERSION,
        "settings_from": settings_from,
        "placeholders": {
            "distribution": sorted(_codenames(roles_dir)),
            "codename": _codenames(roles_dir),
            "arch": list(_ARCHES),
        },
        "apt_repositories": repositories,
        "distribution_packages": distribution_packages,
        "images": images,
        "files": files,
    }


def _codenames(roles_dir: Path) -> dict[str, list[str]]:
    """{distribution: [codename]} the roles support (galaxy_info.platforms of the containerd role)."""
    platforms = (_load(roles_dir / "containerd" / "meta" / "main.yml").get("galaxy_info") or {}).get("platforms", [])
    return {str(p["name"]).lower(): [str(v) for v in p.get("versions", [])] for p in platforms}

"""Mirror settings: where the apt repositories and container registries a bootstrap pulls from are mirrored.

Two inventory variables (usually group_vars/all/mirrors.yml), read by the roles and by pyctl:

    mirrors_repositories:            # apt repositories the roles add; each key optional
      kubernetes: {url: URL, key_url: URL, fingerprint: HEX}
      docker: {...}
      nvidia: {...}
    mirrors_registries:              # container registries; key = the registry as image references name it
      registry.k8s.io: https://mirror.example
      docker.io: {url: https://mirror.example, ca: /etc/ssl/mirror.pem, skip_verify: false, override_path: false}

Unset (the default), everything comes from upstream exactly as without mirrors. This module validates the
settings (`pyctl inventory check`), writes containerd's hosts.toml text for a registry mirror (the containerd
role's filter pyctl_registry_hosts) and says where an image is pulled from (`--list-artifacts`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REPOSITORIES_VAR = "mirrors_repositories"
REGISTRIES_VAR = "mirrors_registries"

# The apt repositories the roles add, and the layout a mirror keeps below its url (the same as upstream's).
REPOSITORIES: dict[str, str] = {
    "kubernetes": "pkgs.k8s.io of the minor (role kubernetes): URIs <url>, Suites / (flat)",
    "docker": "download.docker.com (role containerd): URIs <url>/<debian|ubuntu>, Suites <codename>, Components stable",
    "nvidia": "NVIDIA's container toolkit (role containerd, GPU hosts): URIs <url>/<amd64|arm64>, Suites / (flat)",
}
_REPOSITORY_KEYS = ("url", "key_url", "fingerprint")
_REGISTRY_KEYS = ("url", "ca", "skip_verify", "override_path")
# The registries pyctl's roles and manifests pull from (any other registry host may be mirrored too).
KNOWN_REGISTRIES = ("registry.k8s.io", "ghcr.io", "nvcr.io", "docker.io")
# containerd's name for the upstream of docker.io (containerd docs/hosts.md).
_UPSTREAM_SERVER = {"docker.io": "https://registry-1.docker.io"}
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*$")
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{40}$")
# The first line of every hosts.toml pyctl writes: the containerd role removes the files it wrote that no
# mirror asks for any more, and leaves other files in config_path alone.
HOSTS_TOML_MARKER = "# pyctl: registry mirror"


@dataclass(frozen=True)
class MirrorProblem:
    variable: str
    message: str


@dataclass(frozen=True)
class RegistryMirror:
    registry: str
    url: str
    ca: str = ""
    skip_verify: bool = False
    override_path: bool = False

    @property
    def server(self) -> str:
        """The registry's own endpoint, tried after the mirror (empty for _default: the image's own registry)."""
        if self.registry == "_default":
            return ""
        return _UPSTREAM_SERVER.get(self.registry, f"https://{self.registry}")

    def reference(self, repository: str, tag: str) -> str:
        """Where a mirroring tool puts `repository:tag` so that this mirror serves it (`host[/prefix]/repo:tag`)."""
        parts = urlsplit(self.url)
        prefix = parts.path.rstrip("/")
        if self.override_path:
            prefix = prefix.removeprefix("/v2")
        return f"{parts.netloc}{prefix}/{repository}" + (f":{tag}" if tag else "")


def normalize_fingerprint(value: Any) -> str:
    """gpg prints fingerprints in groups of four ("DE15 B144 ..."): compare them without spaces, upper case."""
    return str(value).replace(" ", "").upper()


def url_problem(value: Any) -> str:
    """Why `value` is not a usable http(s) URL ('' when it is)."""
    text = str(value) if value is not None else ""
    if not isinstance(value, str) or not text:
        return f"{value!r} is not a URL: write it as https://mirror.example/path"
    if any(c.isspace() for c in text):
        return f"{text!r} contains spaces: write the URL without them (%20 if the path really has one)"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        return f"{text!r} is not an http(s) URL: write it as https://{text.split('://')[-1]}"
    host = parts.hostname or ""
    if not host or not (_HOSTNAME.match(host) or _is_ip(host)):
        return f"{text!r} has no valid host: write it as https://mirror.example/path"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{text!r} has an invalid port: use a number 1-65535"
    if parts.query or parts.fragment:
        return f"{text!r} has a query or fragment: give the plain URL"
    return ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def registry_name_problem(name: Any) -> str:
    text = str(name)
    if text == "_default":
        return ""
    if "://" in text or "/" in text:
        return f"{text!r} is not a registry name: use the host as image references name it (docker.io, ghcr.io)"
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return f"{text!r} has an invalid port: use host:port with a number 1-65535"
    if not (_HOSTNAME.match(host) and "." in host) and not _is_ip(host) and host != "localhost":
        return f"{text!r} is not a registry host name (docker.io, registry.k8s.io, mirror.example:5000)"
    if text != text.lower():
        return f"{text!r} must be lower case, as in image references: {text.lower()}"
    return ""


def repository_problems(value: Any) -> list[MirrorProblem]:
    """Every problem in a `mirrors_repositories` value, each naming the variable and what to write instead."""
    if value is None or value == {}:
        return []
    if not isinstance(value, dict):
        return [MirrorProblem(REPOSITORIES_VAR, f"must be a mapping of {', '.join(REPOSITORIES)} to {{url, ...}}")]
    problems = []
    for name, entry in value.items():
        var = f"{REPOSITORIES_VAR}.{name}"
        if name not in REPOSITORIES:
            problems.append(MirrorProblem(var, f"unknown repository {name!r}: pyctl adds {', '.join(REPOSITORIES)}"))
            continue
        if not isinstance(entry, dict):
            problems.append(MirrorProblem(var, "must be a mapping {url, key_url, fingerprint}"))
            continue
        for key in sorted(set(entry) - set(_REPOSITORY_KEYS)):
            problems.append(MirrorProblem(f"{var}.{key}", f"unknown key: use {', '.join(_REPOSITORY_KEYS)}"))
        if "url" not in entry:
            problems.append(MirrorProblem(f"{var}.url", f"missing: the mirror's URL ({REPOSITORIES[name]})"))
        for key in ("url", "key_url"):
            if key in entry and (message := url_problem(entry[key])):
                problems.append(MirrorProblem(f"{var}.{key}", message))
        if "fingerprint" in entry and not _FINGERPRINT.match(normalize_fingerprint(entry["fingerprint"])):
            problems.append(
                MirrorProblem(
                    f"{var}.fingerprint",
                    f"{entry['fingerprint']!r} is not a key fingerprint: give the 40 hex digits gpg --show-keys "
                    "prints (spaces allowed)",
                )
            )
    return problems


def registry_problems(value: Any) -> list[MirrorProblem]:
    """Every problem in a `mirrors_registries` value."""
    if value is None or value == {}:
        return []
    if not isinstance(value, dict):
        return [MirrorProblem(REGISTRIES_VAR, "must be a mapping of registry name to mirror URL (or {url, ca, ...})")]
    problems = []
    for name, entry in value.items():
        var = f"{REGISTRIES_VAR}.{name}"
        if message := registry_name_problem(name):
            problems.append(MirrorProblem(var, message))
            continue
        if isinstance(entry, dict):
            for key in sorted(set(entry) - set(_REGISTRY_KEYS)):
                problems.append(MirrorProblem(f"{var}.{key}", f"unknown key: use {', '.join(_REGISTRY_KEYS)}"))
            for key in ("skip_verify", "override_path"):
                if key in entry and not isinstance(entry[key], bool):
                    problems.append(MirrorProblem(f"{var}.{key}", f"{entry[key]!r} is not true or false"))
            if "ca" in entry and not (isinstance(entry["ca"], str) and entry["ca"].startswith("/")):
                problems.append(MirrorProblem(f"{var}.ca", f"{entry['ca']!r} must be an absolute path on the hosts"))
            url = entry.get("url")
            if url is None:
                problems.append(MirrorProblem(f"{var}.url", "missing: the mirror's URL (https://mirror.example)"))
                continue
        else:
            url = entry
        if message := url_problem(url):
            problems.append(MirrorProblem(var if not isinstance(entry, dict) else f"{var}.url", message))
    return problems


def registry_mirrors(value: Any) -> dict[str, RegistryMirror]:
    """The valid `mirrors_registries` as {registry: RegistryMirror}; raises ValueError naming the first problem."""
    problems = registry_problems(value)
    if problems:
        raise ValueError(f"{problems[0].variable}: {problems[0].message}")
    mirrors = {}
    for name, entry in (value or {}).items():
        data = entry if isinstance(entry, dict) else {"url": entry}
        mirrors[str(name)] = RegistryMirror(
            registry=str(name),
            url=str(data["url"]).rstrip("/"),
            ca=str(data.get("ca") or ""),
            skip_verify=bool(data.get("skip_verify", False)),
            override_path=bool(data.get("override_path", False)),
        )
    return mirrors


def hosts_toml(mirror: RegistryMirror) -> str:
    """containerd's hosts.toml for one registry (containerd docs/hosts.md): the mirror first, the registry after.

    The mirror may resolve tags (capabilities pull and resolve: a private mirror the site trusts); the
    registry itself stays the `server`, tried when the mirror fails (an air-gapped site never reaches it).
    """
    lines = [f"{HOSTS_TOML_MARKER} for {mirror.registry} (role containerd, from {REGISTRIES_VAR}); rewritten by pyctl."]
    if mirror.server:
        lines.append(f"server = {json.dumps(mirror.server)}")
    lines += ["", f"[host.{json.dumps(mirror.url)}]", '  capabilities = ["pull", "resolve"]']
    if mirror.ca:
        lines.append(f"  ca = {json.dumps(mirror.ca)}")
    if mirror.skip_verify:
        lines.append("  skip_verify = true")
    if mirror.override_path:
        lines.append("  override_path = true")
    return "\n".join(lines) + "\n"


def hosts_toml_files(value: Any, config_path: str) -> dict[str, str]:
    """{path: content} of the hosts.toml files for `mirrors_registries` under containerd's config_path."""
    base = str(config_path).rstrip("/")
    return {
        # A registry with a port keeps its `host:port` directory name (containerd docs/hosts.md, Port Handling).
        f"{base}/{name}/hosts.toml": hosts_toml(mirror)
        for name, mirror in registry_mirrors(value).items()
    }


def split_image(image: str) -> tuple[str, str, str, str]:
    """(registry, repository, tag, digest) of an image reference, with containerd's defaults (docker.io, library/)."""
    rest, _, digest = image.partition("@")
    name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1 :]
    first, _, remainder = name.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = "docker.io", name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository, tag, digest

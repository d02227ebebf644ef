"""The cluster inventory: loaded with Ansible's own inventory plugins, then validated.

`check(path)` never touches a host. It returns the cluster (hosts, groups, settings) and every
problem found, each naming the host and the field, with a line number where the file gives one.
`load(path)` returns the cluster or raises InventoryError with those problems.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pyctl import rolespecs
from pyctl.errors import InventoryError

# Our groups, and names users bring from other installers or type by mistake.
CONTROL_PLANE = "control_plane"
WORKERS = "workers"
NFS_SERVER = "nfs_server"
OUR_GROUPS = (CONTROL_PLANE, WORKERS, NFS_SERVER)
_GROUP_ALIASES = {
    "master": CONTROL_PLANE,
    "masters": CONTROL_PLANE,
    "controller": CONTROL_PLANE,
    "controlplane": CONTROL_PLANE,
    "kube_control_plane": CONTROL_PLANE,
    "kube-master": CONTROL_PLANE,
    "kube_master": CONTROL_PLANE,
    "worker": WORKERS,
    "nodes": WORKERS,
    "node": WORKERS,
    "kube_node": WORKERS,
    "kube-node": WORKERS,
    "nfs": NFS_SERVER,
    "nfs_servers": NFS_SERVER,
    "storage": NFS_SERVER,
}

# Cluster settings read from the `all` group, with their defaults.
DEFAULT_SETTINGS: dict[str, Any] = {
    "pod_cidr": "10.244.0.0/16",
    "service_cidr": "10.96.0.0/12",
    "kubernetes_version": "1.36",
    "nfs_export_path": "/srv/pyctl",
    "nfs_allowed_cidr": "",  # empty: the network of the cluster hosts' addresses
    "cluster_name": "",  # empty: the control plane host's inventory name
}
_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KUBERNETES_VERSION = re.compile(r"^1\.(\d+)(\.\d+)?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
# Ansible parses INI values with ast.literal_eval, so `True`/`False` arrive as bools.
_YAML_SUFFIXES = (".yml", ".yaml", ".json")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, named so the user can find and fix it."""

    field: str
    message: str
    host: str | None = None
    line: int | None = None
    group: str | None = None

    def __str__(self) -> str:
        where = []
        if self.line:
            where.append(f"line {self.line}")
        if self.host:
            where.append(f"host {self.host}")
        if self.group:
            where.append(f"group {self.group}")
        where.append(self.field)
        return f"{': '.join(where)}: {self.message}"


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    groups: tuple[str, ...]
    gpu: bool
    vars: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None


@dataclass(frozen=True)
class Cluster:
    path: Path
    hosts: tuple[Host, ...]
    settings: dict[str, Any]

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts if name in h.groups]

    @property
    def control_plane(self) -> Host:
        return self.group(CONTROL_PLANE)[0]

    @property
    def name(self) -> str:
        """The cluster's name: `cluster_name`, else the control plane host's inventory name."""
        return self.settings.get("cluster_name") or self.control_plane.name.lower()

    @property
    def workers(self) -> list[Host]:
        return self.group(WORKERS)

    @property
    def nodes(self) -> list[Host]:
        """The Kubernetes nodes: the control plane first, then the workers, each once."""
        seen: dict[str, Host] = {}
        for host in [*self.group(CONTROL_PLANE), *self.workers]:
            seen.setdefault(host.name, host)
        return list(seen.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "hosts": [
                {"name": h.name, "address": h.address, "groups": list(h.groups), "gpu": h.gpu} for h in self.hosts
            ],
            "settings": dict(self.settings),
        }


@dataclass
class CheckResult:
    path: Path
    cluster: Cluster | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems and self.cluster is not None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "valid": self.ok}
        if self.cluster is not None:
            out.update(self.cluster.to_dict())
        out["problems"] = [{k: v for k, v in asdict(p).items() if v is not None} for p in self.problems]
        return out


def load(path: str | os.PathLike[str], cache_dir: Path | None = None) -> Cluster:
    """Return the validated cluster, or raise InventoryError carrying every problem.

    With `cache_dir`, a cluster validated before from byte-identical files (the inventory, the
    group_vars/ and host_vars/ beside it, the same pyctl and ansible-core) is read back instead
    of being parsed again; anything changed means a full check.
    """
    source = Path(path).expanduser()
    key = _fingerprint(source) if cache_dir is not None else None
    if key is not None and cache_dir is not None:
        cached = _read_cached(cache_dir / f"{key}.json")
        if cached is not None:
            return cached
    result = check(source)
    if not result.ok:
        raise InventoryError(str(path), result.problems)
    assert result.cluster is not None
    if key is not None and cache_dir is not None:
        _write_cached(cache_dir / f"{key}.json", result.cluster)
    return result.cluster


def _fingerprint(source: Path) -> str | None:
    import hashlib
    import importlib.util

    from pyctl import __version__

    # Ansible's release file names its version: hashing it costs less than importlib.metadata's
    # scan of every installed distribution (0.02 s of each start).
    spec = importlib.util.find_spec("ansible")
    if spec is None or spec.origin is None:
        return None
    try:
        digest = hashlib.sha256(f"{__version__}|{source.resolve()}".encode())
        digest.update(Path(spec.origin).with_name("release.py").read_bytes())
        digest.update(source.read_bytes())
        for spec in rolespecs.spec_files():  # what the roles accept is part of the check
            digest.update(spec.read_bytes())
        for folder in ("group_vars", "host_vars"):
            base = source.resolve().parent / folder
            if base.is_dir():
                for item in sorted(base.rglob("*")):
                    if item.is_file():
                        digest.update(str(item.relative_to(base.parent)).encode() + b"\0" + item.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:32]


def _read_cached(path: Path) -> Cluster | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        hosts = tuple(
            Host(h["name"], h["address"], tuple(h["groups"]), bool(h["gpu"]), h.get("vars", {})) for h in data["hosts"]
        )
        return Cluster(Path(data["path"]), hosts, dict(data["settings"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cached(path: Path, cluster: Cluster) -> None:
    import json

    data = cluster.to_dict()
    for entry, host in zip(data["hosts"], cluster.hosts, strict=True):
        entry["vars"] = host.vars
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    except (OSError, TypeError, ValueError):
        path.unlink(missing_ok=True)


def check(path: str | os.PathLike[str]) -> CheckResult:
    source = Path(path).expanduser()
    problems: list[Problem] = []
    if not source.exists():
        return CheckResult(source, None, [Problem("file", f"{source} does not exist")])
    if source.is_dir():
        return CheckResult(source, None, [Problem("file", f"{source} is a directory; give the inventory file")])
    try:
        text = source.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return CheckResult(source, None, [Problem("file", "is not text: not an inventory")])
    except OSError as exc:
        return CheckResult(source, None, [Problem("file", f"cannot be read: {exc.strerror}")])
    if not [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", ";", "---"))]:
        return CheckResult(source, None, [Problem("file", "is empty: it defines no hosts")])

    source = source.resolve()
    parse_problem = _parse_problem(source, text)
    if parse_problem is not None:
        return CheckResult(source, None, [parse_problem])

    hosts_vars, all_vars, lines = _load_with_ansible(source)
    if not hosts_vars:
        return CheckResult(source, None, [Problem("hosts", "no hosts are defined: not an inventory?")])

    hosts: list[Host] = []
    for name, (groups, hvars) in hosts_vars.items():
        address = str(hvars.get("ansible_host", name))
        hosts.append(Host(name, address, tuple(groups), _gpu_value(hvars.get("gpu", False)) is True, hvars))
        problems.extend(_host_problems(name, address, hvars, lines.get(name, {})))

    settings = {key: all_vars.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
    settings = {k: (str(v) if v is not None else "") for k, v in settings.items()}
    cluster = Cluster(source, tuple(hosts), settings)
    problems.extend(_group_problems(cluster, _all_group_names(hosts_vars), text))
    problems.extend(_address_problems(cluster))
    problems.extend(_settings_problems(cluster, lines.get("", {})))
    problems.extend(_mirror_problems(all_vars, hosts_vars, lines))
    # What the roles' argument specs refuse (Ansible no longer checks them per host: pyctl/rolespecs.py), unless
    # pyctl's own checks above named the variable already.
    named = {p.field for p in problems}
    problems.extend(
        Problem(variable, message, host=names, line=lines.get(names.split(", ")[0], {}).get(variable))
        for names, variable, message in rolespecs.problems({h.name: h.vars for h in hosts})
        if variable not in named
    )
    return CheckResult(source, cluster, problems)


# --- parsing ------------------------------------------------------------------------------------


def _is_yaml(path: Path, text: str) -> bool:
    if path.suffix.lower() in _YAML_SUFFIXES:
        return True
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    return first.strip() == "---" or (not first.lstrip().startswith("[") and first.rstrip().endswith(":"))


def _parse_problem(path: Path, text: str) -> Problem | None:
    """Parse with Ansible's yaml or ini plugin; return the syntax problem, with its line, if any."""
    from ansible.errors import AnsibleError
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader

    if _is_yaml(path, text):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            return Problem("yaml", f"syntax error: {problem}", line=(mark.line + 1) if mark else None)
        if not isinstance(data, dict):
            kind = type(data).__name__
            return Problem("file", f"is YAML but not an inventory: the top level is a {kind}, not a mapping of groups")
        plugin = _plugin("yaml")
    else:
        plugin = _plugin("ini")
    try:
        plugin.parse(InventoryData(), DataLoader(), str(path), cache=False)
    except AnsibleError as exc:
        cause = exc.__cause__ or exc
        message = getattr(cause, "message", None) or str(cause)
        message = message.removeprefix("Failed to parse inventory: ").strip().rstrip(".")
        kind = "yaml" if plugin.NAME == "yaml" else "ini"
        line = getattr(plugin, "failed_line", None)
        if kind == "ini" and "not enough values to unpack" in message:
            message = "a section header is not closed with ']'"
        return Problem(kind, f"not a valid inventory: {message}", line=line)
    return None


def _plugin(name: str) -> Any:
    """Ansible's own inventory plugin; the INI one remembers the line it failed on."""
    from ansible.plugins.loader import inventory_loader

    plugin = inventory_loader.get(name)
    if name == "ini":
        original = plugin._parse

        def _parse(lines: list[str]) -> None:
            try:
                original(lines)
            except Exception:
                origin = getattr(plugin, "_origin", None)
                plugin.failed_line = getattr(origin, "line_num", None)
                raise

        plugin._parse = _parse
    return plugin


def _load_with_ansible(
    path: Path,
) -> tuple[dict[str, tuple[list[str], dict[str, Any]]], dict[str, Any], dict[str, dict[str, int]]]:
    """Every host's groups and merged variables (inventory, group_vars/, host_vars/), the `all` vars,
    and the line each value came from (key "" holds the `all` vars' lines)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    lines: dict[str, dict[str, int]] = {}
    manager = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=manager)
    hosts: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for host in manager.get_hosts():
        groups = sorted(g.name for g in host.get_groups() if g.name not in ("all", "ungrouped"))
        hvars = variables.get_vars(host=host, include_hostvars=False)
        hosts[host.name] = (groups, {k: _plain(v) for k, v in hvars.items() if _kept(k)})
        lines[host.name] = {k: line for k, v in hvars.items() if (line := _line_of(v))}
    # The `all` vars: the inventory's own, then group_vars/all/ next to it (files win, as in a play).
    from ansible.vars.plugins import get_vars_from_inventory_sources

    all_group = manager.groups["all"]
    all_vars = {k: v for k, v in all_group.get_vars().items()}
    all_vars.update(get_vars_from_inventory_sources(loader, [str(path)], [all_group], "task"))
    lines[""] = {k: line for k, v in all_vars.items() if (line := _line_of(v))}
    all_vars = {k: _plain(v) for k, v in all_vars.items()}
    return hosts, all_vars, lines


_SECRET_NAME = re.compile(r"pass(word)?|secret|token|private_key_data|vault", re.IGNORECASE)
_ANSIBLE_INTERNAL = ("ansible_facts", "inventory_", "group_names", "groups", "omit", "playbook_dir")


def _kept(name: str) -> bool:
    """Host variables pyctl keeps: not Ansible's own bookkeeping, never anything secret-named."""
    return not name.startswith(_ANSIBLE_INTERNAL) and not _SECRET_NAME.search(name)


def _all_group_names(hosts_vars: dict[str, tuple[list[str], dict[str, Any]]]) -> set[str]:
    return {g for groups, _ in hosts_vars.values() for g in groups}


def _plain(value: Any) -> Any:
    """Ansible 2.19 tags values; give callers plain Python types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _line_of(value: Any) -> int | None:
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - a future ansible-core
        return None
    origin = Origin.get_tag(value)
    return getattr(origin, "line_num", None) if origin else None


# --- validation ---------------------------------------------------------------------------------


def _gpu_value(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _host_problems(name: str, address: str, hvars: dict[str, Any], lines: dict[str, int]) -> list[Problem]:
    problems = []
    if "gpu" in hvars and _gpu_value(hvars["gpu"]) is None:
        problems.append(
            Problem(
                "gpu",
                f"{hvars['gpu']!r} is not a boolean (use gpu=true or gpu=false)",
                host=name,
                line=lines.get("gpu"),
            )
        )
    if not _valid_address(address):
        problems.append(
            Problem(
                "ansible_host",
                f"{address!r} is not a valid IP address or host name",
                host=name,
                line=lines.get("ansible_host"),
            )
        )
    port = hvars.get("ansible_port")
    if port is not None:
        try:
            valid = 0 < int(port) < 65536
        except (TypeError, ValueError):
            valid = False
        if not valid:
            problems.append(Problem("ansible_port", f"{port!r} is not a port number (1-65535)", host=name))
    return problems


def _valid_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        # Something that looks like a dotted quad but is not one is a typo, not a host name.
        if re.fullmatch(r"[\d.]+", address):
            return False
        return bool(_HOSTNAME.match(address))
    return True


def _group_problems(cluster: Cluster, groups: set[str], text: str) -> list[Problem]:
    problems = []
    for group in sorted(groups - set(OUR_GROUPS)):
        meant = _GROUP_ALIASES.get(group.lower())
        if meant is None:
            close = difflib.get_close_matches(group.lower(), OUR_GROUPS, n=1, cutoff=0.75)
            meant = close[0] if close else None
        if meant is not None:
            problems.append(
                Problem("groups", f"unknown group {group!r}: did you mean {meant!r}?", line=_group_line(text, group))
            )
    control = cluster.group(CONTROL_PLANE)
    if not control:
        problems.append(Problem("groups", f"no control plane: put exactly one host in the {CONTROL_PLANE!r} group"))
    elif len(control) > 1:
        names = ", ".join(h.name for h in control)
        problems.append(
            Problem("groups", f"{len(control)} hosts in {CONTROL_PLANE!r} ({names}): exactly one is supported")
        )
    nfs = cluster.group(NFS_SERVER)
    if len(nfs) > 1:
        names = ", ".join(h.name for h in nfs)
        problems.append(Problem("groups", f"{len(nfs)} hosts in {NFS_SERVER!r} ({names}): at most one is supported"))
    return problems


def _group_line(text: str, group: str) -> int | None:
    patterns = (rf"^\s*\[{re.escape(group)}(:\w+)?\]", rf"^\s*{re.escape(group)}\s*:")
    for number, line in enumerate(text.splitlines(), start=1):
        if any(re.match(p, line) for p in patterns):
            return number
    return None


def _address_problems(cluster: Cluster) -> list[Problem]:
    problems = []
    seen: dict[tuple[str, int], str] = {}
    for host in cluster.hosts:
        key = (host.address.lower(), int(host.vars.get("ansible_port", 22) or 22))
        if key in seen:
            problems.append(
                Problem("ansible_host", f"address {host.address} is also used by host {seen[key]}", host=host.name)
            )
        else:
            seen[key] = host.name
    return problems


def _network(value: str, name: str, lines: dict[str, int]) -> tuple[Any, Problem | None]:
    line = lines.get(name)
    try:
        return ipaddress.ip_network(value, strict=True), None
    except ValueError as exc:
        try:
            suggestion = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return None, Problem(name, f"{value!r} is not a valid CIDR (for example 10.244.0.0/16)", line=line)
        del exc
        return None, Problem(name, f"{value!r} has host bits set: did you mean {suggestion}?", line=line)


def _settings_problems(cluster: Cluster, lines: dict[str, int]) -> list[Problem]:
    problems: list[Problem] = []
    settings = cluster.settings
    pod, problem = _network(settings["pod_cidr"], "pod_cidr", lines)
    problems.extend([problem] if problem else [])
    service, problem = _network(settings["service_cidr"], "service_cidr", lines)
    problems.extend([problem] if problem else [])
    if pod is not None and service is not None and pod.version == service.version and pod.overlaps(service):
        problems.append(
            Problem("pod_cidr", f"pod_cidr {pod} overlaps service_cidr {service}: pick ranges that do not overlap")
        )
    for net, name in ((pod, "pod_cidr"), (service, "service_cidr")):
        if net is None:
            continue
        for host in cluster.hosts:
            if host.ip is not None and host.ip.version == net.version and host.ip in net:
                problems.append(
                    Problem(
                        name,
                        f"{name} {net} contains the host's address {host.ip}: choose a range your hosts do not use",
                        host=host.name,
                    )
                )
    if settings["nfs_allowed_cidr"]:
        allowed, problem = _network(settings["nfs_allowed_cidr"], "nfs_allowed_cidr", lines)
        if problem:
            problems.append(problem)
        elif allowed is not None and allowed.prefixlen == 0:
            problems.append(
                Problem(
                    "nfs_allowed_cidr",
                    f"{allowed} exports to everyone: give the cluster hosts' network",
                    line=lines.get("nfs_allowed_cidr"),
                )
            )
    version = settings["kubernetes_version"]
    if not _KUBERNETES_VERSION.match(version):
        problems.append(
            Problem(
                "kubernetes_version",
                f"{version!r} is not a Kubernetes version like 1.36 or 1.36.2",
                line=lines.get("kubernetes_version"),
            )
        )
    name = settings.get("cluster_name", "")
    if name and not _CLUSTER_NAME.match(name):
        problems.append(
            Problem(
                "cluster_name",
                f"{name!r} is not a valid cluster name (lowercase letters, digits and '-', at most 63)",
                line=lines.get("cluster_name"),
            )
        )
    export = settings["nfs_export_path"]
    if not PurePosixPath(export).is_absolute() or export == "/":
        problems.append(
            Problem(
                "nfs_export_path",
                f"{export!r} must be an absolute path other than /",
                line=lines.get("nfs_export_path"),
            )
        )
    return problems


def _mirror_problems(
    all_vars: dict[str, Any],
    hosts_vars: dict[str, tuple[list[str], dict[str, Any]]],
    lines: dict[str, dict[str, int]],
) -> list[Problem]:
    """The mirror settings (pyctl.mirrors): checked once for the `all` group, and again for each host whose
    group_vars or host_vars give it other ones (that host is named)."""
    from pyctl import mirrors

    checks = (
        (mirrors.REPOSITORIES_VAR, mirrors.repository_problems),
        (mirrors.REGISTRIES_VAR, mirrors.registry_problems),
        ("containerd_registry_mirrors", mirrors.registry_problems),
    )
    problems: list[Problem] = []
    for variable, judge in checks:
        shared = all_vars.get(variable)
        if isinstance(shared, str) and "{{" in shared:
            continue
        for found in judge(shared):
            problems.append(Problem(found.variable, found.message, line=lines.get("", {}).get(variable), group="all"))
        for host, (_, hvars) in hosts_vars.items():
            value = hvars.get(variable)
            if variable not in hvars or value == shared or (isinstance(value, str) and "{{" in value):
                continue
            for found in judge(value):
                line = lines.get(host, {}).get(variable)
                problems.append(Problem(found.variable, found.message, host=host, line=line))
    return problems


def default_nfs_allowed_cidr(cluster: Cluster) -> str | None:
    """The smallest network (at most /24) holding every host's IPv4 address; None if any is a name."""
    ips = [h.ip for h in cluster.hosts]
    if not ips or any(ip is None or ip.version != 4 for ip in ips):
        return None
    network = ipaddress.ip_network(f"{ips[0]}/24", strict=False)
    while not all(ip in network for ip in ips):
        network = network.supernet()
    return str(network)

"""Job records: what `pyctl train status|logs|cancel` read from another shell.

Each job lives in `settings.state_dir / "jobs" / <job id>/` (directory 0700):

    job.json          the record below (written atomically, under a lock: the supervisor and
                      `cancel` both update it)
    output.log        the merged log: every line of every node, prefixed `[host] ` (SSH) or `[node i] `
                      (Kubernetes, when followed)
    supervisor.log    the SSH supervisor's own messages (start, stop, why)
    launch/<rank>-<host>.json  what was started on each host (SSH): argv, env, cwd (no secrets: keys
                      are never part of a launch)
    manifests/*.yaml  what was submitted to Kubernetes

The record is workload-neutral: `workload` is "ddp" or "distdgl"; a job is a list of nodes, each
started by one `launch/<rank>-<host>.json` (SSH) or one pod (Kubernetes).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pyctl.config import Settings
from pyctl.errors import UsageError
from pyctl.remote import Target

STATES = ("starting", "queued", "running", "succeeded", "failed", "cancelled")  # queued: Kueue holds it
FINAL_STATES = ("succeeded", "failed", "cancelled")


def new_job_id(workload: str, now: float | None = None) -> str:
    """`<workload>-<yymmdd>-<hhmmss>-<4 hex>`: sortable, unique, and a valid Kubernetes name (<= 63)."""
    stamp = time.strftime("%y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{workload}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class NodeRecord:
    """One node of a job: an inventory host (SSH) or one completion index (Kubernetes)."""

    rank: int
    name: str  # inventory host name, or the pod's name once known
    address: str = ""
    exit_code: int | None = None
    pgid: int | None = None  # SSH: the job's process group on that host


def target_to_dict(target: Target) -> dict[str, Any]:
    """An SSH target as `job.json` holds it (its notes are for the preflight, not for the record)."""
    data = asdict(target)
    data.pop("notes", None)
    data["key_files"], data["known_hosts"] = list(target.key_files), list(target.known_hosts)
    return data


def target_from_dict(data: dict[str, Any]) -> Target:
    values = dict(data)
    for key in ("key_files", "known_hosts"):
        values[key] = tuple(values.get(key) or ())
    return Target(**values)


@dataclass
class SshInfo:
    """How an SSH job reaches its hosts: `job.json`'s "ssh" object. Key *paths*, never keys."""

    user: str = ""
    targets: list[Target] = field(default_factory=list)  # node 0 first
    wrapper_python: str = ""  # the interpreter that runs hostwrap.py (node 0's)
    grace_s: float = 15.0  # SIGTERM to SIGKILL on each host
    job_dirs: dict[str, str] = field(default_factory=dict)  # host -> its job directory, once started
    not_stopped: list[str] | None = None  # cancel without a supervisor: hosts it could not reach
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra,
            "user": self.user,
            "targets": [target_to_dict(t) for t in self.targets],
            "wrapper_python": self.wrapper_python,
            "grace_s": self.grace_s,
        }
        if self.job_dirs:
            data["job_dirs"] = dict(self.job_dirs)
        if self.not_stopped is not None:
            data["not_stopped"] = list(self.not_stopped)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SshInfo:
        known = {"user", "targets", "wrapper_python", "grace_s", "job_dirs", "not_stopped"}
        return cls(
            user=str(data.get("user", "")),
            targets=[target_from_dict(t) for t in data.get("targets", [])],
            wrapper_python=str(data.get("wrapper_python", "")),
            grace_s=float(data.get("grace_s", 15.0)),
            job_dirs=dict(data.get("job_dirs") or {}),
            not_stopped=data.get("not_stopped"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class K8sInfo:
    """Where a Kubernetes job lives: `job.json`'s "k8s" object (the kubeconfig's *path*)."""

    kubeconfig: str
    namespace: str
    name: str
    kind: str = "indexed-job"  # indexed-job | pytorchjob | trainjob
    queue: str | None = None  # Kueue LocalQueue
    start_timeout_s: float | None = None  # --follow: pods must have started by then (None: the default)
    image: str | None = None  # image, claim and its mount: what `pyctl train fetch` runs its pod with
    claim: str | None = None
    claim_mount: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read

    _OPTIONAL: ClassVar[tuple[str, ...]] = ("queue", "start_timeout_s", "image", "claim", "claim_mount")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra,
            "kubeconfig": self.kubeconfig,
            "namespace": self.namespace,
            "kind": self.kind,
            "name": self.name,
        }
        data.update({key: getattr(self, key) for key in self._OPTIONAL})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> K8sInfo:
        known = {"kubeconfig", "namespace", "name", "kind", *cls._OPTIONAL}
        missing = [key for key in ("kubeconfig", "namespace", "name") if key not in data]
        if missing:
            raise ValueError(f'its "k8s" object lacks {", ".join(missing)}')
        return cls(
            kubeconfig=str(data["kubeconfig"]),
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            kind=str(data.get("kind") or "indexed-job"),
            **{key: data.get(key) for key in cls._OPTIONAL},
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass
class JobRecord:
    id: str
    workload: str  # ddp | distdgl
    backend: str  # ssh | k8s
    created: float
    state: str = "starting"
    exit_code: int | None = None
    message: str = ""
    nodes: list[NodeRecord] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # what the user asked for
    ssh: SshInfo | None = None  # backend "ssh" (a dict is read as one)
    k8s: K8sInfo | None = None  # backend "k8s" (a dict is read as one)
    supervisor_pid: int | None = None
    started: float | None = None
    finished: float | None = None
    summary: dict[str, Any] | None = None  # the payload's PYCTL_SUMMARY, when it printed one

    def __post_init__(self) -> None:
        if isinstance(self.ssh, dict):
            self.ssh = SshInfo.from_dict(self.ssh) if self.ssh else None
        if isinstance(self.k8s, dict):
            self.k8s = K8sInfo.from_dict(self.k8s) if self.k8s else None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The `job.json` format: "ssh" and "k8s" are objects, `{}` for the other backend."""
        data = {f: copy.deepcopy(getattr(self, f)) for f in self.__dataclass_fields__}
        data["nodes"] = [asdict(n) for n in self.nodes]
        data["ssh"] = self.ssh.to_dict() if self.ssh else {}
        data["k8s"] = self.k8s.to_dict() if self.k8s else {}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known and k != "nodes"}
        return cls(nodes=nodes, **values)


class JobStore:
    """The jobs directory: create, find (by id or unique prefix), read and update records."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.state_dir / "jobs"

    def dir(self, job_id: str) -> Path:
        return self.root / job_id

    def create(self, record: JobRecord) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = self.dir(record.id)
        directory.mkdir(mode=0o700)
        (directory / "output.log").touch(mode=0o600)
        self._write(directory, record)
        return directory

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "job.json").is_file())

    def resolve(self, name: str) -> str:
        """The job id `name` means: an exact id, a unique prefix, or 'last' (the newest job)."""
        ids = self.ids()
        if name == "last" and ids:
            return max(ids, key=lambda i: self.load(i).created)
        if name in ids:
            return name
        matches = [i for i in ids if i.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            hint = f"known jobs: {', '.join(ids[-5:])}" if ids else "no jobs yet: start one with 'pyctl train ddp'"
            raise UsageError(f"no job {name!r} in {self.root}", hint=hint)
        raise UsageError(f"{name!r} matches {len(matches)} jobs: {', '.join(matches)}", hint="give more of the id")

    def load(self, job_id: str) -> JobRecord:
        path = self.dir(job_id) / "job.json"
        try:
            return JobRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"job record {path} cannot be read: {exc}") from exc

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Read, change and write the record under an exclusive lock; returns the new record."""
        directory = self.dir(job_id)
        with self._locked(directory):
            record = self.load(job_id)
            change(record)
            self._write(directory, record)
            return record

    @contextlib.contextmanager
    def _locked(self, directory: Path) -> Iterator[None]:
        fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, directory: Path, record: JobRecord) -> None:
        tmp = directory / f".job.json.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record.to_dict(), handle, indent=2)
            handle.write("\n")
        tmp.replace(directory / "job.json")

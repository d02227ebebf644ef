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
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyctl.config import Settings
from pyctl.errors import UsageError

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
    ssh: dict[str, Any] = field(default_factory=dict)  # user, remote_dir, python, grace_s, inventory
    k8s: dict[str, Any] = field(default_factory=dict)  # kubeconfig path, namespace, kind, name
    supervisor_pid: int | None = None
    started: float | None = None
    finished: float | None = None
    summary: dict[str, Any] | None = None  # the payload's PYCTL_SUMMARY, when it printed one

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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

"""A training job's lifecycle, one small interface per backend: start, follow, refresh, cancel, logs.

`pyctl.commands.train` parses and prints; what it asks of a job goes through a `Backend`:

- `ssh.SshBackend`: a detached supervisor (`supervisor.py`, `sshjob.Supervisor`) runs the job on the
  hosts over SSH, each host's process tree under `hostwrap.py`; the supervisor is the one owner of
  stopping the whole job, each hostwrap of its host's tree (through `payloads/distdgl/proctree.py`);
- `k8s.K8sBackend`: the job's manifests are submitted to Kubernetes and read back from the API
  (`kubeclient.Client`, with `pyctl.train.kueue` for admission and `podstart.py` for pods that do not start).

Each method returns the job's record (`pyctl.train.jobs.JobRecord`, as `job.json` holds it) and prints
nothing: lines of the job's log go to a `write` callback, notes for the user to a `say` callback. How a
job is prepared for its backend (the per-workload preflight, the record, the launches or manifests) is
in each backend module's `prepare_ddp` / `prepare_distdgl`, which return a `Prepared`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyctl.train.jobs import JobRecord, JobStore

Say = Callable[[str], None]
Write = Callable[[str], None]


@dataclass
class Prepared:
    """A job ready to start: its record, what its backend starts (SSH launches or manifests), and notes."""

    record: JobRecord
    work: Any  # ssh: list[NodeLaunch]; k8s: {name: manifest text}
    processes: str = ""  # what runs, for the start message
    notes: list[str] = field(default_factory=list)  # what the preflight found (versions), to tell the user


class Backend(Protocol):
    """What `pyctl train` does with a job, whichever backend runs it."""

    store: JobStore
    interrupt_note: str  # how Ctrl-C in --follow cancels ("" or " on every host")

    def start(self, prepared: Prepared, say: Say) -> JobRecord:
        """Record the job and start it; returns the record (state starting, running or queued)."""
        ...

    def follow(self, job_id: str, write: Write, say: Say) -> JobRecord:
        """Write the job's merged log until it ends; returns its final record. Ctrl-C propagates."""
        ...

    def unfollowed_lines(self, job_id: str) -> list[str]:
        """After an interrupted `follow` and a cancel: the log lines `follow` had not written yet."""
        ...

    def refresh(self, record: JobRecord) -> JobRecord:
        """The record as the job stands now (read from the supervisor's liveness or the API)."""
        ...

    def cancel(self, record: JobRecord, wait: bool = True) -> JobRecord:
        """Stop the job everywhere; returns the record (cancelled, or as it stood when `wait` ran out)."""
        ...

    def logs(self, record: JobRecord, write: Write) -> None:
        """Write the job's merged log so far."""
        ...


def for_record(store: JobStore, record: JobRecord) -> Backend:
    """The backend that runs `record`'s job."""
    if record.backend == "k8s":
        from pyctl.train.backends.k8s import K8sBackend

        return K8sBackend(store)
    from pyctl.train.backends.ssh import SshBackend

    return SshBackend(store)


def accuracy(record: JobRecord) -> float | None:
    """The payload's test accuracy: `test_accuracy` (DDP) or `test_acc` (DistDGL)."""
    summary = record.summary or {}
    value = summary.get("test_accuracy", summary.get("test_acc"))
    return value if isinstance(value, (int, float)) else None

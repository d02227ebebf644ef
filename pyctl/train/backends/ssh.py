"""The SSH backend's lifecycle: prepare (preflight, record, launches), start the detached supervisor,
follow `output.log`, notice a dead supervisor, cancel. How the supervisor runs the hosts is in
`pyctl.train.backends.sshjob`; what each host runs is the workload's (`ddp.ssh_launches`, `distdgl.ssh_launches`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyctl import inventory, remote
from pyctl.config import Settings
from pyctl.train import logs
from pyctl.train.backends import Prepared, Say, Write, sshjob
from pyctl.train.jobs import JobRecord, JobStore, NodeRecord, SshInfo
from pyctl.train.launch import NodeLaunch
from pyctl.train.request import iface_of
from pyctl.train.workloads import ddp, distdgl

STARTING_GRACE_S = 10  # a job whose supervisor pid is not recorded yet is still starting for this long


# --- prepare: per workload ----------------------------------------------------------------------------


def ddp_pythons(job: ddp.DdpJob) -> dict[str, str]:
    return {h.name: job.request.python or str(h.vars.get("train_python") or ddp.DEFAULT_PYTHON) for h in job.hosts}


def _script(launch: NodeLaunch, first_line: str) -> str:
    return (
        f"#!/bin/sh\n{first_line}\n# The job directory holds {', '.join(sorted(launch.files))}; pyctl runs"
        " this under hostwrap.py (one process group, stopped as a whole).\n"
        f"{launch.shell()}\n"
    )


def render_ddp(job: ddp.DdpJob, job_id: str) -> dict[str, str]:
    """`--render`: each host's command, as a shell script; nothing is checked or started."""
    files = {}
    for launch in ddp.ssh_launches(job, job_id, ddp_pythons(job)):
        first = f"# pyctl train ddp {job_id}: node {launch.rank} of {job.nodes}, host {launch.host} ({launch.address})."
        files[f"{launch.rank}-{launch.host}.sh"] = _script(launch, first)
    return files


def render_distdgl(job: distdgl.DistDglJob, job_id: str, project_dir: Path) -> dict[str, str]:
    """`--render`: the job's spec and each machine's command; nothing is checked or started."""
    files = {distdgl.SPEC_NAME: distdgl.spec_text(job, job_id, python=None)}
    for launch in distdgl.ssh_launches(job, job_id, project_dir):
        first = (
            f"# pyctl train distdgl {job_id}: machine {launch.rank} of {job.num_parts}, host "
            f"{launch.host} ({launch.address})."
        )
        files[f"{launch.rank}-{launch.host}.sh"] = _script(launch, first)
    return files


def _targets(settings: Settings, cluster: inventory.Cluster, request: Any, hosts: Any) -> tuple[str, list[Any]]:
    user, keys = sshjob.identity(settings, cluster, request.ssh_user, request.ssh_key)
    return user, [remote.target_for(h, user=user, key_files=keys) for h in hosts]


def prepare_ddp(settings: Settings, cluster: inventory.Cluster, job: ddp.DdpJob, job_id: str) -> Prepared:
    """Check every host (login, interpreter, interface, with --check-env torch) and build the job's record."""
    pythons = ddp_pythons(job)
    user, targets = _targets(settings, cluster, job.request, job.hosts)
    ifaces = {h.name: job.request.iface or iface_of(h) for h in job.hosts}
    check = job.request.check_env
    versions = sshjob.preflight(
        targets, pythons, ifaces, check, job.env, module=ddp.PREFLIGHT_MODULE, hints=ddp.PREFLIGHT_HINTS
    )
    record = JobRecord(
        id=job_id,
        workload="ddp",
        backend="ssh",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=h.name, address=h.address) for i, h in enumerate(job.hosts)],
        options=job.options,
        ssh=SshInfo(user=user, targets=targets, wrapper_python=pythons[job.hosts[0].name], grace_s=job.request.grace_s),
    )
    notes = ["torch on each host: " + ", ".join(f"{h}={v}" for h, v in versions.items())] if check else []
    launches = ddp.ssh_launches(job, job_id, pythons)
    return Prepared(record, launches, f"{job.world_size} process(es)", notes)


def prepare_distdgl(settings: Settings, cluster: inventory.Cluster, job: distdgl.DistDglJob, job_id: str) -> Prepared:
    """Check every host (login, interpreter, interface, the shared folder, machine 0's graph file; with
    --check-env dgl) and build the job's record."""
    launches = distdgl.ssh_launches(job, job_id, settings.project_dir)
    user, targets = _targets(settings, cluster, job.request, job.hosts)
    pythons = distdgl.pythons(job)
    versions = sshjob.preflight(
        targets,
        pythons,
        distdgl.preflight_ifaces(job),
        job.request.check_env,
        job.env,
        module=distdgl.PREFLIGHT_MODULE,
        hints=distdgl.PREFLIGHT_HINTS,
        extra=distdgl.host_checks(job),
    )
    if len(targets) > 1:
        distdgl.check_shared(targets, job.shared_path, job_id)
    r = job.request
    record = JobRecord(
        id=job_id,
        workload="distdgl",
        backend="ssh",
        created=time.time(),
        nodes=[
            NodeRecord(rank=i, name=h.name, address=a)
            for i, (h, a) in enumerate(zip(job.hosts, job.addresses, strict=True))
        ],
        options=job.options,
        ssh=SshInfo(user=user, targets=targets, wrapper_python=pythons[job.hosts[0].name], grace_s=r.grace_s),
    )
    notes = ["dgl on each host: " + ", ".join(f"{h}={v}" for h, v in versions.items())] if r.check_env else []
    processes = f"{r.num_servers} server(s) and {r.num_trainers} trainer(s) per host"
    return Prepared(record, launches, processes, notes)


# --- the lifecycle ------------------------------------------------------------------------------------


def spawn_supervisor(job_dir: Path) -> int:
    """`python -m pyctl.train.backends.supervisor JOB_DIR` in its own session (it outlives this process); its pid."""
    log = (job_dir / "supervisor.log").open("ab")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyctl.train.backends.supervisor", str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
    finally:
        log.close()
    return process.pid


def job_alive(record: JobRecord) -> bool:
    """Whether the job's supervisor still runs (a job with no recorded supervisor yet: only while young)."""
    if record.supervisor_pid is None:  # between recording the job and recording its supervisor's pid
        return time.time() - record.created < STARTING_GRACE_S
    return sshjob.supervisor_alive(record)


def mark_lost(store: JobStore, record: JobRecord) -> JobRecord:
    """The supervisor died without recording an end: say so (its hosts stopped when its SSH closed)."""

    def change(rec: JobRecord) -> None:
        if not rec.final:
            rec.state, rec.exit_code = "failed", 1
            rec.message = f"the supervisor died before recording how the job ended ('pyctl train logs {rec.id}')"
            rec.finished = time.time()

    return store.update(record.id, change)


class SshBackend:
    """Jobs run on the inventory's hosts by a detached supervisor; the record is its only channel."""

    interrupt_note = " on every host"

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._followed: dict[str, int] = {}  # job id -> bytes of output.log that `follow` wrote

    def start(self, prepared: Prepared, say: Say) -> JobRecord:
        del say  # nothing to say before the job is recorded
        record = prepared.record
        job_dir = self.store.create(record)
        sshjob.write_launches(job_dir, prepared.work)
        pid = spawn_supervisor(job_dir)
        return self.store.update(record.id, lambda rec: setattr(rec, "supervisor_pid", pid))

    def follow(self, job_id: str, write: Write, say: Say) -> JobRecord:
        del say  # the supervisor's own notes are in supervisor.log
        state: dict[str, Any] = {"record": self.store.load(job_id), "checked": 0.0}

        def done() -> bool:
            now = time.monotonic()
            if now - state["checked"] > 0.5:
                state["record"] = self.refresh(self.store.load(job_id))
                state["checked"] = now
            return state["record"].final

        self._followed[job_id] = 0
        for line in logs.follow(self.store.dir(job_id) / "output.log", done):
            self._followed[job_id] += len(line.encode()) + 1
            write(line)
        return self.store.load(job_id)

    def unfollowed_lines(self, job_id: str) -> list[str]:
        path = self.store.dir(job_id) / "output.log"
        return list(logs.follow(path, lambda: True, start=self._followed.get(job_id, 0)))

    def refresh(self, record: JobRecord) -> JobRecord:
        if record.final or job_alive(record):
            return record
        return mark_lost(self.store, record)

    def cancel(self, record: JobRecord, wait: bool = True, timeout: float = 120) -> JobRecord:
        if record.final:
            return record
        if not sshjob.signal_supervisor(record, signal.SIGTERM):
            sshjob.cancel_without_supervisor(self.store, record)
            return self.store.load(record.id)
        deadline = time.monotonic() + timeout
        while wait and time.monotonic() < deadline:
            current = self.store.load(record.id)
            if current.final:
                return current
            if not sshjob.supervisor_alive(current):
                return mark_lost(self.store, current)
            time.sleep(0.3)
        return self.store.load(record.id)

    def logs(self, record: JobRecord, write: Write) -> None:
        with (self.store.dir(record.id) / "output.log").open("rb") as handle:
            for raw in handle:
                write(raw.decode("utf-8", errors="replace").rstrip("\n"))

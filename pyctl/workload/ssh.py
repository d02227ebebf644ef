"""`doctor --workload --backend ssh`: the probe and the DDP step as `pyctl train ddp --backend ssh` jobs.

Each step is a DDP job of `pyctl.train` (the probe is run as a user's `--script`): the same host
selection, login (`--ssh-user`, `--ssh-key`, the cluster's key), interpreter (`--python`,
train_python), interface pinning (train_iface / lab_iface to GLOO_SOCKET_IFNAME and
NCCL_SOCKET_IFNAME), torchrun launch and per-host process groups. The supervisor runs in this process
rather than detached, with a deadline; Ctrl-C stops every host. Both runs are recorded as jobs, so
`pyctl train logs ID` shows what each host printed.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyctl import remote
from pyctl.config import Settings
from pyctl.errors import PyctlError
from pyctl.inventory import Cluster, Host
from pyctl.train import logs
from pyctl.train.backends import sshjob
from pyctl.train.jobs import JobRecord, JobStore, NodeRecord, SshInfo, new_job_id
from pyctl.train.request import iface_of
from pyctl.train.workloads import ddp
from pyctl.workload import verdict
from pyctl.workload.check import DDP_LR, WorkloadRequest, probe_path

PROBE_PORT = ddp.DEFAULT_MASTER_PORT + 1  # + attempt: a retry never meets the first attempt's store
_JOINED = re.compile(r"^\[(?P<host>[^\]]+)\] probe\[\d+\] \S+: joined as ")


@dataclass
class _Context:
    request: WorkloadRequest
    settings: Settings
    cluster: Cluster
    say: Callable[[str], None]
    user: str
    keys: list[Path]
    gpus: int

    def ddp_request(self, hosts: list[Host], **values: Any) -> ddp.DdpRequest:
        r = self.request
        return ddp.DdpRequest(
            inventory=r.inventory,
            backend="ssh",
            hosts=tuple(h.name for h in hosts),
            nproc_per_node=1,
            gpus_per_node=self.gpus,
            ssh_user=r.ssh_user,
            ssh_key=r.ssh_key,
            python=r.python,
            **values,
        )

    def python(self, host: Host) -> str:
        return self.request.python or str(host.vars.get("train_python") or ddp.DEFAULT_PYTHON)


def run(request: WorkloadRequest, settings: Settings, cluster: Cluster, say: Callable[[str], None]) -> dict[str, Any]:
    hosts = list(ddp.select_hosts(ddp.DdpRequest(inventory=request.inventory, hosts=request.hosts), cluster, None))
    user, keys = sshjob.identity(settings, cluster, request.ssh_user, request.ssh_key)
    gpus = 1 if hosts and all(h.gpu for h in hosts) else 0
    ctx = _Context(request, settings, cluster, say, user, keys, gpus)
    names = [h.name for h in hosts]
    # Bad input (a missing interface, the probe file) stops here, before any host is touched.
    ddp.resolve(ctx.ddp_request(hosts, script=probe_path(settings.project_dir)), cluster, settings.project_dir)
    failed = _preflight(ctx, hosts)
    live = [h for h in hosts if h.name not in failed]
    pairs: list[dict[str, Any]] = []
    jobs: list[str] = []
    attempts = 2  # a second one without the nodes the first named as the cause
    for attempt in range(attempts):
        if len(live) < 2:
            break
        say(f"all-reduce between every pair of {len(live)} nodes ({request.size_mib:g} MiB)")
        job_pairs, job_failed, job_id = _probe(ctx, live, attempt)
        jobs.append(job_id)
        if job_pairs is not None:
            pairs = job_pairs
            break
        culprits = {n: why for n, why in job_failed.items() if not why.startswith("not measured")}
        failed.update(culprits)
        live = [h for h in live if h.name not in culprits]
        if not culprits or attempt == attempts - 1:  # nobody to blame, or blamed twice: the rest is unmeasured
            failed.update({n: why for n, why in job_failed.items() if n not in culprits})
            break
    ddp_hosts = [h for h in hosts if h.name not in failed]
    if ddp_hosts:
        say(f"a short DDP run on {len(ddp_hosts)} node(s)")
        result, job_id = _ddp(ctx, ddp_hosts)
        jobs.append(job_id)
    else:
        result = {"loss": None, "passed": False, "reason": "no node could run it"}
    say(f"jobs: {', '.join(jobs)} (pyctl train logs ID shows what each host printed)")
    return verdict.judge(names, pairs, failed, result, min_gbps=request.min_gbps)


# --- step 1: log in and look --------------------------------------------------------------------------


def _preflight(ctx: _Context, hosts: list[Host]) -> dict[str, str]:
    """Each host on its own: a host that cannot be reached or lacks torch fails alone."""

    def one(host: Host) -> str | None:
        try:
            target = remote.target_for(host, user=ctx.user, key_files=ctx.keys)
            sshjob.preflight(
                [target],
                {target.name: ctx.python(host)},
                {host.name: iface_of(host)},
                check_env=True,
                module=ddp.PREFLIGHT_MODULE,
                hints=ddp.PREFLIGHT_HINTS,
            )
        except PyctlError as exc:
            return _without_host(exc.message, host.name)
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
        results = dict(zip([h.name for h in hosts], pool.map(one, hosts), strict=True))
    for name, why in results.items():
        if why:
            ctx.say(f"{name}: failed: {why}")
    return {name: why for name, why in results.items() if why}


def _without_host(message: str, name: str) -> str:
    for prefix in (f"host {name}: ", f"host {name} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


# --- steps 2 and 3: jobs --------------------------------------------------------------------------------


def _probe(ctx: _Context, hosts: list[Host], attempt: int) -> tuple[list[dict[str, Any]] | None, dict[str, str], str]:
    """(pairs, {}) when the probe finished; (None, {node: why}) when it did not."""
    names = [h.name for h in hosts]
    request = ctx.ddp_request(
        hosts,
        script=probe_path(ctx.settings.project_dir),
        script_args=ctx.request.probe_args(names),
        master_port=PROBE_PORT + attempt,
    )
    record, timed_out, job_dir = _run_job(ctx, request, "allreduce", ctx.request.probe_timeout_s)
    summary = record.summary or {}
    if record.state == "succeeded" and summary.get("event") == "allreduce":
        return list(summary.get("pairs") or []), {}, record.id
    output = (job_dir / "output.log").read_text(encoding="utf-8", errors="replace").splitlines()
    errors = _error_lines(output)
    if timed_out:
        joined = {m["host"] for line in output if (m := _JOINED.match(line))}
        why = f"did not join the all-reduce probe within {ctx.request.probe_timeout_s:g} s"
        if not joined:
            why = f"the all-reduce probe timed out after {ctx.request.probe_timeout_s:g} s (no node joined)"
        late = [n for n in names if n not in joined]
        failed = {n: errors.get(n, why) for n in late}
        for name in names:
            if name not in failed:
                failed[name] = f"not measured: {', '.join(late) or 'a node'} did not join in time"
        return None, failed, record.id
    culprits = dict(errors)
    first = re.match(r"^host (\S+) ", record.message or "")
    if first and first[1] in names and first[1] not in culprits:
        culprits[first[1]] = f"the all-reduce probe failed: {_without_host(record.message, first[1])}"
    failed = {n: f"the all-reduce probe failed: {why}" if n in errors else why for n, why in culprits.items()}
    for name in names:
        if name not in failed:
            failed[name] = f"not measured: the all-reduce probe stopped ({record.message})"
    return None, failed, record.id


def _error_lines(output: list[str]) -> dict[str, str]:
    """The first `PYCTL_ERROR` line each host printed, by host."""
    found: dict[str, str] = {}
    for line in output:
        if not line.startswith("[") or "] " not in line:
            continue
        host, _, text = line[1:].partition("] ")
        if text.startswith(logs.ERROR_PREFIX) and host not in found:
            found[host] = text[len(logs.ERROR_PREFIX) :].strip()
    return found


def _ddp(ctx: _Context, hosts: list[Host]) -> tuple[dict[str, Any], str]:
    epochs, batch = ctx.request.ddp_shape(len(hosts))
    request = ctx.ddp_request(hosts, dataset="digits", epochs=epochs, batch_size=batch, lr=DDP_LR)
    record, timed_out, _ = _run_job(ctx, request, "ddp", ctx.request.ddp_timeout_s)
    loss = (record.summary or {}).get("loss")
    threshold = ctx.request.loss_threshold
    if record.state == "succeeded" and isinstance(loss, (int, float)):
        passed = loss <= threshold
        reason = None if passed else f"the training loss {loss:.4g} after {epochs} epochs is above {threshold:g}"
        return {"loss": loss, "passed": passed, "reason": reason}, record.id
    reason = f"timed out after {ctx.request.ddp_timeout_s:g} s" if timed_out else record.message
    return {"loss": None, "passed": False, "reason": f"the DDP run failed: {reason}"}, record.id


def _run_job(ctx: _Context, request: ddp.DdpRequest, workload: str, timeout_s: float) -> tuple[JobRecord, bool, Path]:
    """Start a DDP job and supervise it here until it ends or `timeout_s` passes: (record, timed out, dir)."""
    job = ddp.resolve(request, ctx.cluster, ctx.settings.project_dir)
    job_id = new_job_id(workload)
    pythons = {h.name: ctx.python(h) for h in job.hosts}
    targets = [remote.target_for(h, user=ctx.user, key_files=ctx.keys) for h in job.hosts]
    record = JobRecord(
        id=job_id,
        workload=workload,
        backend="ssh",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=h.name, address=h.address) for i, h in enumerate(job.hosts)],
        options={**job.options, "doctor_workload": True},
        ssh=SshInfo(user=ctx.user, targets=targets, wrapper_python=pythons[job.hosts[0].name], grace_s=5.0),
    )
    store = JobStore(ctx.settings)
    job_dir = store.create(record)
    sshjob.write_launches(job_dir, ddp.ssh_launches(job, job_id, pythons))
    supervisor = sshjob.Supervisor(store, job_id, say=lambda message: ctx.say(f"{job_id}: {message}"))
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        supervisor.stop(f"timed out after {timeout_s:g} s")

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    handlers = _own_signals(supervisor)
    timer.start()
    try:
        supervisor.run()
    finally:
        timer.cancel()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if supervisor.cancelled:
        raise KeyboardInterrupt
    return store.load(job_id), expired.is_set(), job_dir


def _own_signals(supervisor: sshjob.Supervisor) -> dict[int, Any]:
    """Ctrl-C (and SIGTERM, SIGHUP) stop every host through the supervisor; the old handlers are returned."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    supervisor.install_signals()
    return previous

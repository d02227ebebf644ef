"""`pyctl train ddp|status|logs|cancel`: validate, then hand the job to its backend; print what it says."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyctl import console, inventory
from pyctl.config import Settings, load_settings
from pyctl.errors import ExitCode, UsageError
from pyctl.train import ddp, logs
from pyctl.train.jobs import JobRecord, JobStore, NodeRecord, new_job_id


def _say(message: str) -> None:
    console.err().print(f"pyctl train: {message}", markup=False)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- pyctl train ddp --------------------------------------------------------------------------------


def run_ddp(request: ddp.DdpRequest, render_dir: Path | None = None, follow: bool = False) -> int:
    settings = load_settings()
    cluster = inventory.load(request.inventory, cache_dir=settings.state_dir / "cache" / "inventory")
    job = ddp.resolve(request, cluster, settings.project_dir)
    job_id = new_job_id("ddp")
    if render_dir is not None:
        _check_render_dir(render_dir)
    if request.backend == "ssh":
        return _run_ssh(settings, cluster, job, job_id, render_dir, follow)
    return _run_k8s(settings, cluster, job, job_id, render_dir, follow)


def _check_render_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--render {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--render {path} is not empty", hint="give a new or empty folder")


def _write_render(render_dir: Path, files: dict[str, str]) -> None:
    render_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (render_dir / name).write_text(text, encoding="utf-8")
    _say(f"wrote {len(files)} file(s) to {render_dir}; nothing was started")
    for name in files:
        _out(str(render_dir / name))


# --- pyctl train distdgl ----------------------------------------------------------------------------


def run_distdgl(request: Any, render_dir: Path | None = None, follow: bool = False) -> int:
    """Partition a graph and train DistDGL GraphSAGE: every machine runs the start-up step, then launch.py."""
    from pyctl.train import distdgl

    settings = load_settings()
    cluster = inventory.load(request.inventory, cache_dir=settings.state_dir / "cache" / "inventory")
    job = distdgl.resolve(request, cluster, settings.project_dir)
    job_id = new_job_id("distdgl")
    if render_dir is not None:
        _check_render_dir(render_dir)
    if request.backend == "ssh":
        return _run_distdgl_ssh(settings, cluster, job, job_id, render_dir, follow)
    documents = distdgl.render_k8s(job, job_id)
    if render_dir is not None:
        _write_render(render_dir, {f"{name}.yaml": text for name, text in documents.items()})
        return ExitCode.OK
    kubeconfig = _kubeconfig(settings, cluster, request.inventory)
    record = JobRecord(
        id=job_id,
        workload="distdgl",
        backend="k8s",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=f"{job_id}-{i}") for i in range(job.num_parts)],
        options=job.options,
        k8s={
            "kubeconfig": str(kubeconfig),
            "namespace": request.namespace,
            "kind": "indexed-job",
            "name": job_id,
            "queue": request.queue,
            "start_timeout_s": request.start_timeout_s,
        },
    )
    return _submit_k8s(settings, record, documents, follow)


def _run_distdgl_ssh(  # noqa: PLR0917 - one call site, each argument named there
    settings: Settings,
    cluster: inventory.Cluster,
    job: Any,
    job_id: str,
    render_dir: Path | None,
    follow: bool,
) -> int:
    from pyctl import remote
    from pyctl.train import distdgl, sshjob

    launches = distdgl.ssh_launches(job, job_id, settings.project_dir)
    if render_dir is not None:
        files = {distdgl.SPEC_NAME: distdgl.spec_text(job, job_id, python=None)}
        for launch in launches:
            files[f"{launch.rank}-{launch.host}.sh"] = (
                f"#!/bin/sh\n# pyctl train distdgl {job_id}: machine {launch.rank} of {job.num_parts}, host "
                f"{launch.host} ({launch.address}).\n# The job directory holds {', '.join(sorted(launch.files))};"
                " pyctl runs this under hostwrap.py (one process group, stopped as a whole).\n"
                f"{launch.shell()}\n"
            )
        _write_render(render_dir, files)
        return ExitCode.OK
    user, keys = _ssh_identity(settings, cluster, job.request)
    targets = [remote.target_for(h, user=user, key_files=keys) for h in job.hosts]
    versions = distdgl.preflight(job, targets, job_id)
    if job.request.check_env:
        _say("dgl on each host: " + ", ".join(f"{h}={v}" for h, v in versions.items()))
    pythons = distdgl.pythons(job)
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
        ssh={
            "user": user,
            "targets": [sshjob.target_to_dict(t) for t in targets],
            "wrapper_python": pythons[job.hosts[0].name],
            "grace_s": job.request.grace_s,
        },
    )
    r = job.request
    processes = f"{r.num_servers} server(s) and {r.num_trainers} trainer(s) per host"
    return _start_ssh_job(settings, record, launches, processes, follow)


# --- SSH ----------------------------------------------------------------------------------------------


def _ssh_identity(settings: Settings, cluster: inventory.Cluster, request: ddp.DdpRequest) -> tuple[str, list[Path]]:
    from pyctl.train import sshjob

    return sshjob.identity(settings, cluster, request.ssh_user, request.ssh_key)


def _pythons(job: ddp.DdpJob) -> dict[str, str]:
    return {h.name: job.request.python or str(h.vars.get("train_python") or ddp.DEFAULT_PYTHON) for h in job.hosts}


def _run_ssh(  # noqa: PLR0917 - one call site, each argument named there
    settings: Settings,
    cluster: inventory.Cluster,
    job: ddp.DdpJob,
    job_id: str,
    render_dir: Path | None,
    follow: bool,
) -> int:
    from pyctl import remote
    from pyctl.train import sshjob

    pythons = _pythons(job)
    launches = ddp.ssh_launches(job, job_id, pythons)
    if render_dir is not None:
        files = {}
        for launch in launches:
            files[f"{launch.rank}-{launch.host}.sh"] = (
                f"#!/bin/sh\n# pyctl train ddp {job_id}: node {launch.rank} of {job.nodes}, host {launch.host}"
                f" ({launch.address}).\n# The job directory holds {', '.join(sorted(launch.files))}; pyctl runs"
                " this under hostwrap.py (one process group, stopped as a whole).\n"
                f"{launch.shell()}\n"
            )
        _write_render(render_dir, files)
        return ExitCode.OK

    user, keys = _ssh_identity(settings, cluster, job.request)
    targets = [remote.target_for(h, user=user, key_files=keys) for h in job.hosts]
    ifaces = {h.name: job.request.iface or ddp.iface_of(h) for h in job.hosts}
    check, env = job.request.check_env, job.env
    if len(set(pythons.values())) == 1:
        versions = sshjob.preflight(targets, next(iter(pythons.values())), ifaces, check, env)
    else:
        versions = {}
        for target in targets:
            versions.update(sshjob.preflight([target], pythons[target.name], ifaces, check, env))
    if job.request.check_env:
        _say("torch on each host: " + ", ".join(f"{h}={v}" for h, v in versions.items()))

    record = JobRecord(
        id=job_id,
        workload="ddp",
        backend="ssh",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=h.name, address=h.address) for i, h in enumerate(job.hosts)],
        options=job.options,
        ssh={
            "user": user,
            "targets": [sshjob.target_to_dict(t) for t in targets],
            "wrapper_python": pythons[job.hosts[0].name],
            "grace_s": job.request.grace_s,
        },
    )
    processes = f"{job.world_size} process(es)"
    return _start_ssh_job(settings, record, launches, processes, follow)


def _start_ssh_job(settings: Settings, record: JobRecord, launches: list[Any], processes: str, follow: bool) -> int:
    """Record an SSH job, start its detached supervisor, and return its id or follow it (any workload)."""
    from pyctl.train import sshjob

    store = JobStore(settings)
    job_dir = store.create(record)
    sshjob.write_launches(job_dir, launches)
    pid = _spawn_supervisor(job_dir)
    store.update(record.id, lambda rec: setattr(rec, "supervisor_pid", pid))
    hosts = ", ".join(node.name for node in record.nodes)
    _say(f"job {record.id} started on {len(record.nodes)} host(s) ({hosts}), {processes}")
    if not follow:
        _say(f"follow it: pyctl train logs {record.id} --follow; stop it: pyctl train cancel {record.id}")
        _out(record.id)
        return ExitCode.OK
    return _follow(store, record.id)


def _spawn_supervisor(job_dir: Path) -> int:
    log = (job_dir / "supervisor.log").open("ab")
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "pyctl.train.supervisor", str(job_dir)],
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


def _follow(store: JobStore, job_id: str) -> int:
    """Print the merged log until the job ends; Ctrl-C cancels the job (on every host) first."""
    state: dict[str, Any] = {"record": store.load(job_id), "checked": 0.0}

    def done() -> bool:
        now = time.monotonic()
        if now - state["checked"] > 0.5:
            state["record"] = store.load(job_id)
            state["checked"] = now
            if not state["record"].final and not _job_alive(state["record"]):
                state["record"] = _mark_lost(store, state["record"])
        return state["record"].final

    path = store.dir(job_id) / "output.log"
    position = 0
    try:
        with _live_log(state["record"]) as view:
            for line in logs.follow(path, done):
                position += len(line.encode()) + 1
                view.write(line)
    except KeyboardInterrupt:
        _say(f"Ctrl-C: cancelling job {job_id} on every host")
        cancel_job(store, store.load(job_id), wait=True)
        record = store.load(job_id)
        for line in logs.follow(path, lambda: True, start=position):
            _out(line)
        _say(f"job {job_id} {record.state}: {record.message}")
        return ExitCode.INTERRUPTED
    record = store.load(job_id)
    return _report_end(record)


def _live_log(record: JobRecord) -> Any:
    """Where a followed job's lines go: on a terminal, with its progress line below them."""
    from pyctl.train import progress

    tracker = progress.Tracker(record.id, record.workload, progress.epochs_asked(record.options))
    return progress.LiveLog(tracker, console.out(), _out)


def _accuracy(record: JobRecord) -> float | None:
    """The payload's test accuracy: `test_accuracy` (DDP) or `test_acc` (DistDGL)."""
    summary = record.summary or {}
    value = summary.get("test_accuracy", summary.get("test_acc"))
    return value if isinstance(value, (int, float)) else None


def _report_end(record: JobRecord) -> int:
    accuracy = _accuracy(record)
    extra = f"; test accuracy {accuracy}" if accuracy is not None else ""
    _say(f"job {record.id} {record.state}: {record.message}{extra}")
    return int(record.exit_code if record.exit_code is not None else 1)


def _job_alive(record: JobRecord) -> bool:
    if record.backend != "ssh":
        return True
    from pyctl.train import sshjob

    if record.supervisor_pid is None:  # between recording the job and recording its supervisor's pid
        return time.time() - record.created < 10
    return sshjob.supervisor_alive(record)


def _mark_lost(store: JobStore, record: JobRecord) -> JobRecord:
    """The supervisor died without recording an end: say so (its hosts stopped when its SSH closed)."""

    def change(rec: JobRecord) -> None:
        if not rec.final:
            rec.state, rec.exit_code = "failed", 1
            rec.message = f"the supervisor died before recording how the job ended ('pyctl train logs {rec.id}')"
            rec.finished = time.time()

    return store.update(record.id, change)


# --- Kubernetes ----------------------------------------------------------------------------------------


def _run_k8s(  # noqa: PLR0917 - one call site, each argument named there
    settings: Settings,
    cluster: inventory.Cluster,
    job: ddp.DdpJob,
    job_id: str,
    render_dir: Path | None,
    follow: bool,
) -> int:
    from pyctl.train import manifests

    documents = manifests.render_ddp(job, job_id)
    if render_dir is not None:
        _write_render(render_dir, {f"{name}.yaml": text for name, text in documents.items()})
        return ExitCode.OK
    kubeconfig = _kubeconfig(settings, cluster, job.request.inventory)
    record = JobRecord(
        id=job_id,
        workload="ddp",
        backend="k8s",
        created=time.time(),
        nodes=[NodeRecord(rank=i, name=f"{job_id}-{i}") for i in range(job.nodes)],
        options=job.options,
        k8s={
            "kubeconfig": str(kubeconfig),
            "namespace": job.request.namespace,
            "kind": job.request.kind,
            "name": job_id,
            "queue": job.request.queue,
            "start_timeout_s": job.request.start_timeout_s,
            "image": job.image,  # image, claim and its mount: what `pyctl train fetch` runs its pod with
            "claim": job.request.claim,
            "claim_mount": job.request.claim_mount,
        },
    )
    return _submit_k8s(settings, record, documents, follow)


def _kubeconfig(settings: Settings, cluster: inventory.Cluster, inventory_path: Path) -> Path:
    kubeconfig = settings.kubeconfig(cluster.name)
    if not kubeconfig.is_file():
        raise UsageError(
            f"no kubeconfig for cluster {cluster.name} at {kubeconfig}",
            hint=f"run 'pyctl bootstrap -i {inventory_path}' first (it fetches the admin kubeconfig)",
        )
    return kubeconfig


def _submit_k8s(settings: Settings, record: JobRecord, documents: dict[str, str], follow: bool) -> int:
    """Record a Kubernetes job, submit its manifests, and return its id or follow it (any workload)."""
    from pyctl.train import k8s

    store = JobStore(settings)
    client = k8s.Client(Path(record.k8s["kubeconfig"]))
    job_id, namespace = record.id, record.k8s["namespace"]
    for warning in client.check_before_submit(documents, namespace):
        _say(f"warning: {warning}")
    job_dir = store.create(record)
    (job_dir / "manifests").mkdir(mode=0o700)
    for name, text in documents.items():
        (job_dir / "manifests" / f"{name}.yaml").write_text(text, encoding="utf-8")
    try:
        client.submit(documents, namespace)
    except k8s.KubeError as exc:
        reason = f"submit failed: {exc.message}"
        store.update(job_id, lambda rec: _fail(rec, reason))
        raise
    store.update(job_id, lambda rec: setattr(rec, "state", "running"))
    queue = record.k8s.get("queue")
    via = f" through Kueue queue {queue} (it starts when all its pods are admitted)" if queue else ""
    _say(f"job {job_id} submitted: {record.k8s['kind']} {job_id} in namespace {namespace}{via}")
    if not follow:
        _say(f"follow it: pyctl train logs {job_id} --follow; stop it: pyctl train cancel {job_id}")
        _out(job_id)
        return ExitCode.OK
    return _follow_k8s(store, job_id)


def _fail(record: JobRecord, message: str) -> None:
    record.state, record.exit_code, record.message, record.finished = "failed", 1, message, time.time()


def _k8s_client(record: JobRecord) -> Any:
    from pyctl.train import k8s

    path = Path(record.k8s["kubeconfig"])
    if not path.is_file():
        raise UsageError(f"job {record.id}: its kubeconfig {path} is gone", hint="run 'pyctl bootstrap' again")
    return k8s.Client(path)


def _follow_k8s(store: JobStore, job_id: str) -> int:
    record = store.load(job_id)
    client = _k8s_client(record)
    try:
        with _live_log(record) as view:
            outcome = client.follow(record, view.write, say=_say, log_path=store.dir(job_id) / "output.log")
    except KeyboardInterrupt:
        _say(f"Ctrl-C: cancelling job {job_id}")
        cancel_job(store, store.load(job_id), wait=True)
        return ExitCode.INTERRUPTED
    record = store.update(job_id, lambda rec: _apply_outcome(rec, outcome))
    return _report_end(record)


def _apply_outcome(record: JobRecord, outcome: Any) -> None:
    record.state, record.exit_code, record.message = outcome.state, outcome.exit_code, outcome.message
    if outcome.summary is not None:
        record.summary = outcome.summary
    if outcome.state in ("succeeded", "failed", "cancelled"):
        record.finished = record.finished or time.time()


# --- status, logs, cancel ------------------------------------------------------------------------------


def _refresh(store: JobStore, record: JobRecord) -> JobRecord:
    if record.final:
        return record
    if record.backend == "ssh":
        if not _job_alive(record):
            return _mark_lost(store, record)
        return record
    outcome = _k8s_client(record).status(record)
    return store.update(record.id, lambda rec: _apply_outcome(rec, outcome))


def run_status(name: str | None, as_json: bool) -> int:
    settings = load_settings()
    store = JobStore(settings)
    ids = [store.resolve(name)] if name else store.ids()
    records = [_refresh(store, store.load(i)) for i in ids]
    if as_json:
        payload: Any = records[0].to_dict() if name else [r.to_dict() for r in records]
        _out(json.dumps(payload, indent=2))
        return ExitCode.OK
    if not records:
        _say("no jobs yet (start one with 'pyctl train ddp')")
        return ExitCode.OK
    if name:
        _print_record(records[0])
        return ExitCode.OK
    from rich.table import Table

    table = Table(title="training jobs", title_justify="left")
    for column in ("job", "backend", "nodes", "state", "exit", "accuracy", "started"):
        table.add_column(column)
    for rec in records:
        accuracy = _accuracy(rec)
        table.add_row(
            rec.id,
            rec.backend,
            str(len(rec.nodes)),
            rec.state,
            "" if rec.exit_code is None else str(rec.exit_code),
            "" if accuracy is None else f"{accuracy:.4f}",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec.created)),
        )
    console.out().print(table)
    return ExitCode.OK


def _print_record(rec: JobRecord) -> None:
    lines = [
        f"job:      {rec.id} ({rec.workload}, {rec.backend})",
        f"state:    {rec.state}" + (f" (exit code {rec.exit_code})" if rec.exit_code is not None else ""),
    ]
    if rec.message:
        lines.append(f"message:  {rec.message}")
    lines.append(f"created:  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(rec.created))}")
    if rec.finished and rec.started:
        lines.append(f"ran:      {rec.finished - rec.started:.1f} s")
    for node in rec.nodes:
        extra = f" exit {node.exit_code}" if node.exit_code is not None else ""
        group = f" pgid {node.pgid}" if node.pgid else ""
        lines.append(f"node {node.rank}:   {node.name} {node.address}{group}{extra}".rstrip())
    if rec.summary:
        lines.append(f"summary:  {json.dumps(rec.summary)}")
    for line in lines:
        _out(line)


def run_logs(name: str, follow: bool) -> int:
    settings = load_settings()
    store = JobStore(settings)
    job_id = store.resolve(name)
    record = store.load(job_id)
    if record.backend == "k8s":
        client = _k8s_client(record)
        if follow:
            return _follow_k8s(store, job_id)
        client.logs(record, _out)
        return ExitCode.OK
    path = store.dir(job_id) / "output.log"
    if not follow:
        with path.open("rb") as handle:
            for raw in handle:
                _out(raw.decode("utf-8", errors="replace").rstrip("\n"))
        return ExitCode.OK
    return _follow(store, job_id)


def cancel_job(store: JobStore, record: JobRecord, wait: bool = True, timeout: float = 120) -> JobRecord:
    if record.final:
        return record
    if record.backend == "k8s":
        _k8s_client(record).cancel(record)

        def change(rec: JobRecord) -> None:
            rec.state, rec.exit_code, rec.message, rec.finished = "cancelled", 130, "cancelled", time.time()

        return store.update(record.id, change)
    from pyctl.train import sshjob

    if not sshjob.signal_supervisor(record, signal.SIGTERM):
        sshjob.cancel_without_supervisor(store, record)
        return store.load(record.id)
    deadline = time.monotonic() + timeout
    while wait and time.monotonic() < deadline:
        current = store.load(record.id)
        if current.final:
            return current
        if not sshjob.supervisor_alive(current):
            return _mark_lost(store, current)
        time.sleep(0.3)
    return store.load(record.id)


def run_cancel(name: str) -> int:
    settings = load_settings()
    store = JobStore(settings)
    record = store.load(store.resolve(name))
    if record.final:
        _say(f"job {record.id} already {record.state}: nothing to cancel")
        return ExitCode.OK
    record = cancel_job(store, record)
    _say(f"job {record.id} {record.state}: {record.message}")
    if record.ssh.get("not_stopped"):
        return ExitCode.UNREACHABLE
    return ExitCode.OK if record.final else ExitCode.HOST_FAILED


# --- pyctl train report ------------------------------------------------------------------------------


def run_report(name: str, out: Path | None = None) -> int:
    """Print a job's figures table (per epoch, per rank) from its metrics lines; draw them into --out."""
    from pyctl.train import report

    if out is not None:
        report.check_out(out)
    store = JobStore(load_settings())
    record = store.load(store.resolve(name))
    lines = _metric_lines(store, record)
    figures = report.collect(record.id, lines, record.workload)
    if not figures.epochs:
        raise UsageError(
            f"job {record.id} has no epoch metrics in its log",
            hint="the payloads print them once per epoch; a --script prints PYCTL_METRICS lines for this "
            "(see payloads/ddp/README.md)",
        )
    for table in report.tables(figures):
        console.out().print(table)
    if out is not None:
        report.write(figures, out)
        _say(f"wrote {out}")
    return ExitCode.OK


def _metric_lines(store: JobStore, record: JobRecord) -> list[str]:
    """The job's merged log: the recorded one, or (Kubernetes, never followed) its pods' logs."""
    path = store.dir(record.id) / "output.log"
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    lines = text.splitlines()
    if record.backend == "k8s" and "epoch" not in text:
        lines = []
        _k8s_client(record).logs(record, lines.append)
    return lines


# --- pyctl train setup ------------------------------------------------------------------------------


def run_setup(inventory_path: Path, limit: str | None = None, check: bool = False, verbosity: int = 0) -> int:
    """Install the DDP payload's environment on the training hosts (playbooks/train_env.yml)."""
    from pyctl import runner
    from pyctl.commands import playrun
    from pyctl.commands.bootstrap import _check_limit

    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    _check_limit(cluster, limit)
    _say(f"installing the DDP payload's environment on {len(cluster.nodes)} host(s)")
    playrun.run(
        settings,
        "train-setup",
        settings.playbooks_dir / "train_env.yml",
        cluster,
        limit=limit,
        check=check,
        verbosity=verbosity,
        run_dir=runner.new_run_dir(settings, "train-setup"),
        host_count=len(cluster.nodes),
        extravars={"pyctl_project_dir": str(settings.project_dir)},
    )
    _say("the environment is ready; pyctl train ddp --backend ssh uses it by default")
    return ExitCode.OK

"""`pyctl train ddp|distdgl|status|logs|cancel|report|setup`: validate, hand the job to its backend
(`pyctl.train.backends`), print the record it returns."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pyctl import console, inventory
from pyctl.config import Settings, load_settings
from pyctl.errors import ExitCode, UsageError
from pyctl.train import backends
from pyctl.train.backends import Prepared
from pyctl.train.jobs import JobRecord, JobStore, new_job_id
from pyctl.train.workloads import ddp


def _say(message: str) -> None:
    console.err().print(f"pyctl train: {message}", markup=False)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- pyctl train ddp, pyctl train distdgl ------------------------------------------------------------


def run_ddp(request: ddp.DdpRequest, render_dir: Path | None = None, follow: bool = False) -> int:
    """Data-parallel PyTorch training: validate, then render, or prepare and start on the backend."""
    settings = load_settings()
    cluster = inventory.load(request.inventory, cache_dir=settings.state_dir / "cache" / "inventory")
    job = ddp.resolve(request, cluster, settings.project_dir)
    job_id = new_job_id("ddp")
    module = _backend_module(request.backend)
    if render_dir is not None:
        _check_render_dir(render_dir)
        return _write_render(render_dir, module.render_ddp(job, job_id))
    return _start(settings, module.prepare_ddp(settings, cluster, job, job_id), follow)


def run_distdgl(request: Any, render_dir: Path | None = None, follow: bool = False) -> int:
    """Partition a graph and train DistDGL GraphSAGE: every machine runs the start-up step, then launch.py."""
    from pyctl.train.workloads import distdgl

    settings = load_settings()
    cluster = inventory.load(request.inventory, cache_dir=settings.state_dir / "cache" / "inventory")
    job = distdgl.resolve(request, cluster, settings.project_dir)
    job_id = new_job_id("distdgl")
    module = _backend_module(request.backend)
    if render_dir is not None:
        _check_render_dir(render_dir)
        return _write_render(render_dir, module.render_distdgl(job, job_id, settings.project_dir))
    return _start(settings, module.prepare_distdgl(settings, cluster, job, job_id), follow)


def _backend_module(name: str) -> Any:
    if name == "ssh":
        from pyctl.train.backends import ssh

        return ssh
    from pyctl.train.backends import k8s

    return k8s


def _check_render_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--render {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise UsageError(f"--render {path} is not empty", hint="give a new or empty folder")


def _write_render(render_dir: Path, files: dict[str, str]) -> int:
    render_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (render_dir / name).write_text(text, encoding="utf-8")
    _say(f"wrote {len(files)} file(s) to {render_dir}; nothing was started")
    for name in files:
        _out(str(render_dir / name))
    return ExitCode.OK


def _start(settings: Settings, prepared: Prepared, follow: bool) -> int:
    """Start a prepared job on its backend; print its id, or follow it to its end."""
    for note in prepared.notes:
        _say(note)
    store = JobStore(settings)
    backend = backends.for_record(store, prepared.record)
    record = backend.start(prepared, _say)
    if record.backend == "ssh":
        hosts = ", ".join(node.name for node in record.nodes)
        _say(f"job {record.id} started on {len(record.nodes)} host(s) ({hosts}), {prepared.processes}")
    else:
        queue = record.k8s.queue
        via = f" through Kueue queue {queue} (it starts when all its pods are admitted)" if queue else ""
        _say(f"job {record.id} submitted: {record.k8s.kind} {record.id} in namespace {record.k8s.namespace}{via}")
    if not follow:
        _say(f"follow it: pyctl train logs {record.id} --follow; stop it: pyctl train cancel {record.id}")
        _out(record.id)
        return ExitCode.OK
    return _follow(backend, record.id)


def _follow(backend: backends.Backend, job_id: str) -> int:
    """Print the merged log until the job ends; Ctrl-C cancels the job (on every host) first."""
    try:
        with _live_log(backend.store.load(job_id)) as view:
            record = backend.follow(job_id, view.write, _say)
    except KeyboardInterrupt:
        _say(f"Ctrl-C: cancelling job {job_id}{backend.interrupt_note}")
        record = backend.cancel(backend.store.load(job_id), wait=True)
        if record.backend != "ssh":
            return ExitCode.INTERRUPTED
        for line in backend.unfollowed_lines(job_id):
            _out(line)
        record = backend.store.load(job_id)
        _say(f"job {job_id} {record.state}: {record.message}")
        return ExitCode.INTERRUPTED
    return _report_end(record)


def _live_log(record: JobRecord) -> Any:
    """Where a followed job's lines go: on a terminal, with its progress line below them."""
    from pyctl.train import progress

    tracker = progress.Tracker(record.id, record.workload, progress.epochs_asked(record.options))
    return progress.LiveLog(tracker, console.out(), _out)


def _report_end(record: JobRecord) -> int:
    accuracy = backends.accuracy(record)
    extra = f"; test accuracy {accuracy}" if accuracy is not None else ""
    _say(f"job {record.id} {record.state}: {record.message}{extra}")
    return int(record.exit_code if record.exit_code is not None else 1)


# --- status, logs, cancel ------------------------------------------------------------------------------


def _refresh(store: JobStore, record: JobRecord) -> JobRecord:
    return backends.for_record(store, record).refresh(record)


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
        accuracy = backends.accuracy(rec)
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
    record = store.load(store.resolve(name))
    backend = backends.for_record(store, record)
    if follow:
        return _follow(backend, record.id)
    backend.logs(record, _out)
    return ExitCode.OK


def run_cancel(name: str) -> int:
    settings = load_settings()
    store = JobStore(settings)
    record = store.load(store.resolve(name))
    if record.final:
        _say(f"job {record.id} already {record.state}: nothing to cancel")
        return ExitCode.OK
    record = backends.for_record(store, record).cancel(record)
    _say(f"job {record.id} {record.state}: {record.message}")
    if record.ssh is not None and record.ssh.not_stopped:
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
        backends.for_record(store, record).logs(record, lines.append)
    return lines


# --- pyctl train setup ------------------------------------------------------------------------------


def run_setup(inventory_path: Path, limit: str | None = None, check: bool = False, verbosity: int = 0) -> int:
    """Install the DDP payload's environment on the training hosts (playbooks/train_env.yml)."""
    from pyctl import runner
    from pyctl.commands import playrun
    from pyctl.commands.bootstrap import check_limit

    settings = load_settings()
    cluster = inventory.load(inventory_path, cache_dir=settings.state_dir / "cache" / "inventory")
    check_limit(cluster, limit)
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

"""The SSH backend: start one process tree per host over fabric, merge their logs, stop them as one.

How a job runs:

1. `preflight` (in the `pyctl train` process, before anything starts): log in to every host, check the
   interpreter (and, with --check-env, that it imports the workload's module: torch, or dgl), the network
   interface and the workload's own needs (DistDGL: the shared folder, the graph file). Any problem is one
   line and exit 2. Both workloads use this one preflight.
2. The supervisor (`python -m pyctl.train.backends.supervisor JOB_DIR`, detached in its own session, so it
   outlives the shell) logs in again, copies the job's files into `$HOME/.cache/pyctl/jobs/<job>/<host>/`
   on each host and starts `hostwrap.py` there (with `proctree.py`, its process-tree code) on its own SSH
   channel. hostwrap starts the job in a new session (its own process group), writes the group id to
   `pgid`, and stops the whole tree when its standard input closes or it gets SIGTERM/SIGHUP/SIGINT.
3. Every line a host prints goes to `output.log` as `[host] line`.
4. When a host's job exits non-zero, or the supervisor is told to stop (SIGTERM from `pyctl train
   cancel`, Ctrl-C in `--follow`), the supervisor closes the standard input of every other host's
   channel: each hostwrap stops its process group (SIGTERM, SIGKILL after the grace period). Hosts that
   do not confirm in time get `kill -KILL` on their recorded group over a fresh channel. If the
   supervisor itself dies, its SSH connections drop and each hostwrap sees EOF: nothing is orphaned.
   The supervisor is the only one that stops the whole job: it sets PYCTL_SUPERVISED=1 in every host's
   environment, so DistDGL's launch.py stops only its own host's processes when it fails and leaves the
   other hosts to the supervisor (without a supervisor, on Kubernetes, the launchers stop each other).
5. The job's exit code (the first failing host's, 130 when cancelled, else 0) is recorded and is what
   `pyctl train ddp --follow` exits with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pyctl import remote
from pyctl.config import Settings
from pyctl.errors import UsageError
from pyctl.inventory import Cluster
from pyctl.train import logs
from pyctl.train.jobs import JobRecord, JobStore, SshInfo
from pyctl.train.launch import REMOTE_ROOT, NodeLaunch
from pyctl.train.request import DEFAULT_SSH_USER

HOSTWRAP = Path(__file__).with_name("hostwrap.py")
# The process-tree code hostwrap shares with DistDGL's launcher; it lives in that payload's folder (the
# payload's image is built from that folder alone). pyctl runs from its source tree (see pyctl.config).
PROCTREE = Path(__file__).resolve().parents[3] / "payloads" / "distdgl" / "proctree.py"
SUPERVISED_ENV = {"PYCTL_SUPERVISED": "1"}  # tells a launcher inside that this supervisor stops the job
CANCELLED_EXIT = 130
LOST_EXIT = 255  # like ssh: the connection failed, the host's own exit code is unknown
PGID_LINE = "[pyctl-host] started process group "


# --- preflight ------------------------------------------------------------------------------------------


def identity(
    settings: Settings, cluster: Cluster, ssh_user: str | None, ssh_key: Path | None
) -> tuple[str, list[Path]]:
    """The login user and the keys to try: the training user with the cluster's key by default
    (`--ssh-user` / `--ssh-key` override them; the host variable train_ssh_user names another user)."""
    first = cluster.hosts[0].vars if cluster.hosts else {}
    user = ssh_user or str(first.get("train_ssh_user") or DEFAULT_SSH_USER)
    if ssh_key is not None:
        key = ssh_key.expanduser()
        if not key.is_file():
            raise UsageError(f"--ssh-key {ssh_key}: no such file")
        return user, [key]
    cluster_key = settings.clusters_dir / cluster.name / "ssh" / "id_ed25519"
    if cluster_key.is_file():
        return user, [cluster_key]
    if ssh_user is None and not first.get("train_ssh_user"):
        raise UsageError(
            f"no key for the training user {user!r}: {cluster_key} does not exist",
            hint="run 'pyctl bootstrap -i INVENTORY --phases ssh_trust' first, or log in as another user "
            "with --ssh-user (and --ssh-key)",
        )
    return user, []


def preflight(
    targets: list[remote.Target],
    pythons: dict[str, str],
    ifaces: dict[str, str | None],
    check_env: bool,
    env: dict[str, str] | None = None,
    *,
    module: str,
    hints: tuple[str | None, str | None],
    extra: Callable[[int, remote.Target, Any], None] | None = None,
) -> dict[str, str]:
    """Log in to every host at once and check what the job needs: its interpreter (`pythons`, by host),
    its network interface (when `ifaces` names one), the workload's `extra` checks (index, target,
    connection), and with `check_env` that the interpreter imports `module` in the job's own environment
    `env`. Returns each host's `module.__version__`, or '' without `check_env`. Raises UsageError naming the
    host and the problem (the first host's, in `targets` order); `hints`: for a missing interpreter and for
    a failed import."""
    assignments = " ".join(f"{k}={remote.quote([v])}" for k, v in sorted((env or {}).items()))
    missing_hint, import_hint = hints

    def one(index: int, target: remote.Target) -> str:
        python = pythons[target.name]
        conn = remote.connect(target)
        try:
            q = remote.quote
            code, out = remote.run(conn, f"test -x {q([python])} || command -v {q([python])}", timeout=60)
            if code != 0:
                raise UsageError(f"host {target.name}: the interpreter {python} is not there", hint=missing_hint)
            iface = ifaces.get(target.name)
            if iface:
                code, _ = remote.run(conn, f"test -d /sys/class/net/{q([iface])}", timeout=30)
                if code != 0:
                    raise UsageError(
                        f"host {target.name}: network interface {iface!r} does not exist",
                        hint="set train_iface for the host (or --iface) to the interface carrying its cluster address",
                    )
            if extra is not None:
                extra(index, target, conn)
            if not check_env:
                return ""
            probe = f"import {module}, sys; sys.stdout.write({module}.__version__)"
            prefix = f"env {assignments} " if assignments else ""
            code, out = remote.run(conn, f"{prefix}{q([python])} -c {q([probe])}", timeout=300)
            if code != 0:
                last = (out.strip().splitlines() or ["no output"])[-1]
                raise UsageError(f"host {target.name}: {python} cannot import {module}: {last}", hint=import_hint)
            return out.strip().splitlines()[-1] if out.strip() else ""
        finally:
            remote.close(conn)

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        futures = {t.name: pool.submit(one, i, t) for i, t in enumerate(targets)}
        results: dict[str, str] = {}
        problems: list[BaseException] = []
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except BaseException as exc:
                problems.append(exc)
        if problems:
            raise problems[0]
        return results


# --- job files --------------------------------------------------------------------------------------


def write_launches(job_dir: Path, launches: list[NodeLaunch]) -> None:
    """`launch/<rank>-<host>.json` and the files they need, for the supervisor (and for people)."""
    folder = job_dir / "launch"
    files = job_dir / "files"
    folder.mkdir(mode=0o700)
    files.mkdir(mode=0o700, exist_ok=True)
    for launch in launches:
        for name, data in launch.files.items():
            (files / name).write_bytes(data)
        body = {
            "rank": launch.rank,
            "host": launch.host,
            "address": launch.address,
            "argv": list(launch.argv),
            "env": launch.env,
            "cwd": launch.cwd,
            "files": sorted(launch.files),
            "command": launch.shell(),
        }
        (folder / f"{launch.rank}-{launch.host}.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def read_launches(job_dir: Path) -> list[NodeLaunch]:
    launches = []
    for path in sorted((job_dir / "launch").glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0])):
        body = json.loads(path.read_text(encoding="utf-8"))
        files = {name: (job_dir / "files" / name).read_bytes() for name in body["files"]}
        launches.append(
            NodeLaunch(
                rank=body["rank"],
                host=body["host"],
                address=body["address"],
                argv=tuple(body["argv"]),
                env=body["env"],
                cwd=body["cwd"],
                files=files,
            )
        )
    return launches


# --- the supervisor ---------------------------------------------------------------------------------


def host_launch(launch: NodeLaunch, job_dir: str, grace_s: float) -> dict[str, Any]:
    """What one host's hostwrap reads (`launch.json`): the launch with `{job_dir}` filled in, where to
    write the process group id, the grace period, and PYCTL_SUPERVISED=1 in the job's environment. The
    supervisor alone stops the whole job; with that variable set, a launcher inside (DistDGL's launch.py)
    stops only its own host's processes and leaves the other hosts to the supervisor."""
    body = launch.resolved(job_dir)
    body["env"] = {**body["env"], **SUPERVISED_ENV}
    body.update({"pgid_file": f"{job_dir}/pgid", "grace_s": grace_s})
    return body


class _Node:
    def __init__(self, launch: NodeLaunch, target: remote.Target) -> None:
        self.launch = launch
        self.target = target
        self.conn: Any = None
        self.channel: Any = None
        self.job_dir = ""
        self.reader: threading.Thread | None = None
        self.exit_code: int | None = None
        self.finished_at: float | None = None
        self.pgid: int | None = None
        self.error: str | None = None  # the first `PYCTL_ERROR <cause>` line the host printed


class Supervisor:
    """Runs one SSH job to its end; `stop()` (from a signal handler) stops every host."""

    def __init__(self, store: JobStore, job_id: str, say: Any = print) -> None:
        self.store = store
        self.job_id = job_id
        self.dir = store.dir(job_id)
        self.record = store.load(job_id)
        self.say = say
        self.stop_reason: str | None = None
        self.cancelled = False
        self._stop = threading.Event()
        self.summary: dict[str, Any] | None = None
        self.record_problems: list[str] = []  # failed writes of the job record while it ran

    def stop(self, reason: str, cancelled: bool = False) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.cancelled = cancelled
        self._stop.set()

    def install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.stop(f"cancelled ({signal.Signals(signum).name})", cancelled=True)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, handler)

    def run(self) -> int:
        ssh = self.record.ssh
        launches = read_launches(self.dir)
        targets = {t.name: t for t in ssh.targets}
        nodes = [_Node(launch, targets[launch.host]) for launch in launches]
        merged = logs.MergedLog(self.dir / "output.log")
        try:
            self._start(nodes, merged, ssh)
            if not self._stop.is_set():
                self._update(state="running", started=time.time())
                self.say(f"running on {len(nodes)} host(s)")
            self._supervise(nodes)
        except Exception as exc:
            self.stop(f"supervisor error: {exc}")
            self.say(f"error: {type(exc).__name__}: {exc}")
            self._stop_all(nodes, float(self.record.ssh.grace_s))
        finally:
            for node in nodes:
                if node.reader is not None:
                    node.reader.join(timeout=10)
                remote.close(node.conn)
            merged.close()
        return self._finish(nodes)

    # -- start -------------------------------------------------------------------------------------

    def _start(self, nodes: list[_Node], merged: logs.MergedLog, ssh: SshInfo) -> None:
        def connect(node: _Node) -> None:
            node.conn = remote.connect(node.target)
            remote.keep_alive(node.conn)
            root = remote.quote([f"{REMOTE_ROOT}/{self.job_id}/{node.launch.host}"])
            code, out = remote.run(node.conn, f'mkdir -p -m 700 "$HOME"/{root} && cd "$HOME"/{root} && pwd', 60)
            if code != 0:
                raise remote.RemoteCommandError(f"host {node.launch.host}: cannot make the job directory: {out}")
            node.job_dir = out.strip().splitlines()[-1]
            for name, data in node.launch.files.items():
                remote.put_bytes(node.conn, f"{node.job_dir}/{name}", data, 0o700 if name.endswith(".py") else 0o600)
            launch = host_launch(node.launch, node.job_dir, float(self.record.ssh.grace_s))
            remote.put_bytes(node.conn, f"{node.job_dir}/launch.json", json.dumps(launch).encode())
            remote.put_bytes(node.conn, f"{node.job_dir}/hostwrap.py", HOSTWRAP.read_bytes(), 0o700)
            remote.put_bytes(node.conn, f"{node.job_dir}/proctree.py", PROCTREE.read_bytes(), 0o600)

        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            for future in [pool.submit(connect, n) for n in nodes]:
                future.result()
        if self._stop.is_set():
            return
        python = ssh.wrapper_python
        for node in nodes:
            command = (
                f"cd {remote.quote([node.job_dir])} && exec {remote.quote([python, 'hostwrap.py', 'launch.json'])}"
            )
            node.channel = remote.start(node.conn, command)
            source = merged.source(f"[{node.launch.host}] ", self._line_handler(node, nodes))
            node.reader = threading.Thread(target=self._read, args=(node, source), daemon=True)
            node.reader.start()

    def _line_handler(self, node: _Node, nodes: list[_Node]) -> Any:
        def on_line(line: str) -> None:
            if node.pgid is None and line.startswith(PGID_LINE):
                node.pgid = int(line[len(PGID_LINE) :].split(maxsplit=1)[0])
                self._record_pgids(nodes)
                return
            if node.error is None and line.startswith(logs.ERROR_PREFIX):
                node.error = line[len(logs.ERROR_PREFIX) :].strip()
                return
            summary = logs.parse_summary(line)
            if summary is not None:
                self.summary = summary

        return on_line

    @staticmethod
    def _read(node: _Node, source: logs.LineSplitter) -> None:
        with contextlib.suppress(Exception):
            while True:
                data = node.channel.recv(65536)
                if not data:
                    break
                source.feed(data)
        source.flush()

    def _record_pgids(self, nodes: list[_Node]) -> None:
        """Record each host's process group (announced by hostwrap's first line) and job directory."""
        pgids = {n.launch.host: n.pgid for n in nodes}

        def change(record: JobRecord) -> None:
            for entry in record.nodes:
                entry.pgid = pgids.get(entry.name, entry.pgid)
            record.ssh.job_dirs = {n.launch.host: n.job_dir for n in nodes}

        try:
            self.store.update(self.job_id, change)
        except Exception as exc:
            # Without the ids a later `cancel` (supervisor gone) finds no group: say so, in the log now
            # and in the job's final message.
            problem = f"process group ids not recorded in the job record: {type(exc).__name__}: {exc}"
            self.say(f"error: {problem}")
            self.record_problems.append(problem)

    # -- supervise ---------------------------------------------------------------------------------

    def _supervise(self, nodes: list[_Node]) -> None:
        grace = float(self.record.ssh.grace_s)
        while True:
            for node in nodes:
                if node.exit_code is None and node.channel is not None and node.channel.exit_status_ready():
                    node.exit_code = node.channel.recv_exit_status()
                    node.finished_at = time.time()
                    if node.exit_code == -1:  # the channel closed without a status: connection lost
                        node.exit_code = 255
                    self.say(f"host {node.launch.host} exited with {node.exit_code}")
                    if node.exit_code != 0:
                        self.stop(f"host {node.launch.host} failed (exit code {node.exit_code})")
                elif node.exit_code is None and node.channel is not None and not remote.alive(node.conn):
                    # The connection died (host down, network, proxy gone). Its hostwrap sees EOF when
                    # sshd notices; the other hosts are stopped now.
                    node.exit_code, node.finished_at = LOST_EXIT, time.time()
                    self.say(f"host {node.launch.host}: the SSH connection was lost")
                    self.stop(f"host {node.launch.host} lost its SSH connection")
            if all(n.exit_code is not None for n in nodes):
                return
            if self._stop.is_set():
                self._stop_all(nodes, grace)
                return
            self._stop.wait(0.2)

    def _stop_all(self, nodes: list[_Node], grace: float) -> None:
        self.say(f"stopping every host: {self.stop_reason}")
        for node in nodes:
            if node.exit_code is None and node.channel is not None:
                remote.stop_input(node.channel)
        deadline = time.monotonic() + grace + 20
        while time.monotonic() < deadline:
            for node in nodes:
                if node.exit_code is None and node.channel is not None and node.channel.exit_status_ready():
                    node.exit_code = node.channel.recv_exit_status()
                    node.finished_at = time.time()
                elif node.exit_code is None and node.channel is not None and not remote.alive(node.conn):
                    node.exit_code, node.finished_at = LOST_EXIT, time.time()
            if all(n.exit_code is not None or n.channel is None for n in nodes):
                return
            time.sleep(0.2)
        for node in nodes:
            if node.exit_code is None and node.conn is not None:
                self.say(f"host {node.launch.host} did not stop in time: killing its process group")
                with contextlib.suppress(Exception):
                    kill_group(node.conn, node.job_dir)
                node.exit_code = 137

    # -- finish ------------------------------------------------------------------------------------

    def _finish(self, nodes: list[_Node]) -> int:
        failed = sorted((n for n in nodes if n.exit_code not in (None, 0)), key=lambda n: n.finished_at or float("inf"))
        if self.cancelled:
            state, code, message = "cancelled", CANCELLED_EXIT, self.stop_reason or "cancelled"
        elif self.stop_reason and self.stop_reason.startswith("supervisor error"):
            state, code, message = "failed", 1, self.stop_reason
        elif failed:
            first = failed[0]
            state, code = "failed", int(first.exit_code or 1)
            what = "lost its SSH connection" if code == LOST_EXIT else f"failed with exit code {code}"
            cause = f" ({first.error})" if first.error else ""
            message = f"host {first.launch.host} {what}{cause}; the other hosts were stopped"
        elif any(n.exit_code is None for n in nodes):
            state, code, message = "failed", 1, self.stop_reason or "not every host started"
        else:
            state, code, message = "succeeded", 0, "every host finished"
        if self.record_problems:
            message += f" ({'; '.join(dict.fromkeys(self.record_problems))})"
        codes = {n.launch.host: n.exit_code for n in nodes}

        def change(record: JobRecord) -> None:
            record.state, record.exit_code, record.message = state, code, message
            record.finished = time.time()
            record.summary = self.summary
            for entry in record.nodes:
                entry.exit_code = codes.get(entry.name, entry.exit_code)

        self.store.update(self.job_id, change)
        self.say(f"job {state}: {message}")
        return code

    def _update(self, **values: Any) -> None:
        def change(record: JobRecord) -> None:
            for key, value in values.items():
                setattr(record, key, value)

        self.store.update(self.job_id, change)


def kill_group(conn: Any, job_dir: str, sig: str = "KILL") -> bool:
    """Signal the job's process group and its wrapper on one host, from the recorded `pgid` file;
    False when the host has no such file (no group was ever started there)."""
    pgid_file = remote.quote([f"{job_dir}/pgid"])
    script = (
        f"test -f {pgid_file} || exit 3; read pg wp < {pgid_file}; "
        f'kill -{sig} -- "-$pg" 2>/dev/null; kill -{sig} "$wp" 2>/dev/null; exit 0'
    )
    code, out = remote.run(conn, script, timeout=30)
    if code not in (0, 3):
        raise remote.RemoteCommandError(f"signalling the process group failed (exit {code}): {out.strip()}")
    return code == 0


def cancel_without_supervisor(store: JobStore, record: JobRecord) -> JobRecord:
    """The supervisor is gone but the record says running: stop each host's group directly. The record
    says which hosts were reached and stopped, which had no group, and which could not be reached."""
    targets = {t.name: t for t in record.ssh.targets}
    job_dirs = record.ssh.job_dirs

    def one(name: str) -> bool:
        conn = remote.connect(targets[name])
        try:
            directory = job_dirs.get(name)
            if not directory:
                _, home = remote.run(conn, 'printf %s "$HOME"', timeout=30)
                directory = f"{home.strip()}/{REMOTE_ROOT}/{record.id}/{name}"
            if not kill_group(conn, directory, "TERM"):
                return False
            time.sleep(float(record.ssh.grace_s) if record.ssh.grace_s else 5)
            kill_group(conn, directory, "KILL")
            return True
        finally:
            remote.close(conn)

    stopped: list[str] = []
    no_group: list[str] = []
    unreached: dict[str, str] = {}  # host -> why nothing was stopped there
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        futures = {n: pool.submit(one, n) for n in targets}
        for name, future in futures.items():
            try:
                (stopped if future.result() else no_group).append(name)
            except Exception as exc:
                reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                unreached[name] = reason if reason.startswith(f"host {name}") else f"host {name}: {reason}"
    parts = []
    if stopped:
        parts.append(f"process groups signalled directly (TERM, then KILL) on {', '.join(stopped)}")
    if no_group:
        parts.append(f"no process group recorded on {', '.join(no_group)}")
    if unreached:
        parts.append(f"nothing stopped on: {'; '.join(unreached.values())}")
    message = f"cancelled (the supervisor was gone; {'; '.join(parts) or 'the job has no hosts'})"

    def change(rec: JobRecord) -> None:
        if not rec.final:
            rec.state, rec.exit_code, rec.message = "cancelled", CANCELLED_EXIT, message
            rec.finished = time.time()
            rec.ssh.not_stopped = sorted(unreached)

    return store.update(record.id, change)


def supervisor_alive(record: JobRecord) -> bool:
    pid = record.supervisor_pid
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # pyctl.train.supervisor: where the supervisor of a job started by an earlier pyctl lived
    entry = b"pyctl.train.backends.supervisor" in cmdline or b"pyctl.train.supervisor" in cmdline
    return record.id.encode() in cmdline and entry


def signal_supervisor(record: JobRecord, sig: int = signal.SIGTERM) -> bool:
    if not supervisor_alive(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(record.supervisor_pid or 0), sig)
        return True
    return False

"""The one place pyctl talks to ansible-runner.

Each run gets a private data directory `<state>/runs/<utc>-<verb>/` (the last N are kept). Arguments
are built here and only here: absolute paths, pipelining and SSH ControlPersist, forks = host count
(max 200), host key checking on, an allowlisted environment. Every event is scrubbed of secrets in
place before ansible-runner writes it, then handed to the caller's callback; ansible-runner's raw
stdout file is suppressed and pyctl writes its own scrubbed log (`pyctl.log`) instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyctl.config import Settings
from pyctl.redact import contains_secret, scrub_text, scrub_to_json

MAX_FORKS = 200  # one per host: a fork per host waits on its SSH, it costs little CPU
_PLUGINS_DIR = Path(__file__).resolve().parent / "ansible_plugins"
_RUN_DIR_NAME = re.compile(r"^\d{8}T\d{6}(\.\d+)?Z-[a-z0-9_-]+$")
_RETIRED = ".retired-"
# What ansible-playbook may see of the controller's environment. Everything else (cloud keys,
# tokens in unrelated variables) stays out of the child and out of the runner's `command` artifact.
_ENV_ALLOW = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|SHELL|LANG|LANGUAGE|LC_[A-Z]+|TERM|TZ|TMPDIR|SSH_AUTH_SOCK|XDG_[A-Z_]+|"
    r"VIRTUAL_ENV|KUBECONFIG|ANSIBLE_[A-Z0-9_]+|PYCTL_[A-Z0-9_]+|"
    r"http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY)$"
)
_ENV_DENY = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL)", re.IGNORECASE)

EventCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunRequest:
    """What to run. Paths are made absolute before ansible-runner sees them."""

    verb: str
    playbook: Path
    inventory: Path
    host_count: int
    limit: str | None = None
    check: bool = False
    verbosity: int = 0
    extravars: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOutcome:
    run_dir: Path
    log_path: Path
    status: str  # successful | failed | canceled | timeout | error
    rc: int
    events: int
    stats: dict[str, dict[str, int]] | None


def new_run_dir(settings: Settings, verb: str) -> Path:
    """Create `<state>/runs/<utc>-<verb>/` (0700) and prune all but the newest `keep_runs`."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    verb = re.sub(r"[^a-z0-9_-]+", "-", verb.lower()).strip("-") or "run"
    while True:
        # Microseconds keep names unique and their order the order of the runs.
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        run_dir = settings.runs_dir / f"{stamp}Z-{verb}"
        try:
            run_dir.mkdir(mode=0o700)
            break
        except FileExistsError:
            continue
    retire_runs(settings.runs_dir, settings.keep_runs)
    return run_dir


def retire_runs(runs_dir: Path, keep: int) -> list[Path]:
    """Rename all but the newest `keep` runs to `.retired-<name>`: one rename each, so a command does not
    wait on deleting old artifacts before it starts; `remove_retired` deletes them (run_playbook does,
    while ansible-playbook runs)."""
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and _RUN_DIR_NAME.match(p.name))
    retired = []
    for path in runs[:-keep] if keep > 0 else runs:
        target = path.with_name(f"{_RETIRED}{path.name}")
        try:
            path.rename(target)
        except OSError:
            continue
        retired.append(target)
    return retired


def remove_retired(runs_dir: Path) -> None:
    """Delete every retired run directory (also those a killed pyctl left behind)."""
    with contextlib.suppress(OSError):
        for path in runs_dir.iterdir():
            if path.name.startswith(_RETIRED) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)


def forks_for(host_count: int) -> int:
    return max(1, min(host_count, MAX_FORKS))


def runner_environment(
    settings: Settings, runner_env: dict[str, str], user_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment ansible-playbook runs with.

    What ansible-runner added (its callback, artifact dir) is kept; what came from the user's
    environment is allowlisted, and nothing whose name or value looks like a secret passes.
    """
    user_env = dict(os.environ if user_env is None else user_env)
    env: dict[str, str] = {}
    for key, value in runner_env.items():
        from_user = key in user_env and user_env[key] == value
        if from_user and (not _ENV_ALLOW.match(key) or _ENV_DENY.search(key)):
            continue
        if contains_secret(value):
            continue
        env[key] = value
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    if bin_dir not in path.split(os.pathsep):
        path = os.pathsep.join([bin_dir, path])
    callbacks = [str(_PLUGINS_DIR / "callback")]
    if env.get("ANSIBLE_CALLBACK_PLUGINS"):
        callbacks.append(env["ANSIBLE_CALLBACK_PLUGINS"])
    env.update(
        {
            "PATH": path,
            "ANSIBLE_CONFIG": str(settings.project_dir / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(settings.project_dir / "roles"),
            "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(callbacks),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15",
            "ANSIBLE_HOST_KEY_CHECKING": user_env.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }
    )
    return env


class _Log:
    """pyctl.log: the scrubbed text of every event, written as events arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "w", encoding="utf-8")

    def write_event(self, event: dict[str, Any]) -> None:
        text = event.get("stdout")
        if text:
            self._file.write(text.rstrip("\n") + "\n")
            self._file.flush()

    def note(self, text: str) -> None:
        self._file.write(scrub_text(text).rstrip("\n") + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@contextmanager
def _interrupt_sets(flag: threading.Event) -> Iterator[None]:
    """While running, Ctrl-C (and SIGTERM) ask the runner to cancel instead of killing pyctl."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, frame: object) -> None:
        flag.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _GracefulCancel:
    """ansible-runner's cancel SIGKILLs ansible-playbook's process group, but Ansible's workers run in
    their own sessions (setsid), so they and their ssh/command children would be orphaned. On cancel
    pyctl first sends SIGTERM to ansible-playbook, whose handler terminates every worker group, and
    only after a grace period lets ansible-runner kill what is left."""

    def __init__(self, flag: threading.Event, grace_seconds: float = 20.0) -> None:
        self.flag = flag
        self.grace_seconds = grace_seconds
        self.playbook_pid: int | None = None
        self._sent_at: float | None = None

    def seen(self, event: dict[str, Any]) -> None:
        if self.playbook_pid is None and event.get("event") == "playbook_on_start" and event.get("pid"):
            self.playbook_pid = int(event["pid"])

    def __call__(self) -> bool:
        if not self.flag.is_set():
            return False
        if self.playbook_pid is None:
            return True  # no play started yet: nothing runs on hosts
        now = time.monotonic()
        if self._sent_at is None:
            self._sent_at = now
            try:
                os.kill(self.playbook_pid, signal.SIGTERM)
            except ProcessLookupError:
                return True
            return False
        return now - self._sent_at > self.grace_seconds


@contextmanager
def _prompt_pty_close() -> Iterator[None]:
    """ansible-runner closes ansible-playbook's pty only once the process has exited, and ptyprocess
    then sleeps 0.1 s "to give the kernel time" before looking at a process that is already reaped.
    For the length of one run, ansible-runner's spawns skip that sleep when the child is gone, and the
    sleep pexpect takes after each read of the pty."""
    import ansible_runner.runner as runner_module
    import pexpect

    class _Spawn(pexpect.spawn):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.delayafterread = None  # pexpect sleeps 0.1 ms (0.5 ms with timer slack) after every read

        def close(self, force: bool = True) -> None:
            if not self.ptyproc.isalive():
                self.ptyproc.delayafterclose = 0
            super().close(force=force)

    shim = types.ModuleType("pexpect")
    shim.__dict__.update(pexpect.__dict__)
    shim.spawn = _Spawn  # type: ignore[attr-defined]
    runner_module.pexpect = shim  # type: ignore[attr-defined]
    try:
        yield
    finally:
        runner_module.pexpect = pexpect  # type: ignore[attr-defined]


def run_playbook(
    settings: Settings,
    request: RunRequest,
    on_event: EventCallback,
    cancel: threading.Event | None = None,
    run_dir: Path | None = None,
) -> RunOutcome:
    """Run one playbook through ansible-runner; return when it has finished or was cancelled."""
    import ansible_runner

    run_dir = run_dir or new_run_dir(settings, request.verb)
    cancel = cancel or threading.Event()
    log = _Log(run_dir / "pyctl.log")
    counter = {"events": 0}
    stats: dict[str, dict[str, int]] = {}

    graceful = _GracefulCancel(cancel)

    events_dir = run_dir / "artifacts" / "ansible" / "job_events"

    def _handle(event: dict[str, Any]) -> bool:
        # Serialized once: the JSON text is searched for secret shapes (scrubbed only when one may be
        # there) and written as the event's artifact, which ansible-runner is then told not to write.
        cleaned, text = scrub_to_json(event)
        if cleaned is not event:  # ansible-runner hands on this very dict: scrub it in place
            event.clear()
            event.update(cleaned)
        _write_event(events_dir, event, text)
        graceful.seen(event)
        counter["events"] += 1
        log.write_event(event)
        if event.get("event") == "playbook_on_stats":
            data = event.get("event_data") or {}
            for key in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored"):
                for host, count in (data.get(key) or {}).items():
                    stats.setdefault(host, {})[key] = count
        on_event(event)
        return False

    cmdline = ["--check", "--diff"] if request.check else []
    kwargs: dict[str, Any] = {
        "private_data_dir": str(run_dir),
        "project_dir": str(settings.project_dir),
        "playbook": str(request.playbook.resolve()),
        "inventory": str(request.inventory.resolve()),
        "ident": "ansible",
        "forks": forks_for(request.host_count),
        "limit": request.limit or None,
        "verbosity": request.verbosity or None,
        "extravars": dict(request.extravars),
        "cmdline": " ".join(cmdline) or None,
        "quiet": True,
        "rotate_artifacts": 0,
        # Facts live for one run in ansible-playbook's memory: nothing reads a fact cache on disk.
        "fact_cache_type": "memory",
        "event_handler": _handle,
        "cancel_callback": graceful,
        # ansible-runner reads these from `settings`, not from its keyword arguments.
        "settings": {"pexpect_timeout": 0.5, "suppress_ansible_output": True, "suppress_output_file": True},
    }
    log.note(f"# pyctl {request.verb}: {request.playbook} on {request.inventory} (run {run_dir.name})")
    runner = ansible_runner.interface.init_runner(**kwargs)
    runner.config.env = runner_environment(settings, runner.config.env)
    # Old runs are deleted on the spare core while ansible-playbook starts, not before it.
    cleaner = threading.Thread(target=remove_retired, args=(settings.runs_dir,), name="pyctl-prune", daemon=True)
    try:
        cleaner.start()
        with _interrupt_sets(cancel), _prompt_pty_close():
            runner.run()
    finally:
        if cleaner.ident is not None:
            cleaner.join()
        log.close()
        _scrub_artifacts(run_dir)
    status = "canceled" if runner.canceled or cancel.is_set() else str(runner.status)
    rc = int(runner.rc if runner.rc is not None else 1)
    return RunOutcome(run_dir, log.path, status, rc, counter["events"], stats or None)


def _write_event(folder: Path, event: dict[str, Any], text: str) -> None:
    """`job_events/<counter>-<uuid>.json` (0600), as ansible-runner names it: a temporary file renamed."""
    target = folder / f"{event['counter']}-{event['uuid']}.json"
    staging = target.with_name(target.name + ".tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    staging.replace(target)


def _scrub_artifacts(run_dir: Path) -> None:
    """Last pass over what ansible-runner wrote itself (command line, env snapshot, leftovers)."""
    for path in run_dir.rglob("*"):
        if not path.is_file() or path.stat().st_size > 20_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        cleaned = scrub_text(text)
        if cleaned != text:
            path.write_text(cleaned, encoding="utf-8")

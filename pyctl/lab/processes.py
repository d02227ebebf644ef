"""Running tools and daemons for the lab, and finding and stopping them again.

Every daemon the lab starts either writes its own pidfile (sshd, qemu, dnsmasq, apt-cacher-ng) or gets
one written here (socat, systemd-nspawn). Teardown does not trust pidfiles alone: it also scans /proc
for processes inside the lab's network namespaces and for processes whose command line names the lab's
directory, so a crashed or half-made lab is cleaned up too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyctl.lab.errors import LabSetupFailed

# Tools in /usr/sbin are not on every PATH (sudo keeps secure_path, but cron and CI may not).
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
    env["PATH"] = os.pathsep.join(path + [d for d in _SBIN if d not in path])
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    what: str | None = None,
    check: bool = True,
    timeout: float | None = 300,
    input: str | None = None,
    env: dict[str, str] | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion, capturing its output; a failure raises LabSetupFailed naming the tool."""
    try:
        result = subprocess.run(
            list(argv),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=tool_env(env),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise LabSetupFailed(f"{argv[0]} is not installed", hint=hint) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabSetupFailed(f"{what or argv[0]} did not finish within {timeout:.0f} s", hint=hint) from exc
    if check and result.returncode != 0:
        raise LabSetupFailed(f"{what or ' '.join(argv[:3])} failed: {last_line(result)}", hint=hint)
    return result


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (result.stderr or result.stdout or "").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def spawn(argv: Sequence[str], *, log: Path, pidfile: Path, env: dict[str, str] | None = None) -> int:
    """Start a long-running process that does not daemonise itself; record its pid in `pidfile`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=tool_env(env),
            start_new_session=True,  # not killed with our terminal; its own process group
            close_fds=True,
        )
    pidfile.write_text(f"{proc.pid}\n", encoding="utf-8")
    return proc.pid


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pidfile_alive(pidfile: Path) -> int | None:
    """The pid recorded in `pidfile` if that process is still running, else None."""
    pid = read_pid(pidfile)
    return pid if alive(pid) else None


def wait_for_pidfile(pidfile: Path, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = pidfile_alive(pidfile)
        if pid:
            return pid
        time.sleep(0.02)
    return None


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _protected() -> set[int]:
    """This process and its ancestors: never ours to kill, even if they run inside a lab namespace."""
    pids = {0, 1}
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
            pid = int(stat.rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def ns_inode(path: Path | str) -> int | None:
    try:
        return Path(path).stat().st_ino
    except OSError:
        return None


def pids_in_namespaces(inodes: Iterable[int], kind: str = "net") -> list[int]:
    """Processes whose `kind` namespace (net, mnt, pid) is one of `inodes`."""
    wanted = set(inodes)
    if not wanted:
        return []
    found = []
    for pid in _all_pids():
        try:
            if Path(f"/proc/{pid}/ns/{kind}").stat().st_ino in wanted:
                found.append(pid)
        except OSError:
            continue
    return [p for p in found if p not in _protected()]


def pids_mentioning(directory: str | Path) -> list[int]:
    """Processes whose command line names a path inside `directory` (a lab's): leftovers of a crashed run.

    The trailing slash keeps lab `t1` from matching lab `t12`'s processes.
    """
    found = []
    needle = f"{str(directory).rstrip('/')}/".encode()
    for pid in _all_pids():
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return [p for p in found if p not in _protected()]


def terminate(pids: Iterable[int], *, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds. Returns the pids signalled."""
    targets = [p for p in dict.fromkeys(pids) if alive(p) and p not in _protected()]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.05)
    for pid in targets:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.05)
    return targets


def kill_now(pids: Iterable[int]) -> list[int]:
    """SIGKILL at once (throw-away VMs and containers), and wait until they are gone."""
    targets = [p for p in dict.fromkeys(pids) if alive(p) and p not in _protected()]
    for pid in targets:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.05)
    return targets


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)

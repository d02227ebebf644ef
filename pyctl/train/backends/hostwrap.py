"""The per-host wrapper the SSH backend starts on every host: one job process tree, stopped as a whole.

This file is copied to each host with the job and run there by the hosts' interpreter (standard library
only, Python >= 3.8); pyctl itself need not be installed on the hosts:

    python3 hostwrap.py launch.json

`launch.json` holds {"argv": [...], "env": {...}, "cwd": "...", "pgid_file": "...", "grace_s": 10}.
The wrapper starts `argv` in a new session (its own process group), writes that group's id to
`pgid_file` and then waits. It stops the whole tree (SIGTERM, then SIGKILL after `grace_s`) when:

- its standard input reaches EOF: the controller asked it to stop, or the SSH connection is gone
  (the controller died or the network broke), so no job outlives its supervisor;
- it gets SIGTERM, SIGINT or SIGHUP (for example `kill` from `pyctl train cancel`'s fallback path).

It is a child subreaper, so processes whose parent died (torchrun's workers when torchrun itself is
killed) are still its descendants and still stopped. When the job ends by itself, whatever is left of
the tree is stopped too. The wrapper exits with the job's exit code (128 + N for a signal N).
"""

# ruff: noqa: PTH105, PTH123, PTH208 - plain os/open on purpose: this file runs on the hosts, on any Python >= 3.8

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
TAG = "[pyctl-host]"


def say(message: str) -> None:
    sys.stderr.write(f"{TAG} {message}\n")
    sys.stderr.flush()


def become_subreaper() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every live process below `root` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found[::-1]


def signal_tree(pgid: int, sig: int) -> int:
    """Send `sig` to the job's process group and to every descendant of this wrapper; count targets."""
    count = 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        count += 1
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            count += 1
    return count


def reap(keep: int) -> None:
    """Collect exit statuses of orphans handed to us as subreaper, so none stays a zombie.

    Never `waitpid(-1)`: that could take the job's own exit status from under Popen (which then reports
    0). Only our other direct children are waited for, by pid."""
    for pid in direct_children():
        if pid != keep:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def direct_children() -> list[int]:
    me = os.getpid()
    return [pid for pid, parent in _parents().items() if parent == me]


def stop_tree(child: subprocess.Popen, grace: float) -> None:
    signal_tree(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap_child(child)
        reap(child.pid)
        if child.returncode is not None and not descendants(os.getpid()):
            return
        time.sleep(0.1)
    killed = signal_tree(child.pid, signal.SIGKILL)
    if killed:
        say(f"grace of {grace:.0f} s over: killed {killed} remaining process(es)")
    for _ in range(50):
        reap_child(child)
        reap(child.pid)
        if child.returncode is not None and not descendants(os.getpid()):
            return
        time.sleep(0.1)


def reap_child(child: subprocess.Popen) -> None:
    with contextlib.suppress(ChildProcessError):
        child.poll()


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        say("usage: hostwrap.py LAUNCH_JSON")
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    grace = float(spec.get("grace_s", 10))
    stop = threading.Event()
    reason: list[str] = []

    def request_stop(why: str) -> None:
        if not stop.is_set():
            reason.append(why)
            stop.set()

    def on_signal(signum: int, _frame: object) -> None:
        request_stop(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    become_subreaper()

    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in spec.get("env", {}).items()})
    child = subprocess.Popen(
        spec["argv"], env=env, cwd=spec.get("cwd") or None, stdin=subprocess.DEVNULL, start_new_session=True
    )
    pgid_file = spec.get("pgid_file")
    if pgid_file:
        tmp = f"{pgid_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"{child.pid} {os.getpid()}\n")
        os.replace(tmp, pgid_file)
    say(f"started process group {child.pid}")

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        request_stop("stop requested by the controller (or its connection closed)")

    threading.Thread(target=watch_stdin, daemon=True).start()

    while child.poll() is None and not stop.wait(0.2):
        reap(child.pid)
    if child.returncode is None:
        say(f"stopping the job's processes: {reason[0] if reason else 'stop requested'}")
        stop_tree(child, grace)
        code = exit_code(child.returncode) if child.returncode not in (None, 0) else 143
        say(f"stopped (exit code {code})")
        return code
    # The job ended by itself: stop whatever it left behind (its own group, orphans reparented to us).
    if descendants(os.getpid()):
        stop_tree(child, min(grace, 5.0))
    reap(child.pid)
    return exit_code(child.returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

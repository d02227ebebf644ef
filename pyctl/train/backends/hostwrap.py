"""The per-host wrapper the SSH backend starts on every host: one job process tree, stopped as a whole.

This file and `proctree.py` (the process-tree code it shares with the DistDGL launcher, kept in
payloads/distdgl/) are copied to each host with the job and run there by the hosts' interpreter
(standard library only, Python >= 3.8); pyctl itself need not be installed on the hosts:

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

Who stops what over SSH: this wrapper is the one owner of its host's process tree; the supervisor
(`sshjob.Supervisor`) is the one owner of stopping the whole job, by stopping every host's wrapper. It
sets PYCTL_SUPERVISED=1 in the job's environment, so a launcher inside (DistDGL's launch.py) stops only
its own children and leaves the other hosts to the supervisor.
"""

# ruff: noqa: PTH105, PTH123 - plain os/open on purpose: this file runs on the hosts, on any Python >= 3.8

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading

import proctree  # beside this file: the SSH backend copies both into the job's folder

TAG = "[pyctl-host]"


def say(message: str) -> None:
    sys.stderr.write(f"{TAG} {message}\n")
    sys.stderr.flush()


def stop_job(child: subprocess.Popen, grace: float) -> None:
    killed = proctree.stop_tree([child], grace)
    if killed:
        say(f"grace of {grace:.0f} s over: killed {killed} remaining process(es)")


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
    proctree.become_subreaper()

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
        proctree.reap([child])
    if child.returncode is None:
        say(f"stopping the job's processes: {reason[0] if reason else 'stop requested'}")
        stop_job(child, grace)
        code = exit_code(child.returncode) if child.returncode not in (None, 0) else 143
        say(f"stopped (exit code {code})")
        return code
    # The job ended by itself: stop whatever it left behind (its own group, orphans reparented to us).
    if proctree.descendants():
        stop_job(child, min(grace, 5.0))
    proctree.reap([child])
    return exit_code(child.returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

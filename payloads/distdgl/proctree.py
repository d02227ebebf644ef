"""One process tree, read from /proc and stopped as a whole: the only process-tree code of pyctl's jobs.

Each of two programs owns one tree and stops it with this module:

- pyctl's per-host wrapper (`pyctl/train/backends/hostwrap.py`): everything a job runs on one SSH host.
  The SSH backend copies this file beside it into the job's folder on every host.
- the DistDGL launcher (`launch.py` beside this file): its servers and trainers, on an SSH host (under
  the wrapper) or in a Kubernetes pod (the image's /app, built from this folder).

It lives in the DistDGL payload's folder because that payload's image is built from the folder alone.
Standard library only, Python >= 3.8: it runs with the hosts' interpreter. The owner makes itself a
child subreaper first, so processes whose parent died (torchrun's workers when torchrun is killed, DGL's
samplers) are re-parented to it and stay in its tree.

Each stop sends a signal to each process once: torchrun turns every SIGTERM into an exception, and one
that lands while it is closing its workers can leave it stuck at exit (see `guard`).

Run as a program, it is the guard the launcher puts in front of each child, the owner of that child's
tree when the launcher is gone (SIGKILL, OOM: nothing of the launcher runs any more):

    python proctree.py --guard GRACE --parent PID -- ARGV...

The guard starts ARGV in the guard's own process group (the launcher starts the guard in a new session,
so the launcher's stop reaches both at once) and exits with ARGV's status. Signals from the launcher
are the launcher's business: the guard ignores them (ARGV got the same signal through the group).
When the launcher (PID) dies (the guard's parent is no longer PID, checked every 0.2 s), the guard
stops ARGV's whole tree itself, each process signalled once: SIGTERM, then SIGKILL after GRACE seconds.
The old way, a parent-death SIGTERM straight to the child (util-linux setpriv), left torchrun
running for ever: the kernel sends that signal again each time a thread of the dying parent exits
(the child is re-parented from thread to thread), so torchrun got up to one SIGTERM per launcher
thread; torch 2.2's torchrun raises an exception for each, and when they interrupt both its shutdown
and the retry in its `finally`, its log-tailing thread is never stopped and it waits on that thread
at exit, with no one left to send SIGKILL.
"""

# ruff: noqa: PTH100, PTH123, PTH208 - plain os/open on purpose: this file runs on the hosts, on any Python >= 3.8

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)


def become_subreaper() -> None:
    """Orphans anywhere below this process are re-parented to it (Linux >= 3.4), not to init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, process group) of `pid` from /proc/<pid>/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies included), from /proc/<pid>/stat."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat is not None:
                found[int(entry)] = stat[0]
    return found


def descendants(root: int | None = None) -> list[int]:
    """Every process below `root` (default: this process), deepest first."""
    below: dict[int, list[int]] = {}
    for pid, parent in parents().items():
        below.setdefault(parent, []).append(pid)
    found: list[int] = []
    queue = [os.getpid() if root is None else root]
    while queue:
        for child in below.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found[::-1]


def children(root: int | None = None) -> list[int]:
    """The direct children of `root` (default: this process)."""
    me = os.getpid() if root is None else root
    return [pid for pid, parent in parents().items() if parent == me]


def reap(owned: Sequence[subprocess.Popen]) -> None:
    """Collect exit statuses: `owned` through Popen (so each keeps its own return code), every other
    direct child (an orphan handed to this subreaper) by pid, so none stays a zombie.

    Never `waitpid(-1)`: that could take an owned child's exit status from under Popen (which then
    reports 0)."""
    keep = set()
    for proc in owned:
        keep.add(proc.pid)
        with contextlib.suppress(ChildProcessError):
            proc.poll()
    for pid in children():
        if pid not in keep:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def signal_tree(groups: Iterable[int], sig: int) -> int:
    """Send `sig` once to each process of each group in `groups` and of this process's tree: the groups
    as a whole (they reach members that left the tree), then each descendant outside those groups (the
    walk reaches children that made their own groups). Returns how many targets there were."""
    count = 0
    hit = set()
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
            hit.add(group)
            count += 1
    for pid in descendants():
        stat = _stat(pid)
        if stat is None or stat[1] in hit:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            count += 1
    return count


def _wait_empty(owned: Sequence[subprocess.Popen], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        reap(owned)
        if all(proc.returncode is not None for proc in owned) and not descendants():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_tree(owned: Sequence[subprocess.Popen], grace: float) -> int:
    """Stop this process's whole tree: SIGTERM to the process group of each of `owned` (children started
    with `start_new_session=True`) and to every descendant; after `grace` seconds SIGKILL to what is
    left; then wait (at most 5 s more) until nothing is left, reaping as it goes. Returns how many
    processes were still there for SIGKILL (0: all stopped on SIGTERM)."""
    groups = [proc.pid for proc in owned if proc.returncode is None]
    signal_tree(groups, signal.SIGTERM)
    if _wait_empty(owned, grace):
        return 0
    left = descendants()
    signal_tree([proc.pid for proc in owned if proc.returncode is None], signal.SIGKILL)
    _wait_empty(owned, 5.0)
    return len(left)


# --- the guard: `python proctree.py --guard GRACE --parent PID -- ARGV...` ------------------------------


def guard(grace: float, launcher: int, argv: Sequence[str]) -> int:
    """Run `argv` and return its exit status; stop its whole tree if `launcher` (this process's parent)
    dies first. A status from signal N is passed on by dying of N. See the module docstring."""

    def leave_to_group(_signum: int, _frame: object) -> None:
        """The launcher's signal: argv got it too, through the process group."""

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, leave_to_group)  # a handler, not SIG_IGN: argv starts with the defaults
    become_subreaper()
    child = subprocess.Popen(list(argv))
    while child.poll() is None:
        if os.getppid() != launcher:  # re-parented: the launcher is gone
            # and so is the reader of our output pipe: say nothing (a write would raise BrokenPipeError)
            stop_tree([child], grace)
            break
        reap([child])
        time.sleep(0.2)
    child.wait()
    if descendants():  # what argv left behind (orphans re-parented to this guard)
        stop_tree([child], min(grace, 5.0))
    if child.returncode < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's disposition cannot be set, nor need be
            signal.signal(-child.returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -child.returncode)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def guard_argv(python: str, grace: float, argv: Sequence[str]) -> list[str]:
    """The command line that runs `argv` under this file's guard, for the calling process."""
    here = os.path.abspath(__file__)
    return [python, here, "--guard", f"{grace:g}", "--parent", str(os.getpid()), "--", *argv]


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 6 or args[0] != "--guard" or args[2] != "--parent" or args[4] != "--":
        sys.stderr.write("usage: proctree.py --guard GRACE --parent PID -- ARGV...\n")
        sys.exit(2)
    sys.exit(guard(float(args[1]), int(args[3]), args[5:]))

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
"""

# ruff: noqa: PTH123, PTH208 - plain os/open on purpose: this file runs on the hosts, on any Python >= 3.8

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans anywhere below this process are re-parented to it (Linux >= 3.4), not to init."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies included), from /proc/<pid>/stat."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        found[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
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
    """Send `sig` to each process group in `groups` and to every descendant of this process (the
    groups reach members that left the tree; the walk reaches children that made their own groups).
    Returns how many targets there were."""
    count = 0
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
            count += 1
    for pid in descendants():
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

"""proctree.py on its own (standard library only: no DGL, no lab): each process gets a stop signal once,
and the guard the DistDGL launcher puts in front of each child stops that child's whole tree when the
launcher is SIGKILLed, escalating to SIGKILL for what ignores SIGTERM.

Why it matters: torch 2.2's torchrun turns each SIGTERM into an exception; a second one that lands while
it closes its workers leaves its log-tailing thread running, and torchrun then waits on that thread at
exit forever. With only the kernel's parent-death SIGTERM (the launcher is gone), nobody escalated."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.register_assert_rewrite("distdgl_fixtures")
from distdgl_fixtures import load_payload_module  # noqa: E402 (after register_assert_rewrite)

proctree = load_payload_module("proctree")

# Counts the SIGTERMs it gets (one line each in OUT), then exits on the first after a short delay, as
# torchrun does while closing its workers (when a second one would interrupt it).
COUNTER = textwrap.dedent(
    """
    import signal, sys, time
    out = open(sys.argv[1], "a")
    def on_term(signum, frame):
        out.write("TERM\\n"); out.flush()
        global stopping; stopping = time.monotonic()
    stopping = None
    signal.signal(signal.SIGTERM, on_term)
    open(sys.argv[2], "w").close()
    while stopping is None or time.monotonic() - stopping < 1.0:
        time.sleep(0.05)
    """
)

# A stuck child (ignores SIGTERM, like torchrun stuck at exit) with a grandchild in its own session that
# ignores SIGTERM too (torchrun's worker); it writes both pids, then waits.
STUCK = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
        start_new_session=True,
    )
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(f"{__import__('os').getpid()} {grandchild.pid}\\n")
    __import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
    """
)

# A stand-in launcher: starts the guarded child the way launch.py does (new session, output into a pipe
# that this launcher reads: broken once it is killed), prints the guard's pid, then waits to be SIGKILLed.
LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys, time
    sys.path.insert(0, sys.argv[1])
    import proctree
    guard = subprocess.Popen(
        proctree.guard_argv(sys.executable, 1.0, sys.argv[2:]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    print(guard.pid, flush=True)
    time.sleep(600)
    """
)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout:g} s")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_a_process_in_an_owned_group_gets_sigterm_once(tmp_path):
    """torchrun is both in the group the launcher owns and below the launcher: one SIGTERM, not two.
    The stop runs in a stand-in launcher, not here: it stops every descendant of its caller."""
    counts, ready = tmp_path / "terms", tmp_path / "ready"
    stopper = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        sys.path.insert(0, {str(Path(proctree.__file__).parent)!r})
        import proctree
        child = subprocess.Popen([sys.executable, "-c", {COUNTER!r}, {str(counts)!r}, {str(ready)!r}],
                                 start_new_session=True)
        while not os.path.exists({str(ready)!r}):
            time.sleep(0.05)
        print(proctree.stop_tree([child], grace=30))
        """
    )
    done = subprocess.run([sys.executable, "-c", stopper], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "0"  # it stopped on SIGTERM: no SIGKILL needed
    assert counts.read_text().splitlines() == ["TERM"]


def test_the_guard_passes_the_exit_status_and_the_launchers_signal_through(tmp_path):
    guarded = subprocess.run(proctree.guard_argv(sys.executable, 1.0, [sys.executable, "-c", "exit(3)"]), check=False)
    assert guarded.returncode == 3
    killed = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    guarded = subprocess.run(proctree.guard_argv(sys.executable, 1.0, [sys.executable, "-c", killed]), check=False)
    assert guarded.returncode == -signal.SIGKILL  # as if the launcher had started the child itself
    ready = tmp_path / "ready"
    counts = tmp_path / "terms"
    proc = subprocess.Popen(
        proctree.guard_argv(sys.executable, 1.0, [sys.executable, "-c", COUNTER, str(counts), str(ready)]),
        start_new_session=True,
    )
    wait_until(ready.exists, 30, "the guarded child did not start")
    os.killpg(proc.pid, signal.SIGTERM)  # what launch.py's stop does: the group gets it, the guard stays
    assert proc.wait(timeout=30) == 0  # the child handled SIGTERM and exited 0, and so does the guard
    assert counts.read_text().splitlines() == ["TERM"]


def test_a_killed_launchers_guard_stops_the_whole_tree_even_what_ignores_sigterm(tmp_path):
    """The launcher is SIGKILLed: its guard (parent-death signal) stops the child and the grandchild in its
    own session, with SIGKILL after the grace period since both ignore SIGTERM; the guard's output pipe is
    broken by then (writing to it must not stop the guard). With only a parent-death SIGTERM (util-linux
    setpriv, the old way) both stayed."""
    pids_file = tmp_path / "pids"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(Path(proctree.__file__).parent), sys.executable, "-c", STUCK,
         str(pids_file)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    guard = int(launcher.stdout.readline())
    wait_until(pids_file.exists, 30, "the stuck child did not start")
    child, grandchild = (int(pid) for pid in pids_file.read_text().split())
    try:
        launcher.kill()
        launcher.wait()
        # grace 1 s, then SIGKILL; generous bound for a loaded machine
        wait_until(lambda: not any(alive(pid) for pid in (guard, child, grandchild)), 60, "the tree is still there")
    finally:
        for pid in (guard, child, grandchild):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
